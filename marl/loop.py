"""The one act -> step loop: a vector env, its copies' current observations, and a policy acting on them.

Everything that runs a policy in envs goes through :class:`EnvLoop`: PPO's rollout collector,
off-policy collection, evaluation, and ``marl record`` (evaluation with a frame tap on the env).
It owns the env copies' latest observations, global state and achieved goals, and steps the
env in **units** of chunks::

    loop = EnvLoop(env, overlap=True)       # one unit per chunk (worker process)
    loop.reset(seed)
    obs, state = loop.unit_inputs(u)         # views of unit u's current observations
    loop.send(u, policy(obs, state))         # the unit's chunks start stepping
    step = loop.recv(u)                      # wait for them; use the step (store, count episodes)
    loop.advance(u, step)                    # the unit's new observations become current

With ``overlap`` the policy acts on one chunk while the others step in their workers
(inference overlaps env stepping on different cores); without it there is one unit, all
chunks, which :meth:`step` runs as act -> send all -> receive all. Receiving and advancing are
two calls because a caller may still read the inputs it acted on (views of the current
observations) when it stores the step: :meth:`advance` overwrites them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from marl import health
from marl.env.vector import VectorEnv, concat_steps
from marl.types import ActOutput, GroupObs, VecStep

Act = Callable[[dict[str, GroupObs], "np.ndarray | None"], ActOutput]
"""A policy's act for one unit: ``(obs [E_u, A, ...] per group, state [E_u, S] or None) -> ActOutput``."""


def episode_ends(step: VecStep, start: int = 0) -> dict[str, np.ndarray]:
    """Agents whose episode or life ended at ``step``: group -> bool ``[E_u, A]``.

    An agent ends when it is terminated or truncated, and every agent of a copy whose episode
    finished (``step.episodes``; ``start`` is the global index of the step's first copy) ends
    too. A recurrent policy's state is zeroed there (:func:`reset_hidden`), so the next
    episode, or an agent's next life, starts from zero.
    """
    ended = {g: tr.terminated | tr.truncated for g, tr in step.transition.items()}
    if step.episodes:
        copies = [ep.env_index - start for ep in step.episodes]
        for g in ended:
            ended[g][copies] = True
    return ended


