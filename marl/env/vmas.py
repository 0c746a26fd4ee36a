"""VMAS (the torch-vectorized multi-agent simulator) as a batched env: ``env.id: vmas:<scenario>``.

Runs with ``env.backend: batched`` (see :mod:`marl.env.batched`); ``env.kwargs`` go to
``vmas.make_env`` (``max_steps``, default :data:`DEFAULT_MAX_STEPS`; ``continuous_actions``, default
false; and the scenario's own keywords such as ``n_agents``). Install with ``pip install marl[vmas]``.

How VMAS's conventions map onto ours:

* agents keep VMAS's names (``agent_0``, ...) and are grouped by name prefix;
* observations and rewards come per agent (``[E, obs_dim]``, ``[E]``); they are stacked per group
  to ``[E, A_g, ...]`` float32 numpy arrays (the simulation runs on the CPU here);
* VMAS ends all agents of a copy together: ``terminated`` is the scenario's ``done``, ``truncated``
  is ``max_steps`` reached (``terminated_truncated=True``), kept apart as everywhere in marl; a
  copy that ends is reset with ``reset_at`` in the same step, its last observation kept as
  ``final_obs``;
* seeding: VMAS has one generator for all copies, seeded with the first copy seed at ``reset``
  (copies differ through that stream, not through per-copy seeds);
* exact resume is not available (VMAS has no state dict): a resumed run restarts its copies from
  a fresh reset, with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np

from marl.env.batched import BatchedStep
from marl.multi_agent.groups import default_groups


def _gymnasium_space(space: Any) -> gymnasium.spaces.Space:
    """A VMAS (gym 0.26) space as the gymnasium space marl's specs use."""
    if hasattr(space, "n"):
        return gymnasium.spaces.Discrete(int(space.n))
    return gymnasium.spaces.Box(np.asarray(space.low, np.float32), np.asarray(space.high, np.float32),
                                dtype=np.float32)


DEFAULT_MAX_STEPS = 100
"""``max_steps`` when ``env.kwargs`` gives none: most VMAS scenarios never end an episode by themselves, and
an episode that never ends would hold evaluation forever."""


class VmasBatched:
    """``num_envs`` copies of a VMAS scenario with the batched-env interface of :mod:`marl.env.batched`."""

    def __init__(self, scenario: str, num_envs: int, **kwargs: Any) -> None:
        try:
            import torch
            import vmas
        except ImportError as exc:
            raise ImportError(f"vmas:{scenario} needs the VMAS package: pip install marl[vmas] ({exc})") from exc
        self._torch = torch
        kwargs = dict(kwargs)
        kwargs.setdefault("continuous_actions", False)
        kwargs.setdefault("max_steps", DEFAULT_MAX_STEPS)  # VMAS scenarios have no time limit of their own
        self.env = vmas.make_env(scenario, num_envs=num_envs, device="cpu", terminated_truncated=True, **kwargs)
        self.num_envs = num_envs
        self.agents = [a.name for a in self.env.agents]
        self.groups = default_groups(self.agents)
        self._index = {g: [self.agents.index(a) for a in names] for g, names in self.groups.items()}
        self._obs_spaces = {a: _gymnasium_space(s)
                            for a, s in zip(self.agents, self.env.observation_space, strict=True)}
        self._act_spaces = {a: _gymnasium_space(s) for a, s in zip(self.agents, self.env.action_space, strict=True)}
        for g, names in self.groups.items():
            if len({str(self._obs_spaces[a]) for a in names}) > 1 or len({str(self._act_spaces[a]) for a in names}) > 1:
                raise ValueError(f"VMAS agents of group {g!r} have different spaces; they cannot share a group")
        state_dim = sum(int(np.prod(self._obs_spaces[a].shape)) for a in self.agents)
        self.state_space = gymnasium.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
        self._obs: list[Any] = []

    def observation_space(self, agent: str) -> gymnasium.spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.spaces.Space:
        return self._act_spaces[agent]

    def _group(self, per_agent: Sequence[Any]) -> dict[str, np.ndarray]:
        return {g: np.stack([np.asarray(per_agent[i], np.float32) for i in idx], axis=1)
                for g, idx in self._index.items()}

    def reset(self, seed: int | Sequence[int] | None = None) -> dict[str, np.ndarray]:
        if seed is not None:
            self.env.seed(int(seed if isinstance(seed, (int, np.integer)) else seed[0]))
        self._obs = [o.numpy() for o in self.env.reset()]
        return self._group(self._obs)

    def step(self, actions: Mapping[str, np.ndarray]) -> BatchedStep:
        torch = self._torch
        per_agent: list[Any] = [None] * len(self.agents)
        for g, idx in self._index.items():
            a = np.asarray(actions[g])
            for k, i in enumerate(idx):
                per_agent[i] = torch.as_tensor(a[:, k]) if a.ndim > 2 else torch.as_tensor(a[:, k]).long()
        obs, rews, term, trunc, _info = self.env.step(per_agent)
        final = [o.numpy() for o in obs]
        terminated, truncated = term.numpy().astype(bool), trunc.numpy().astype(bool)
        done = terminated | truncated
        current = [o.copy() for o in final]
        for i in np.flatnonzero(done):
            fresh = self.env.reset_at(int(i), return_observations=True)
            for k, o in enumerate(fresh):
                current[k][i] = o[i].numpy()
        self._obs = current
        per_group = lambda flags: {g: np.repeat(flags[:, None], len(idx), axis=1) for g, idx in self._index.items()}  # noqa: E731
        return BatchedStep(self._group(current), self._group([r.numpy() for r in rews]), per_group(terminated),
                        per_group(truncated & ~terminated), self._group(final), done)

    def observe(self) -> dict[str, np.ndarray]:
        return self._group(self._obs)

    def state(self) -> np.ndarray:
        return np.concatenate([np.asarray(o, np.float32).reshape(self.num_envs, -1) for o in self._obs], axis=-1)


def make(scenario: str, num_envs: int, **kwargs: Any) -> VmasBatched:
    """``num_envs`` copies of VMAS scenario ``scenario`` (``env.kwargs`` go to ``vmas.make_env``)."""
    return VmasBatched(scenario, num_envs, **kwargs)
