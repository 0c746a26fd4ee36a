"""Multi-agent goal-conditioned point masses in ``[-1, 1]^2`` (one goal per agent).

The multi-agent version of :mod:`envs.goal_reach`: ``n_agents`` points (``agent_0`` ...),
each with its own goal, drawn as there (uniform starts; goals uniform and farther than
``distance_threshold`` from the agent's start). Agents move independently and do not
collide; each sees where the others are.

Spaces (per agent):

* observation ``Dict(observation, achieved_goal, desired_goal)``: ``observation`` is
  ``Box(-1, 1, (2 * n_agents,), float32)``, the agent's own position followed by the other
  agents' positions in agent order; ``achieved_goal`` and ``desired_goal`` are
  ``Box(-1, 1, (2,), float32)``, the agent's position and its goal.
* action ``Box(-1, 1, (2,), float32)``: velocity as a fraction of ``max_speed`` (default 0.1
  per step); clipped to the box, positions clipped to the square.

Reward per agent after each step: ``0`` within ``distance_threshold`` (default 0.05) of its
own goal, else ``-1``, from the module-level :func:`compute_reward` (that of
:mod:`envs.goal_reach`, vectorized over any leading axes, e.g. ``[B, A, 2]``), also available
as :meth:`MultiGoalEnv.compute_reward`.

Termination: none by default; with ``terminate_on_success=True`` an agent is terminated
and removed from ``env.agents`` on the step that reaches its goal (it then stays where it
is and is still seen by the others). Truncation: after ``max_cycles`` steps (default 50)
every remaining agent is truncated. Infos: ``{"is_success": bool}`` per agent and step.

``render()`` (``render_mode="rgb_array"``) returns ``uint8 [128, 128, 3]``: each goal's
success disc in a pale agent colour and each point in its full colour.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np

from . import _common
from ._common import ParallelReset, ParallelStep
from .goal_reach import DISTANCE_THRESHOLD, check_point_args, compute_reward, move, render_square

AGENT_COLOURS = ((40, 90, 220), (220, 100, 30), (150, 60, 190), (30, 160, 160), (200, 40, 40), (110, 110, 30))


class MultiGoalEnv(_common.IndexedParallelEnv):
    """Point masses each steering to its own goal; see the module docstring for spaces and rules.

    Args:
        n_agents: number of agents, 1 to 6.
        max_cycles: steps before truncation (>= 1).
        distance_threshold: success radius, in position units (> 0).
        max_speed: distance moved per step at full action, in position units (> 0).
        terminate_on_success: remove an agent once it reaches its goal (default: never terminate).
        render_mode: ``None`` or ``"rgb_array"``.
    """

    metadata: ClassVar[dict[str, Any]] = _common.parallel_metadata("multi_goal_v0", render_fps=10)

    def __init__(
        self,
        n_agents: int = 2,
        max_cycles: int = 50,
        distance_threshold: float = DISTANCE_THRESHOLD,
        max_speed: float = 0.1,
        terminate_on_success: bool = False,
        render_mode: str | None = None,
    ) -> None:
        _common.check_n_agents(n_agents, len(AGENT_COLOURS))
        if max_cycles < 1:
            raise ValueError(f"max_cycles={max_cycles} must be >= 1")
        check_point_args(distance_threshold, max_speed)
        _common.check_render_mode(render_mode)
        self.n_agents = n_agents
        self.max_cycles = max_cycles
        self.distance_threshold = float(distance_threshold)
        self.max_speed = float(max_speed)
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode

        point = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        super().__init__(
            n_agents,
            [
                _common.goal_space(gymnasium.spaces.Box(-1.0, 1.0, (2 * n_agents,), np.float32), point)
                for _ in range(n_agents)
            ],
            [gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32) for _ in range(n_agents)],
        )
        # row order of positions in agent i's observation: itself first, then the others
        self._orders = [np.r_[i, np.delete(np.arange(n_agents), i)] for i in range(n_agents)]
        self._pos = np.zeros((n_agents, 2), dtype=np.float32)
        self._goal = np.zeros((n_agents, 2), dtype=np.float32)
        self._active = np.zeros(n_agents, dtype=bool)
        self._cycles = 0

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """Reward ``[..., 2] x [..., 2] -> float32 [...]`` with this env's threshold; ``info`` is unused."""
        return compute_reward(achieved_goal, desired_goal, info, self.distance_threshold)

    def compute_terminated(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any
    ) -> np.ndarray:
        """Termination flags ``bool [...]``: success when ``terminate_on_success``, else all ``False``."""
        reward = self.compute_reward(achieved_goal, desired_goal, info)
        return _common.success_terminated(reward, self.terminate_on_success)

    def _observe(self, i: int) -> dict[str, np.ndarray]:
        return _common.goal_obs(self._pos[self._orders[i]].ravel(), self._pos[i], self._goal[i])

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> ParallelReset[dict[str, np.ndarray]]:
        """Draw starts and goals; ``seed`` reseeds the env's generator (``options`` is not used)."""
        self._reseed(seed)
        self._pos = self.np_random.uniform(-1.0, 1.0, (self.n_agents, 2)).astype(np.float32)
        self._goal = self._pos.copy()
        near = np.ones(self.n_agents, dtype=bool)
        while near.any():
            self._goal[near] = self.np_random.uniform(-1.0, 1.0, (int(near.sum()), 2)).astype(np.float32)
            near = np.linalg.norm(self._goal - self._pos, axis=1) <= self.distance_threshold
        self._active = np.ones(self.n_agents, dtype=bool)
        self._cycles = 0
        self.agents = list(self.possible_agents)
        obs = {a: self._observe(i) for i, a in enumerate(self.possible_agents)}
        return obs, {a: {"is_success": False} for a in self.possible_agents}

    def step(self, actions: dict[str, np.ndarray]) -> ParallelStep[dict[str, np.ndarray]]:
        """Move every agent in ``self.agents``; rewards and flags as in the module docstring."""
        self._require_running()
        acting = np.flatnonzero(self._active)
        velocity = np.zeros((self.n_agents, 2), dtype=np.float32)  # agents not acting stay put
        for i, _, action in self._live_actions(actions, acting):
            velocity[i] = np.asarray(action, dtype=np.float32).reshape(2)
        self._pos = move(self._pos, velocity, self.max_speed)
        self._cycles += 1
        success = self.compute_reward(self._pos, self._goal, None) == 0.0

        obs, rewards, terminated, truncated, infos = {}, {}, {}, {}, {}
        for i in acting:
            name = self.possible_agents[i]
            terminated[name], truncated[name] = _common.end_flags(
                bool(success[i]), self._cycles, self.max_cycles, self.terminate_on_success
            )
            obs[name] = self._observe(int(i))
            rewards[name] = 0.0 if success[i] else -1.0
            infos[name] = {"is_success": bool(success[i])}
            if terminated[name] or truncated[name]:
                self._active[i] = False
        self.agents = self._agents_where(self._active)
        return obs, rewards, terminated, truncated, infos

    def render(self) -> np.ndarray | None:
        """``uint8 [128, 128, 3]`` picture of the square, or ``None`` without a render mode."""
        if self.render_mode is None:
            return None
        colours = AGENT_COLOURS[: self.n_agents]
        return render_square(
            self._goal, self._pos, self.distance_threshold, [_common.pale(c) for c in colours], colours
        )


# The env id ``envs.multi_goal``: ``parallel_env(**kwargs)`` builds a :class:`MultiGoalEnv`.
parallel_env = MultiGoalEnv
