"""Cue recall: a memory task that a feed-forward policy provably cannot play better than chance.

``n_agents`` agents (``agent_0`` ... ``agent_{N-1}``) each draw a private cue, uniformly from
``n_cues`` values, at every reset. An episode has ``delay + 1`` steps:

* step 0 (the reset observation): the agent sees its cue;
* steps ``1 .. delay - 1``: a blank observation;
* step ``delay``: the *query* observation; the agent's action at this step is its answer.

Observation ``Box(0, 1, (n_cues + 1,), float32)``: ``[one-hot cue (n_cues), query flag]``; all
zeros on blank steps, ``[0, ..., 0, 1]`` at the query. Actions ``Discrete(n_cues)``.

Reward: ``1`` for an agent whose answer equals its cue, else ``0``; answers at other steps earn
nothing and change nothing. Every agent is terminated after the query step (no truncation).
Infos: ``{"is_success": answer == cue}`` at the end, ``{}`` before.

**Bound for feed-forward policies.** A policy that maps the current observation to an action
distribution (no memory, no stacked frames) sees the same query observation whatever the cue,
so its answer is independent of the cue; with the cue uniform over ``n_cues`` values,
``P(answer == cue) = 1 / n_cues`` exactly, for every such policy. Its expected return is thus
``1 / n_cues`` per agent (``n_agents / n_cues`` for the team), while a policy that remembers
its first observation for ``delay`` steps earns ``1`` per agent. Frame stacking of ``k`` frames
only helps when ``k > delay``.

The env id ``envs.cue_recall``: ``parallel_env(**kwargs)`` builds a :class:`CueRecallEnv`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np

from . import _common
from ._common import ParallelReset, ParallelStep

MAX_AGENTS = 8


class CueRecallEnv(_common.IndexedParallelEnv):
    """Cue recall (see the module docstring for observations, rewards and the feed-forward bound).

    Args:
        n_agents: number of agents, 1 to 8 (each has its own cue; they do not interact).
        n_cues: number of cue values and actions (>= 2); chance level is ``1 / n_cues``.
        delay: steps between the cue and the query (>= 1).
    """

    metadata: ClassVar[dict[str, Any]] = {"name": "cue_recall_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, n_agents: int = 2, n_cues: int = 4, delay: int = 4) -> None:
        _common.check_n_agents(n_agents, MAX_AGENTS)
        if n_cues < 2:
            raise ValueError(f"n_cues={n_cues} must be >= 2")
        if delay < 1:
            raise ValueError(f"delay={delay} must be >= 1 (0 would show cue and query together)")
        self.n_agents = n_agents
        self.n_cues = n_cues
        self.delay = delay
        self.render_mode = None
        obs_space = gymnasium.spaces.Box(0.0, 1.0, (n_cues + 1,), np.float32)
        super().__init__(n_agents, [obs_space] * n_agents,
                         [gymnasium.spaces.Discrete(n_cues) for _ in range(n_agents)])
        self.state_space = gymnasium.spaces.Box(0.0, 1.0, (n_agents * (n_cues + 1),), np.float32)
        self._cues = np.zeros(n_agents, dtype=np.int64)
        self._t = 0

    def _observe(self, i: int) -> np.ndarray:
        out = np.zeros(self.n_cues + 1, dtype=np.float32)
        if self._t == 0:
            out[self._cues[i]] = 1.0
        elif self._t == self.delay:
            out[-1] = 1.0
        return out

    def reset(self, seed: int | None = None, options: dict | None = None) -> ParallelReset[np.ndarray]:
        self._reseed(seed)
        self._cues = self.np_random.integers(0, self.n_cues, size=self.n_agents)
        self._t = 0
        self.agents = list(self.possible_agents)
        return {a: self._observe(i) for i, a in enumerate(self.possible_agents)}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> ParallelStep[np.ndarray]:
        self._require_running()
        query = self._t == self.delay
        answers = {name: _common.discrete_action(a, name, self.n_cues)
                   for _, name, a in self._live_actions(actions, range(self.n_agents))}
        rewards, infos = {}, {}
        for i, name in enumerate(self.possible_agents):
            correct = query and answers[name] == int(self._cues[i])
            rewards[name] = float(correct)
            infos[name] = {"is_success": bool(correct)} if query else {}
        self._t += 1
        obs = {a: self._observe(i) for i, a in enumerate(self.possible_agents)}
        terminated = {a: query for a in self.possible_agents}
        truncated = {a: False for a in self.possible_agents}
        if query:
            self.agents = []
        return obs, rewards, terminated, truncated, infos

    def state(self) -> np.ndarray:
        """Global state ``float32 [n_agents * (n_cues + 1)]``: every agent's current observation."""
        return np.concatenate([self._observe(i) for i in range(self.n_agents)])


# The env id ``envs.cue_recall``: ``parallel_env(**kwargs)`` builds a :class:`CueRecallEnv`.
parallel_env = CueRecallEnv
