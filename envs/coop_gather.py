"""Cooperative resource gathering with hazards (agent death) and action masks.

``n_agents`` agents (``agent_0`` ... ``agent_{N-1}``) share a ``size`` x ``size`` grid holding
walls, ``n_hazards`` hazard cells and ``n_resources`` resources. Layouts are redrawn at every
reset from the env's generator: walls and hazards together never cut the safe cells
apart, so every resource can be reached without crossing a hazard. Agents do not block
each other.

Actions ``Discrete(5)``: 0 stay, 1 up, 2 down, 3 left, 4 right. A move into a wall or off the
grid is invalid. The valid actions are given every step (at reset too) as
``infos[agent]["action_mask"]``, ``np.int8 [5]`` with 1 = allowed; "stay" is always allowed
and moves onto hazards are allowed (they are legal, only deadly). An invalid action that is
taken anyway acts as "stay".

Observation ``Box(0, 1, (4 * v * v + 3,), float32)`` with ``v = view`` (odd, default 5): four
flattened ``[v, v]`` planes (row-major) of the window centred on the agent, in this order:
blocked (wall or outside the grid), resource, hazard, other living agents; then the agent's
``row / (size - 1)``, ``col / (size - 1)`` and the fraction of resources still on the grid.

Rewards: stepping on a resource collects it (``resource_reward``, default 1, split evenly
among agents that reach it at the same step). With ``shared_reward=True`` (default) every
agent that acted at the step receives the team's total collected at that step; with
``False`` each receives its own share. An agent that steps on a hazard dies: it receives
``-death_penalty`` (default 1) on top of its reward of that step, is terminated and removed
from ``env.agents`` while the others go on.

Termination: death (``is_success`` False), or the last resource collected: every living
agent is then terminated with ``is_success`` True. Truncation: after ``max_cycles`` steps
(default 40) the living agents are truncated (``is_success`` False). The episode ends when
no agent is left. Infos: ``{"action_mask": int8 [5], "is_success": bool}`` per agent.

``state()``: ``float32 [4 * size**2]``: the full-grid planes wall, hazard, resource, living agents.

``reset(options=...)`` may pin the scene: ``walls``, ``hazards``, ``resources`` (bool
``[size, size]``) and ``starts`` (int ``[n_agents, 2]`` ``(row, col)``). When any of the three
grids is given, all three must be (keeping the safe cells connected is then the
caller's job); starts must be on empty cells. Anything left out is drawn at random.

``render()`` (``render_mode="rgb_array"``) returns ``uint8 [size * 16, size * 16, 3]``: walls
dark, hazards red, resources gold, agents as squares in their colour.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np

from . import _common, _grid
from ._common import ParallelReset, ParallelStep

#: ``[5, 2]`` ``(d_row, d_col)`` of each action: stay, up, down, left, right.
ACTION_STEPS = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
N_ACTIONS = len(ACTION_STEPS)
RENDER_CELL_PIXELS = _grid.RENDER_CELL_PIXELS
AGENT_COLOURS = ((40, 110, 220), (40, 160, 70), (150, 70, 200), (20, 170, 170), (230, 120, 20), (120, 80, 40))
MAX_AGENTS = len(AGENT_COLOURS)


def action_mask(padded_walls: np.ndarray, cell: np.ndarray, radius: int) -> np.ndarray:
    """Valid actions of an agent at ``cell``: ``int8 [5]``, 1 where the move stays on the grid and off walls.

    Args:
        padded_walls: ``[size + 2 * radius] * 2`` bool walls, padded with ``True`` (outside = wall).
        cell: ``(row, col)`` of the agent in unpadded coordinates.
        radius: padding width of ``padded_walls`` (>= 1).
    """
    r, c = int(cell[0]) + radius, int(cell[1]) + radius
    return np.array(
        [
            1,
            not padded_walls[r - 1, c],
            not padded_walls[r + 1, c],
            not padded_walls[r, c - 1],
            not padded_walls[r, c + 1],
        ],
        dtype=np.int8,
    )


class CoopGatherEnv(_common.IndexedParallelEnv):
    """Cooperative gathering with hazards; see the module docstring for spaces and rules.

    Args:
        n_agents: number of agents, 1 to 6.
        size: side of the square grid, in cells (>= 3).
        n_resources: resources placed at reset (>= 1).
        n_hazards: hazard cells placed at reset (>= 0).
        wall_density: fraction of cells made walls, in ``[0, 0.5]``.
        view: side of the observation window, in cells (odd, >= 3).
        max_cycles: steps before truncation (>= 1).
        shared_reward: every agent gets the team's collection reward (else only its own share).
        resource_reward: reward per collected resource.
        death_penalty: reward subtracted from an agent that steps on a hazard (>= 0).
        render_mode: ``None`` or ``"rgb_array"``.
    """

    metadata: ClassVar[dict[str, Any]] = _common.parallel_metadata("coop_gather_v0", render_fps=5)

    def __init__(
        self,
        n_agents: int = 3,
        size: int = 7,
        n_resources: int = 6,
        n_hazards: int = 4,
        wall_density: float = 0.1,
        view: int = 5,
        max_cycles: int = 40,
        shared_reward: bool = True,
        resource_reward: float = 1.0,
        death_penalty: float = 1.0,
        render_mode: str | None = None,
    ) -> None:
        _common.check_n_agents(n_agents, MAX_AGENTS)
        if size < 3:
            raise ValueError(f"size={size} must be >= 3")
        if n_resources < 1 or n_hazards < 0:
            raise ValueError(f"need n_resources >= 1 and n_hazards >= 0, got {n_resources} and {n_hazards}")
        _grid.check_wall_density(wall_density)
        _grid.check_view(view)
        if max_cycles < 1:
            raise ValueError(f"max_cycles={max_cycles} must be >= 1")
        if death_penalty < 0:
            raise ValueError(f"death_penalty={death_penalty} is a magnitude and must be >= 0")
        _common.check_render_mode(render_mode)
        self.n_walls = round(wall_density * size * size)
        if self.n_walls + n_hazards + n_agents + n_resources > size * size:
            raise ValueError(
                f"a {size}x{size} grid cannot hold {self.n_walls} walls, {n_hazards} hazards, "
                f"{n_agents} agents and {n_resources} resources on distinct cells; "
                "raise size or lower the counts"
            )
        self.n_agents = n_agents
        self.size = size
        self.n_resources = n_resources
        self.n_hazards = n_hazards
        self.wall_density = wall_density
        self.view = view
        self.max_cycles = max_cycles
        self.shared_reward = shared_reward
        self.resource_reward = float(resource_reward)
        self.death_penalty = float(death_penalty)
        self.render_mode = render_mode

        obs_space = gymnasium.spaces.Box(0.0, 1.0, (4 * view * view + 3,), np.float32)
        super().__init__(
            n_agents, [obs_space] * n_agents, [gymnasium.spaces.Discrete(N_ACTIONS) for _ in range(n_agents)]
        )
        self.state_space = gymnasium.spaces.Box(0.0, 1.0, (4 * size * size,), np.float32)

        self._radius = view // 2
        padded_side = size + 2 * self._radius
        self._padded_walls = np.ones((padded_side, padded_side), dtype=bool)
        self._padded_hazards = np.zeros((padded_side, padded_side), dtype=bool)
        self._padded_resources = np.zeros((padded_side, padded_side), dtype=bool)
        self._occupancy = np.zeros((padded_side, padded_side), dtype=np.int16)
        self._pos = np.zeros((n_agents, 2), dtype=np.int64)
        self._active = np.zeros(n_agents, dtype=bool)
        self._cycles = 0

    def _interior(self, padded: np.ndarray) -> np.ndarray:
        """The ``[size, size]`` view of a padded grid."""
        r = self._radius
        return padded[r : r + self.size, r : r + self.size]

    # ------------------------------------------------------------------ episode
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> ParallelReset[np.ndarray]:
        """Start an episode; ``seed`` reseeds the env's generator, ``options`` may pin the scene."""
        self._reseed(seed)
        options = options or {}
        rng = self.np_random
        shape = (self.size, self.size)
        grids = [options.get(k) for k in ("walls", "hazards", "resources")]
        if all(g is None for g in grids):
            blocked = _grid.random_connected_blocks(self.size, self.n_walls + self.n_hazards, rng)
            hazards = np.zeros(shape, dtype=bool)
            hazard_cells = _grid.sample_cells(blocked, self.n_hazards, rng)
            hazards[hazard_cells[:, 0], hazard_cells[:, 1]] = True
            walls = blocked & ~hazards
            resources = np.zeros(shape, dtype=bool)
            resource_cells = _grid.sample_cells(~blocked, self.n_resources, rng)
            resources[resource_cells[:, 0], resource_cells[:, 1]] = True
        elif any(g is None for g in grids):
            raise ValueError("options must give all of 'walls', 'hazards' and 'resources', or none of them")
        else:
            walls, hazards, resources = (np.asarray(g, dtype=bool) for g in grids)
            for name, g in (("walls", walls), ("hazards", hazards), ("resources", resources)):
                if g.shape != shape:
                    raise ValueError(f"options[{name!r}] has shape {g.shape}, expected {shape}")
            if np.any(walls & hazards) or np.any(resources & (walls | hazards)) or not resources.any():
                raise ValueError(
                    "options: walls, hazards and resources must not overlap and one resource is needed"
                )
        starts = options.get("starts")
        if starts is None:
            starts = _grid.sample_cells(~(walls | hazards | resources), self.n_agents, rng)
        starts = np.asarray(starts, dtype=np.int64)
        if starts.shape != (self.n_agents, 2):
            raise ValueError(f"options['starts'] has shape {starts.shape}, expected {(self.n_agents, 2)}")
        occupied = walls | hazards | resources
        if np.any((starts < 0) | (starts >= self.size)) or np.any(occupied[starts[:, 0], starts[:, 1]]):
            raise ValueError(
                "options['starts'] puts an agent off the grid or on a wall, hazard or resource: "
                f"{starts.tolist()}"
            )

        self._padded_walls[:] = True
        self._interior(self._padded_walls)[:] = walls
        self._padded_hazards[:] = False
        self._interior(self._padded_hazards)[:] = hazards
        self._padded_resources[:] = False
        self._interior(self._padded_resources)[:] = resources
        self._pos = starts.copy()
        self._active = np.ones(self.n_agents, dtype=bool)
        self._cycles = 0
        self._update_occupancy()
        self.agents = list(self.possible_agents)
        obs = {a: self._observe(i) for i, a in enumerate(self.possible_agents)}
        infos = {
            a: {
                "action_mask": action_mask(self._padded_walls, self._pos[i], self._radius),
                "is_success": False,
            }
            for i, a in enumerate(self.possible_agents)
        }
        return obs, infos

    def _update_occupancy(self) -> None:
        """Recount living agents per cell (padded coordinates)."""
        self._occupancy[:] = 0
        live = self._pos[self._active] + self._radius
        np.add.at(self._occupancy, (live[:, 0], live[:, 1]), 1)

    def step(self, actions: dict[str, int]) -> ParallelStep[np.ndarray]:
        """Apply one action per agent in ``self.agents``; see the module docstring for the rules."""
        self._require_running()
        r = self._radius
        acting = np.flatnonzero(self._active)
        for i, name, raw_action in self._live_actions(actions, acting):
            action = _common.discrete_action(raw_action, name, N_ACTIONS)
            target = self._pos[i] + ACTION_STEPS[action]
            if not self._padded_walls[target[0] + r, target[1] + r]:
                self._pos[i] = target

        died = {int(i): bool(self._padded_hazards[self._pos[i, 0] + r, self._pos[i, 1] + r]) for i in acting}
        # group survivors standing on a resource by cell, then collect each such resource once
        takers: dict[tuple[int, int], list[int]] = {}
        for i in acting:
            cell = (int(self._pos[i, 0]) + r, int(self._pos[i, 1]) + r)
            if not died[int(i)] and self._padded_resources[cell]:
                takers.setdefault(cell, []).append(int(i))
        share = dict.fromkeys(died, 0.0)
        for cell, idx in takers.items():
            self._padded_resources[cell] = False
            for i in idx:
                share[i] += self.resource_reward / len(idx)
        team = self.resource_reward * len(takers)
        all_collected = not self._padded_resources.any()

        self._cycles += 1
        truncate = self._cycles >= self.max_cycles
        for i, dead in died.items():
            if dead or all_collected or truncate:
                self._active[i] = False
        self._update_occupancy()

        obs, rewards, terminated, truncated, infos = {}, {}, {}, {}, {}
        for i in acting:
            name = self.possible_agents[i]
            dead = died[int(i)]
            reward = team if self.shared_reward else share[int(i)]
            obs[name] = self._observe(int(i))
            rewards[name] = float(reward - self.death_penalty * dead)
            terminated[name] = dead or all_collected
            truncated[name] = truncate and not (dead or all_collected)
            infos[name] = {
                "action_mask": action_mask(self._padded_walls, self._pos[i], r),
                "is_success": all_collected and not dead,
            }
        self.agents = self._agents_where(self._active)
        return obs, rewards, terminated, truncated, infos

    # ------------------------------------------------------------- observations
    def _observe(self, i: int) -> np.ndarray:
        """Observation ``float32 [4 * view**2 + 3]`` of agent ``i``."""
        v = self.view
        cell = self._pos[i]
        # a living agent counts itself in the occupancy
        others = _grid.others_in_view(self._occupancy, cell, v, counted=bool(self._active[i]))
        out = np.empty(4 * v * v + 3, dtype=np.float32)
        n = v * v
        out[:n] = _grid.window(self._padded_walls, cell, v).ravel()
        out[n : 2 * n] = _grid.window(self._padded_resources, cell, v).ravel()
        out[2 * n : 3 * n] = _grid.window(self._padded_hazards, cell, v).ravel()
        out[3 * n : 4 * n] = others.ravel()
        out[4 * n : 4 * n + 2] = cell / (self.size - 1)
        out[-1] = self._interior(self._padded_resources).sum() / self.n_resources
        return out

    def state(self) -> np.ndarray:
        """Global state ``float32 [4 * size**2]``: wall, hazard, resource and living-agent planes."""
        planes = [self._padded_walls, self._padded_hazards, self._padded_resources, self._occupancy > 0]
        return np.concatenate([self._interior(p).ravel() for p in planes]).astype(np.float32)

    # ---------------------------------------------------------------- rendering
    def render(self) -> np.ndarray | None:
        """``uint8 [size * 16, size * 16, 3]`` picture of the whole grid; ``None`` without render mode."""
        if self.render_mode is None:
            return None
        k = RENDER_CELL_PIXELS
        colours = _grid.floor_colours(self._interior(self._padded_walls))
        colours[self._interior(self._padded_hazards)] = (210, 40, 40)
        image = _grid.upscale(colours, k)
        for cell in np.argwhere(self._interior(self._padded_resources)):
            _grid.paint_marker(image, cell, (230, 190, 30), k, margin=5)
        for i in np.flatnonzero(self._active):
            _grid.paint_marker(image, self._pos[i], AGENT_COLOURS[i], k, margin=2)
        return image


# The env id ``envs.coop_gather``: ``parallel_env(**kwargs)`` builds a :class:`CoopGatherEnv`.
parallel_env = CoopGatherEnv
