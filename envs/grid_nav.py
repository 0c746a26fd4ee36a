"""Multi-agent grid navigation with walls, partial observability and a choice of reference frame.

``n_agents`` agents (``agent_0`` ... ``agent_{N-1}``) live on a ``size`` x ``size`` grid with
random interior walls (``round(wall_density * size**2)`` cells, redrawn at every reset
from the env's generator, always leaving the free cells 4-connected; the outside of the
grid counts as wall). Each agent has its own goal cell and must reach it. Agents do not
block each other: several may share a cell.

Reference frame (``frame``), after the grid-world example of "Frame of reference" in the
post "Reinforcement Learning Implementation Tips and Tricks": both frames describe the same task (same layouts,
starts, goals and headings for the same seed, same rewards and time limit); only the
coordinates of observations and actions change.

* ``"world"``: the observation window keeps the world's axes (up is row ``-1``).
  Actions ``Discrete(4)``: 0 up, 1 down, 2 left, 3 right. The heading of an agent is the
  direction of its last move attempt (it does not enter the observation).
* ``"egocentric"``: the window is rotated so that the agent's heading points up.
  Actions ``Discrete(4)``: 0 forward (one cell along the heading), 1 rotate clockwise,
  2 rotate counter-clockwise (rotations do not move the agent), 3 backward (one cell
  against the heading, heading kept).

A move into a wall or off the grid leaves the agent where it is (the step still counts).

Observations (``obs_mode``), with ``v = view`` (odd, default 5) and ``r = v // 2``; the window
is centred on the agent and cells outside the grid read as wall:

* ``"vector"``: ``Box(-1, 1, (3 * v * v + 2,), float32)``: three flattened one-hot planes
  ``[v, v]`` (row-major) in this order: wall, own goal, other agents still on the grid;
  then the goal offset ``(d_row, d_col) / (size - 1)`` in the same frame as the window
  (for ``"egocentric"``, ``d_row < 0`` means the goal lies ahead). The offset keeps the
  task solvable when the goal is out of view.
* ``"image"``: ``Box(0, 255, (v * k, v * k, 3), uint8)`` with ``k = cell_pixels`` (default 1)
  pixels per cell. Channel 0 (red) is 255 on walls; channel 1 (green) is 255 on the own
  goal when it is in view, otherwise 96 on the border cell towards the goal (the offset
  clipped to ``[-r, r]`` per axis); channel 2 (blue) is 255 on cells holding other agents.
  The agent itself is always the centre cell and is not drawn.

Rewards (per agent, per step): ``+1`` on the step that puts the agent on its goal, otherwise
``-step_penalty`` (default 0.01) and, when it ends the step on a cell shared with another
agent still on the grid, an extra ``-collision_penalty`` (default 0).

Termination: an agent on its goal is terminated (``is_success`` True) and removed from
``env.agents`` (agent death in PettingZoo terms); the others go on. Truncation: after
``max_cycles`` steps (default ``4 * size``) every remaining agent is truncated
(``is_success`` False). Infos: ``{"is_success": bool}`` for every agent at every step.

``state()``: ``float32 [size**2 + 9 * n_agents]`` in ``[0, 1]``: the wall grid, then per
agent ``[on grid, row, col, goal row, goal col]`` (coordinates divided by ``size - 1``)
and its heading one-hot ``[4]``.

``reset(options=...)`` may pin parts of the scene: ``walls`` (bool ``[size, size]``),
``starts`` and ``goals`` (int ``[n_agents, 2]`` as ``(row, col)``), ``headings`` (int
``[n_agents]``, 0 up, 1 right, 2 down, 3 left). Anything left out is drawn at random;
pinned walls are used as given (keeping the free cells connected is then the caller's job).

``render()`` (``render_mode="rgb_array"``) returns ``uint8 [size * 16, size * 16, 3]``:
walls dark, goals as pale squares in the agent's colour, agents as squares in their
colour with a dark pip on the side of their heading.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np

from . import _common, _grid
from ._common import ParallelReset, ParallelStep

FRAMES = ("world", "egocentric")
OBS_MODES = ("vector", "image")
#: heading reached by each world-frame action (0 up, 1 down, 2 left, 3 right).
WORLD_ACTION_HEADING = np.array([0, 2, 3, 1], dtype=np.int64)
#: egocentric actions.
FORWARD, ROTATE_CW, ROTATE_CCW, BACKWARD = 0, 1, 2, 3
#: green value of the out-of-view goal marker in image observations.
GOAL_MARKER = 96
RENDER_CELL_PIXELS = _grid.RENDER_CELL_PIXELS
AGENT_COLOURS = (
    (230, 120, 20),
    (40, 110, 220),
    (200, 40, 40),
    (40, 160, 70),
    (150, 70, 200),
    (20, 170, 170),
    (200, 170, 20),
    (120, 80, 40),
)
MAX_AGENTS = len(AGENT_COLOURS)


class GridNavEnv(_common.IndexedParallelEnv):
    """Grid navigation to per-agent goals; see the module docstring for spaces and rules.

    Args:
        n_agents: number of agents, 1 to 8.
        size: side of the square grid, in cells (>= 3).
        view: side of the observation window, in cells (odd, >= 3).
        wall_density: fraction of the grid's cells made walls, in ``[0, 0.5]``.
        frame: ``"world"`` or ``"egocentric"`` axes for observations and actions.
        obs_mode: ``"vector"`` or ``"image"`` observations.
        cell_pixels: pixels per cell of image observations.
        max_cycles: steps before truncation; ``None`` means ``4 * size``.
        step_penalty: reward subtracted at every step that does not reach the goal (>= 0).
        collision_penalty: reward subtracted when an agent ends a step sharing a cell (>= 0).
        render_mode: ``None`` or ``"rgb_array"``.
    """

    metadata: ClassVar[dict[str, Any]] = _common.parallel_metadata("grid_nav_v0", render_fps=5)

    def __init__(
        self,
        n_agents: int = 2,
        size: int = 9,
        view: int = 5,
        wall_density: float = 0.15,
        frame: str = "world",
        obs_mode: str = "vector",
        cell_pixels: int = 1,
        max_cycles: int | None = None,
        step_penalty: float = 0.01,
        collision_penalty: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        _common.check_n_agents(n_agents, MAX_AGENTS)
        if size < 3:
            raise ValueError(f"size={size} must be >= 3")
        _grid.check_view(view)
        _grid.check_wall_density(wall_density)
        if frame not in FRAMES:
            raise ValueError(f"frame={frame!r} must be one of {FRAMES}")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode={obs_mode!r} must be one of {OBS_MODES}")
        if cell_pixels < 1:
            raise ValueError(f"cell_pixels={cell_pixels} must be >= 1")
        if max_cycles is not None and max_cycles < 1:
            raise ValueError(f"max_cycles={max_cycles} must be >= 1 (or None for 4 * size)")
        if step_penalty < 0 or collision_penalty < 0:
            raise ValueError("step_penalty and collision_penalty are magnitudes and must be >= 0")
        _common.check_render_mode(render_mode)
        self.n_walls = round(wall_density * size * size)
        if size * size - self.n_walls < 2 * n_agents:
            raise ValueError(
                f"a {size}x{size} grid with {self.n_walls} walls cannot hold {n_agents} starts and goals; "
                "lower wall_density or n_agents, or raise size"
            )
        self.n_agents = n_agents
        self.size = size
        self.view = view
        self.wall_density = wall_density
        self.frame = frame
        self.obs_mode = obs_mode
        self.cell_pixels = cell_pixels
        self.max_cycles = 4 * size if max_cycles is None else max_cycles
        self.step_penalty = float(step_penalty)
        self.collision_penalty = float(collision_penalty)
        self.render_mode = render_mode

        if obs_mode == "vector":
            obs_space: gymnasium.spaces.Box = gymnasium.spaces.Box(
                -1.0, 1.0, (3 * view * view + 2,), np.float32
            )
        else:
            side = view * cell_pixels
            obs_space = gymnasium.spaces.Box(0, 255, (side, side, 3), np.uint8)
        super().__init__(
            n_agents, [obs_space] * n_agents, [gymnasium.spaces.Discrete(4) for _ in range(n_agents)]
        )
        self.state_space = gymnasium.spaces.Box(0.0, 1.0, (size * size + 9 * n_agents,), np.float32)

        self._radius = view // 2
        self._walls = np.zeros((size, size), dtype=bool)
        self._padded_walls = _grid.pad(self._walls, self._radius, True)
        self._occupancy = np.zeros((size + 2 * self._radius,) * 2, dtype=np.int16)
        self._pos = np.zeros((n_agents, 2), dtype=np.int64)
        self._goal = np.zeros((n_agents, 2), dtype=np.int64)
        self._heading = np.zeros(n_agents, dtype=np.int64)
        self._active = np.zeros(n_agents, dtype=bool)
        self._cycles = 0

    # ------------------------------------------------------------------ episode
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> ParallelReset[np.ndarray]:
        """Start an episode; ``seed`` reseeds the env's generator, ``options`` may pin the scene."""
        self._reseed(seed)
        options = options or {}
        rng = self.np_random
        n = self.n_agents

        walls = options.get("walls")
        if walls is None:
            walls = _grid.random_connected_blocks(self.size, self.n_walls, rng)
        else:
            walls = np.asarray(walls, dtype=bool)
            if walls.shape != (self.size, self.size):
                raise ValueError(
                    f"options['walls'] has shape {walls.shape}, expected {(self.size, self.size)}"
                )
        starts, goals = self._draw_cells(walls, options.get("starts"), options.get("goals"), rng)
        headings = options.get("headings")
        if headings is None:
            headings = rng.integers(0, 4, size=n)
        headings = np.asarray(headings, dtype=np.int64)
        if headings.shape != (n,) or np.any((headings < 0) | (headings > 3)):
            raise ValueError(f"options['headings'] must be {n} ints in 0..3, got {headings!r}")
        if np.any(np.all(starts == goals, axis=1)):
            raise ValueError("an agent starts on its own goal; give every agent a goal apart from its start")

        self._walls = walls.copy()
        self._padded_walls = _grid.pad(self._walls, self._radius, True)
        self._pos = starts.copy()
        self._goal = goals.copy()
        self._heading = headings.copy()
        self._active = np.ones(n, dtype=bool)
        self._occupancy[:] = 0
        for i in range(n):
            self._occupancy[self._pos[i, 0] + self._radius, self._pos[i, 1] + self._radius] += 1
        self._cycles = 0
        self.agents = list(self.possible_agents)
        obs = {a: self._observe(i) for i, a in enumerate(self.possible_agents)}
        infos = {a: {"is_success": False} for a in self.possible_agents}
        return obs, infos

    def _draw_cells(
        self, walls: np.ndarray, starts: Any, goals: Any, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Starts and goals ``[n_agents, 2]``: the given ones (checked) or distinct random free cells."""
        n = self.n_agents
        free = ~walls
        if starts is None and goals is None:
            cells = _grid.sample_cells(free, 2 * n, rng)
            return cells[:n], cells[n:]
        given = {}
        for key, cells in (("starts", starts), ("goals", goals)):
            if cells is None:
                continue
            cells = np.asarray(cells, dtype=np.int64)
            if cells.shape != (n, 2):
                raise ValueError(f"options[{key!r}] has shape {cells.shape}, expected {(n, 2)}")
            if np.any((cells < 0) | (cells >= self.size)) or np.any(walls[cells[:, 0], cells[:, 1]]):
                raise ValueError(f"options[{key!r}] puts a cell off the grid or on a wall: {cells.tolist()}")
            given[key] = cells
        for key in ("starts", "goals"):
            if key not in given:
                mask = free.copy()
                other = given["goals" if key == "starts" else "starts"]
                mask[other[:, 0], other[:, 1]] = False
                given[key] = _grid.sample_cells(mask, n, rng)
        return given["starts"], given["goals"]

    def step(self, actions: dict[str, int]) -> ParallelStep[np.ndarray]:
        """Move every agent in ``self.agents`` by its action; see the module docstring for the rules."""
        self._require_running()
        acting = [i for i, a in enumerate(self.possible_agents) if self._active[i]]
        radius = self._radius  # padded grids are shifted by the window radius
        for i, name, raw_action in self._live_actions(actions, acting):
            action = _common.discrete_action(raw_action, name, 4)
            if self.frame == "world":
                self._heading[i] = WORLD_ACTION_HEADING[action]
                step_dir = self._heading[i]
            elif action == ROTATE_CW:
                self._heading[i] = (self._heading[i] + 1) % 4
                continue
            elif action == ROTATE_CCW:
                self._heading[i] = (self._heading[i] + 3) % 4
                continue
            else:
                step_dir = self._heading[i] if action == FORWARD else (self._heading[i] + 2) % 4
            target = self._pos[i] + _grid.HEADING_STEPS[step_dir]
            if not self._padded_walls[target[0] + radius, target[1] + radius]:
                self._occupancy[self._pos[i, 0] + radius, self._pos[i, 1] + radius] -= 1
                self._pos[i] = target
                self._occupancy[target[0] + radius, target[1] + radius] += 1

        self._cycles += 1
        truncate = self._cycles >= self.max_cycles
        reached = {i: bool(np.array_equal(self._pos[i], self._goal[i])) for i in acting}
        for i in acting:
            if reached[i]:
                self._active[i] = False
                self._occupancy[self._pos[i, 0] + radius, self._pos[i, 1] + radius] -= 1

        obs, rewards, terminated, truncated, infos = {}, {}, {}, {}, {}
        for i in acting:
            name = self.possible_agents[i]
            if reached[i]:
                reward = 1.0
            else:
                reward = -self.step_penalty
                if self._occupancy[self._pos[i, 0] + radius, self._pos[i, 1] + radius] > 1:
                    reward -= self.collision_penalty
            obs[name] = self._observe(i)
            rewards[name] = reward
            terminated[name] = reached[i]
            truncated[name] = truncate and not reached[i]
            infos[name] = {"is_success": reached[i]}
        if truncate:
            self._active[:] = False
        self.agents = self._agents_where(self._active)
        return obs, rewards, terminated, truncated, infos

    # ------------------------------------------------------------- observations
    def _observe(self, i: int) -> np.ndarray:
        """Observation of agent ``i`` in the configured frame and mode."""
        v, r = self.view, self._radius
        walls = _grid.window(self._padded_walls, self._pos[i], v)
        # an agent still on the grid counts itself in the occupancy
        others = _grid.others_in_view(self._occupancy, self._pos[i], v, counted=bool(self._active[i]))
        offset = self._goal[i] - self._pos[i]
        if self.frame == "egocentric":
            turns = int(self._heading[i])
            walls = np.rot90(walls, turns)
            others = np.rot90(others, turns)
            offset = _grid.rotate_offset(offset, turns)
        in_view = bool(np.all(np.abs(offset) <= r))
        if self.obs_mode == "vector":
            out = np.zeros(3 * v * v + 2, dtype=np.float32)
            out[: v * v] = walls.ravel()
            if in_view:
                out[v * v + (offset[0] + r) * v + (offset[1] + r)] = 1.0
            out[2 * v * v : 3 * v * v] = others.ravel()
            out[-2:] = offset / (self.size - 1)
            return out
        picture = np.zeros((v, v, 3), dtype=np.uint8)
        picture[..., 0] = walls * np.uint8(255)
        marker = np.clip(offset, -r, r) + r
        picture[marker[0], marker[1], 1] = 255 if in_view else GOAL_MARKER
        picture[..., 2] = others * np.uint8(255)
        return _grid.upscale(picture, self.cell_pixels)

    def state(self) -> np.ndarray:
        """Global state ``float32 [size**2 + 9 * n_agents]`` (layout in the module docstring)."""
        scale = 1.0 / (self.size - 1)
        per_agent = np.zeros((self.n_agents, 9), dtype=np.float32)
        per_agent[:, 0] = self._active
        per_agent[:, 1:3] = self._pos * scale
        per_agent[:, 3:5] = self._goal * scale
        per_agent[np.arange(self.n_agents), 5 + self._heading] = 1.0
        return np.concatenate([self._walls.ravel().astype(np.float32), per_agent.ravel()])

    # ---------------------------------------------------------------- rendering
    def render(self) -> np.ndarray | None:
        """``uint8 [size * 16, size * 16, 3]`` picture of the whole grid; ``None`` without render mode."""
        if self.render_mode is None:
            return None
        k = RENDER_CELL_PIXELS
        colours = _grid.floor_colours(self._walls)
        for i in range(self.n_agents):
            if self._active[i]:
                colours[self._goal[i, 0], self._goal[i, 1]] = _common.pale(AGENT_COLOURS[i])
        image = _grid.upscale(colours, k)
        pip = np.array([k // 2 - 2, k // 2 - 2])
        for i in range(self.n_agents):
            if not self._active[i]:
                continue
            _grid.paint_marker(image, self._pos[i], AGENT_COLOURS[i], k, margin=3)
            centre = self._pos[i] * k + pip + _grid.HEADING_STEPS[self._heading[i]] * (k // 2 - 5)
            image[centre[0] : centre[0] + 4, centre[1] : centre[1] + 4] = (20, 20, 20)
        return image


# The env id ``envs.grid_nav``: ``parallel_env(**kwargs)`` builds a :class:`GridNavEnv`.
parallel_env = GridNavEnv