def reset_hidden(hidden: Mapping[str, Tensor], ended: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """``hidden`` (group -> ``[E, A, S]``) with the rows of ended agents (``[E, A]`` bool) zeroed."""
    out = {}
    for g, h in hidden.items():
        keep = torch.as_tensor(~ended[g], device=h.device)
        out[g] = h * keep.unsqueeze(-1).to(h.dtype)
    return out


def own_obs(obs: Mapping[str, GroupObs]) -> dict[str, GroupObs]:
    """Copies of every array of ``obs`` (a vector env may hand out views of buffers it rewrites); numpy arrays or
    torch tensors (a torch-native batched env, :mod:`marl.env.batched`), each copied as what it is."""
    return {g: GroupObs(*(None if a is None else _copy(a) for a in o)) for g, o in obs.items()}


def _copy(a: np.ndarray | Tensor) -> np.ndarray | Tensor:
    return a.clone() if isinstance(a, Tensor) else a.copy()


def slice_obs(obs: Mapping[str, GroupObs], sl: slice) -> dict[str, GroupObs]:
    """Views of env copies ``sl`` of ``[E, ...]`` observations."""
    return {g: GroupObs(*(None if a is None else a[sl] for a in o)) for g, o in obs.items()}


class EnvLoop:
    """A vector env and its copies' current observations; acts and steps in units of chunks.

    Args:
        env: the vector env (``reset``, ``send``, ``recv``, ``chunk_slice``, ``num_chunks``).
        overlap: one unit per chunk (act on a chunk while the others step) instead of one unit
            of every chunk.
        check_inputs: raise on a NaN/inf observation or reward, naming the agent and env copy
            (:func:`marl.health.check_inputs`).

    Attributes:
        obs: group -> :class:`GroupObs` ``[E, A, ...]`` of the current step (with achieved goals
            for goal envs), owned by the loop.
        state: ``[E, S]`` global state of the current step, or ``None``.
        units: chunk indices per unit; ``unit_slices``: the env copies of each unit.
    """

    def __init__(self, env: VectorEnv, overlap: bool = False, check_inputs: bool = False) -> None:
        self.env = env
        self.num_envs = env.num_envs
        chunks = list(range(env.num_chunks))
        self.units: list[list[int]] = [[k] for k in chunks] if overlap else [chunks]
        self.unit_slices = [slice(env.chunk_slice(u[0]).start, env.chunk_slice(u[-1]).stop) for u in self.units]
        self.check_inputs = check_inputs
        self.agents = {g.name: g.agents for g in env.spec.groups}
        self.obs: dict[str, GroupObs] = {}
        self.state: np.ndarray | None = None

    def reset(self, seed: int | Sequence[int]) -> None:
        """Reset every env copy (copy ``i`` gets ``seeds_for(seed, E)[i]``, or ``seed[i]`` for a list)."""
        self.set_obs(*self.env.reset(seed))

    def set_obs(self, obs: Mapping[str, GroupObs], state: np.ndarray | None) -> None:
        """Take the env copies' current observations (after a reset or a restore); the loop keeps copies."""
        if self.check_inputs:
            health.check_inputs({g: o.obs for g, o in obs.items()}, None, self.agents)
        self.obs = own_obs(obs)
        self.state = None if state is None else _copy(state)

    def unit_inputs(self, u: int) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        """Views of unit ``u``'s current observations and state (valid until :meth:`advance` of ``u``)."""
        sl = self.unit_slices[u]
        return slice_obs(self.obs, sl), None if self.state is None else self.state[sl]

    def send(self, u: int, env_action: Mapping[str, np.ndarray]) -> None:
        """Send unit ``u``'s chunks their actions ``[E_u, A, ...]`` (they start stepping)."""
        sl = self.unit_slices[u]
        for k in self.units[u]:
            ck = self.env.chunk_slice(k)
            part = slice(ck.start - sl.start, ck.stop - sl.start)
            self.env.send(k, {g: a[part] for g, a in env_action.items()})

    def recv(self, u: int) -> VecStep:
        """Wait for unit ``u``'s chunks; their step as one ``[E_u, ...]`` result (inputs checked when asked)."""
        steps = [self.env.recv(k) for k in self.units[u]]
        step = steps[0] if len(steps) == 1 else concat_steps(steps)
        if self.check_inputs:
            health.check_inputs({g: o.obs for g, o in step.obs.items()},
                                {g: tr.reward for g, tr in step.transition.items()}, self.agents,
                                self.unit_slices[u].start)
        return step

    def advance(self, u: int, step: VecStep) -> None:
        """Make ``step``'s observations (after auto-reset) the current ones of unit ``u``."""
        sl = self.unit_slices[u]
        for g, o in step.obs.items():
            for mine, new in zip(self.obs[g], o):
                if mine is not None:
                    mine[sl] = new
        if self.state is not None:
            self.state[sl] = step.state

    def step(self, act: Act) -> tuple[dict[str, GroupObs], ActOutput, VecStep]:
        """One step of every env copy: act on all, send every unit, receive all, advance.

        Returns:
            ``(obs, out, step)``: the observations acted on (owned copies), the policy's output,
            and the env's step.
        """
        obs, state = own_obs(self.obs), None if self.state is None else _copy(self.state)
        out = act(obs, state)
        for u in range(len(self.units)):
            self.send(u, {g: a[self.unit_slices[u]] for g, a in out.env_action.items()})
        steps = [self.recv(u) for u in range(len(self.units))]
        step = steps[0] if len(steps) == 1 else concat_steps(steps)
        for u, s in enumerate(steps):
            self.advance(u, s)
        return obs, out, step
