"""VMAS (the torch-vectorized multi-agent simulator) as a batched env: ``env.id: vmas:<scenario>``.

Runs with ``env.backend: batched`` (see :mod:`marl.env.batched`); ``env.kwargs`` go to
``vmas.make_env`` (``max_steps``, default :data:`DEFAULT_MAX_STEPS`; ``continuous_actions``, default
false; and the scenario's own keywords such as ``n_agents``). Install with ``pip install marl[vmas]``.

How VMAS's conventions map onto ours:

* agents keep VMAS's names (``agent_0``, ...) and are grouped by name prefix;
* observations and rewards come per agent (``[E, obs_dim]``, ``[E]``); they are stacked per group
  to ``[E, A_g, ...]`` float32 arrays: numpy arrays by default, torch tensors on the simulation's
  device with ``tensors=True`` (:func:`marl.env.batched.torch_native`: a PPO run on the device of the
  simulation keeps observations, rewards and actions torch end to end, no numpy round trip);
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


def reset_ended(env: Any, done: Any, obs: Sequence[Any]) -> list[Any]:
    """The per-agent observations ``obs [E, ...]`` after resetting the copies where ``done [E]`` (bool tensor): fresh
    starts there, ``obs`` elsewhere (new tensors; ``obs`` is not written).

    When every copy ended (a time limit reached by copies that started together: every step of a
    ``max_steps`` run's episode boundary), one vectorized ``env.reset()`` instead of ``E`` calls of
    ``env.reset_at(i)``, each of which recomputes every copy's observations: 1,024 copies of
    simple_spread, 1.9 s -> 0.02 s per boundary on one core (``python bench/bench_batched_ppo_parts.py --vmas``).
    The new starts are drawn from VMAS's generator in another order than one copy at a time: the
    same distribution, not the same draws.
    """
    if not bool(done.any()):
        return [o.clone() for o in obs]
    if bool(done.all()):
        return [o.clone() for o in env.reset(return_observations=True)]  # never a view of the simulation
    current = [o.clone() for o in obs]
    for i in done.nonzero().flatten().tolist():
        fresh = env.reset_at(int(i), return_observations=True)
        for k, o in enumerate(fresh):
            current[k][i] = o[i]
    return current


DEFAULT_MAX_STEPS = 100
"""``max_steps`` when ``env.kwargs`` gives none: most VMAS scenarios never end an episode by themselves, and
an episode that never ends would hold evaluation forever."""


class VmasBatched:
    """``num_envs`` copies of a VMAS scenario with the batched-env interface of :mod:`marl.env.batched`.

    Args:
        scenario: VMAS scenario name.
        num_envs: ``E``.
        tensors: return torch tensors on ``device`` (and take torch actions) instead of numpy arrays.
        device: the simulation's torch device (``"cpu"`` unless ``tensors``).
        kwargs: ``vmas.make_env`` keywords.
    """

    def __init__(self, scenario: str, num_envs: int, tensors: bool = False, device: str = "cpu",
                 **kwargs: Any) -> None:
        try:
            import torch
            import vmas
        except ImportError as exc:
            raise ImportError(f"vmas:{scenario} needs the VMAS package: pip install marl[vmas] ({exc})") from exc
        self._torch = torch
        kwargs = dict(kwargs)
        kwargs.setdefault("continuous_actions", False)
        kwargs.setdefault("max_steps", DEFAULT_MAX_STEPS)  # VMAS scenarios have no time limit of their own
        if not tensors and str(device) != "cpu":
            raise ValueError(f"VMAS on {device} needs tensors=True (numpy arrays live on the CPU)")
        self.tensors = bool(tensors)
        self.device = torch.device(device)
        self.env = vmas.make_env(scenario, num_envs=num_envs, device=str(device), terminated_truncated=True, **kwargs)
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

    def _group(self, per_agent: Sequence[Any]) -> dict[str, Any]:
        if self.tensors:
            torch = self._torch
            return {g: torch.stack([per_agent[i].to(torch.float32) for i in idx], dim=1)
                    for g, idx in self._index.items()}
        return {g: np.stack([np.asarray(per_agent[i], np.float32) for i in idx], axis=1)
                for g, idx in self._index.items()}

    def reset(self, seed: int | Sequence[int] | None = None) -> dict[str, Any]:
        if seed is not None:
            self.env.seed(int(seed if isinstance(seed, (int, np.integer)) else seed[0]))
        obs = self.env.reset()
        self._obs = list(obs) if self.tensors else [o.numpy() for o in obs]
        return self._group(self._obs)

    def _per_agent_actions(self, actions: Mapping[str, Any]) -> list[Any]:
        """Group actions ``[E, A_g, ...]`` -> VMAS's list of per-agent tensors (discrete ones as int64)."""
        torch = self._torch
        per_agent: list[Any] = [None] * len(self.agents)
        for g, idx in self._index.items():
            a = actions[g] if isinstance(actions[g], torch.Tensor) else torch.as_tensor(np.asarray(actions[g]))
            a = a.to(self.device)
            for k, i in enumerate(idx):
                per_agent[i] = a[:, k] if a.dim() > 2 else a[:, k].long()
        return per_agent

    def step(self, actions: Mapping[str, Any]) -> BatchedStep:
        obs, rews, term, trunc, _info = self.env.step(self._per_agent_actions(actions))
        if self.tensors:
            return self._step_tensors(list(obs), rews, term, trunc)
        final = [o.numpy() for o in obs]
        terminated, truncated = term.numpy().astype(bool), trunc.numpy().astype(bool)
        done = terminated | truncated
        current = [o.numpy() for o in reset_ended(self.env, term.bool() | trunc.bool(), list(obs))]
        self._obs = current
        per_group = lambda flags: {g: np.repeat(flags[:, None], len(idx), axis=1) for g, idx in self._index.items()}  # noqa: E731
        return BatchedStep(self._group(current), self._group([r.numpy() for r in rews]), per_group(terminated),
                           per_group(truncated & ~terminated), self._group(final), done)

    def _step_tensors(self, final: list[Any], rews: Sequence[Any], term: Any, trunc: Any) -> BatchedStep:
        """:meth:`step`'s result as tensors on the device: the same values as the numpy result."""
        terminated, truncated = term.bool(), trunc.bool()
        done = terminated | truncated
        current = reset_ended(self.env, done, final)
        self._obs = current
        per_group = lambda flags: {g: flags[:, None].expand(-1, len(idx)).clone()  # noqa: E731
                                   for g, idx in self._index.items()}
        return BatchedStep(self._group(current), self._group(list(rews)), per_group(terminated),
                           per_group(truncated & ~terminated), self._group(final), done)

    def observe(self) -> dict[str, Any]:
        return self._group(self._obs)

    def state(self) -> Any:
        if self.tensors:
            return self._torch.cat([o.to(self._torch.float32).reshape(self.num_envs, -1) for o in self._obs], dim=-1)
        return np.concatenate([np.asarray(o, np.float32).reshape(self.num_envs, -1) for o in self._obs], axis=-1)


def make(scenario: str, num_envs: int, tensors: bool = False, device: str = "cpu", **kwargs: Any) -> VmasBatched:
    """``num_envs`` copies of VMAS scenario ``scenario`` (``env.kwargs`` go to ``vmas.make_env``); ``tensors``:
    torch tensors on ``device`` in and out instead of numpy arrays."""
    return VmasBatched(scenario, num_envs, tensors=tensors, device=device, **kwargs)
