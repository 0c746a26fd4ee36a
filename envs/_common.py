"""Plumbing shared by the environments of this package.

* argument checks whose rule (and error message) is the same in several envs;
* :class:`IndexedParallelEnv`, the PettingZoo side of the parallel envs: agents named
  ``agent_0 ... agent_{N-1}`` whose index ``i`` addresses every per-agent array, one
  space per agent, a seeded ``np_random`` generator, live-action lookup;
* goal-env helpers (``Dict(observation, achieved_goal, desired_goal)`` spaces and
  observations, success-based termination, the time limit);
* render colours.

Nothing here knows about a particular env's rules: rewards, dynamics and layouts stay in
the env modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv

ObsT = TypeVar("ObsT")
#: what a parallel env's ``reset`` returns: observations and infos per agent.
ParallelReset = tuple[dict[str, ObsT], dict[str, dict[str, Any]]]
#: what a parallel env's ``step`` returns: observations, rewards, terminated, truncated, infos per agent.
ParallelStep = tuple[
    dict[str, ObsT], dict[str, float], dict[str, bool], dict[str, bool], dict[str, dict[str, Any]]
]


# ---------------------------------------------------------------------- argument checks
def check_render_mode(render_mode: str | None) -> None:
    """Raise unless ``render_mode`` is ``None`` or ``"rgb_array"`` (the only modes the envs draw)."""
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode={render_mode!r}: only None and 'rgb_array' are supported")


def check_n_agents(n_agents: int, max_agents: int) -> None:
    """Raise unless ``1 <= n_agents <= max_agents`` (``max_agents``: the env's number of agent colours)."""
    if not 1 <= n_agents <= max_agents:
        raise ValueError(f"n_agents={n_agents} must be in [1, {max_agents}]")


def parallel_metadata(name: str, render_fps: int) -> dict[str, Any]:
    """The ``metadata`` of a parallel env of this package: ``rgb_array`` rendering, parallelizable.

    Args:
        name: the PettingZoo name, ``<module>_v<version>``.
        render_fps: frames per second a video of ``render()`` frames should play at.
    """
    return {
        "name": name,
        "render_modes": ["rgb_array"],
        "render_fps": render_fps,
        "is_parallelizable": True,
    }


# ---------------------------------------------------------------------- parallel envs
class IndexedParallelEnv(ParallelEnv):
    """PettingZoo plumbing of the parallel envs: named agents, per-agent spaces, a seeded generator.

    Agent ``i`` is ``possible_agents[i] == f"agent_{i}"``; subclasses keep their per-agent
    state in arrays indexed by ``i`` and set ``self.agents`` from an ``alive [N]`` mask with
    :meth:`_agents_where`. ``np_random`` is the env's only source of randomness; a seeded
    ``reset`` replaces it (see :meth:`_reseed`).

    Args:
        n_agents: number of agents ``N``.
        observation_spaces: ``N`` spaces, agent ``i``'s at position ``i`` (the same object
            may serve several agents).
        action_spaces: ``N`` spaces, agent ``i``'s at position ``i``; give each agent its own
            object so that seeding one agent's sampler leaves the others' alone.
    """

    def __init__(
        self,
        n_agents: int,
        observation_spaces: Sequence[gymnasium.spaces.Space],
        action_spaces: Sequence[gymnasium.spaces.Space],
    ) -> None:
        if len(observation_spaces) != n_agents or len(action_spaces) != n_agents:
            raise ValueError(
                f"need one observation and one action space per agent ({n_agents}), "
                f"got {len(observation_spaces)} and {len(action_spaces)}"
            )
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.agents: list[str] = []
        self._obs_spaces = dict(zip(self.possible_agents, observation_spaces, strict=True))
        self._act_spaces = dict(zip(self.possible_agents, action_spaces, strict=True))
        self.np_random = np.random.default_rng()

    def observation_space(self, agent: str) -> gymnasium.spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.spaces.Space:
        return self._act_spaces[agent]

    def close(self) -> None:
        """Nothing to release (no window is ever opened)."""

    def _reseed(self, seed: int | None) -> None:
        """Replace ``np_random`` by a generator seeded with ``seed``; keep it when ``seed`` is ``None``."""
        if seed is not None:
            self.np_random = np.random.default_rng(seed)

    def _require_running(self) -> None:
        """Raise when the episode is over (``self.agents`` empty): ``step`` needs a ``reset`` first."""
        if not self.agents:
            raise RuntimeError("the episode is over (no agents left); call reset() before step()")

    def _live_actions(
        self, actions: Mapping[str, Any], acting: Iterable[int]
    ) -> Iterator[tuple[int, str, Any]]:
        """``(i, name, action)`` for each acting agent index ``i`` in turn, ``action`` as given.

        Lazy: an agent without an action raises ``ValueError`` when its turn comes, so the
        agents before it have been handled by then.
        """
        for i in acting:
            name = self.possible_agents[i]
            if name not in actions:
                raise ValueError(
                    f"no action for live agent {name!r}; pass one action per agent in env.agents"
                )
            yield i, name, actions[name]

    def _agents_where(self, alive: np.ndarray) -> list[str]:
        """Names of the agents whose entry of ``alive [N]`` (bool) is set, in agent order."""
        return [a for i, a in enumerate(self.possible_agents) if alive[i]]


def discrete_action(action: Any, agent: str, n: int) -> int:
    """``action`` as an ``int`` in ``[0, n)``; a ``ValueError`` naming ``agent`` when outside ``Discrete(n)``."""
    action = int(action)
    if not 0 <= action < n:
        raise ValueError(f"action {action} of {agent!r} is outside Discrete({n})")
    return action


# ---------------------------------------------------------------------- goal envs
def goal_space(observation: gymnasium.spaces.Space, goal: gymnasium.spaces.Space) -> gymnasium.spaces.Dict:
    """``Dict(observation, achieved_goal, desired_goal)``; both goal keys use the one ``goal`` space."""
    return gymnasium.spaces.Dict({"observation": observation, "achieved_goal": goal, "desired_goal": goal})


def goal_obs(
    observation: np.ndarray, achieved_goal: np.ndarray, desired_goal: np.ndarray
) -> dict[str, np.ndarray]:
    """A goal-env observation dict holding copies of the three arrays (callers may keep mutating theirs)."""
    return {
        "observation": np.array(observation, copy=True),
        "achieved_goal": np.array(achieved_goal, copy=True),
        "desired_goal": np.array(desired_goal, copy=True),
    }


def success_terminated(reward: np.ndarray, terminate_on_success: bool) -> np.ndarray:
    """Goal-env termination flags ``bool [...]`` from sparse rewards ``[...]`` (0 = success, -1 = not).

    ``compute_terminated`` of the goal envs: success when ``terminate_on_success``, else all ``False``.
    """
    return (reward == 0.0) & terminate_on_success


def end_flags(success: bool, steps: int, max_steps: int, terminate_on_success: bool) -> tuple[bool, bool]:
    """``(terminated, truncated)`` of a goal-env step.

    Terminated on success when ``terminate_on_success``; truncated once ``steps >= max_steps``
    unless terminated at that same step (termination wins: no bootstrap from a reached goal).
    """
    terminated = bool(success and terminate_on_success)
    return terminated, bool(steps >= max_steps and not terminated)


# ---------------------------------------------------------------------- rendering
def pale(colour: Sequence[int]) -> tuple[int, int, int]:
    """``colour`` (RGB, 0..255) taken halfway to white, rounding down: how goals echo their agent."""
    r, g, b = ((int(c) + 255) // 2 for c in colour)
    return r, g, b
