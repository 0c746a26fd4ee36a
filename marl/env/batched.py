"""Batched environments: one object that steps all E copies as arrays, as a vector env.

A **batched env** simulates E copies at once and returns arrays ``[E, A, ...]`` per group
with its own per-copy auto-reset; no worker processes, no per-copy Python loop. The one in
this repository is :mod:`envs.batched_mpe` (PettingZoo's MPE scenarios as one numpy
simulation, faithful to mpe2). :class:`BatchedVectorEnv` puts one behind the
:class:`marl.env.vector.VectorEnv` interface (one chunk), so every trainer, evaluation,
checkpoint and resume work on it unchanged.

A config chooses it with one key: ``env.backend: batched`` with an env id that has a
batched implementation (:data:`BATCHED`): ``mpe2.simple_spread_v3``,
``mpe2.simple_speaker_listener_v4``, ``mpe2.simple_reference_v3``, ``mpe2.simple_adversary_v3``,
``mpe2.simple_tag_v3``, with mpe2's kwargs (``N``, ``local_ratio``, ``max_cycles``,
``continuous_actions``, ...). Switching ``env.backend`` between ``sync`` / ``subprocess`` and
``batched`` switches between mpe2 itself and the batched simulation of the same scenario;
``marl record`` draws with mpe2 (same observations, same policy).

The batched env object needs: ``num_envs``, ``agents``, ``groups`` (group -> agents),
``observation_space(agent)``, ``action_space(agent)``, ``state_space``,
``reset(seeds) -> {g: [E, A_g, ...]}``, ``step(actions) -> BatchedStep`` (or any object with its fields),
``state() -> [E, S]``, ``observe()``, and for exact resume ``state_dict()`` / ``load_state_dict()``.
Every agent of a copy is alive while the copy runs (MPE ends all agents of a copy together);
episodes are counted here from the rewards.

**Torch end to end.** A batched env with ``tensors = True`` (VMAS built with ``tensors=True``)
returns torch tensors on its device and takes torch actions; :class:`BatchedVectorEnv` then keeps
every array of its steps a tensor (observations, rewards, flags, final observations, state), and
the PPO path (:class:`marl.loop.EnvLoop`, the policy, the rollout collector) keeps them tensors:
no numpy round trip between the simulation and the networks. :func:`torch_native` says when a
run takes this path.
"""

from __future__ import annotations

import copy
import importlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from marl.env.chunks import check_actions
from marl.seeding import copy_seeds
from marl.types import EnvSpec, EpisodeStats, GroupObs, GroupSpec, GroupTransition, VecStep


class BatchedStep(NamedTuple):
    """What a batched env's ``step`` returns; every dict is keyed by group, arrays ``[E, A_g, ...]``.

    Attributes:
        obs: observations after the step, fresh starts for the copies that ended.
        reward: float32 rewards of the step.
        terminated, truncated: bool, kept apart (a copy ends all its agents together).
        final_obs: the observation the step reached (differs from ``obs`` where a copy ended).
        done_envs: ``bool [E]``, the copies that ended (and were reset).
    """

    obs: dict[str, np.ndarray]
    reward: dict[str, np.ndarray]
    terminated: dict[str, np.ndarray]
    truncated: dict[str, np.ndarray]
    final_obs: dict[str, np.ndarray]
    done_envs: np.ndarray


BATCHED: dict[str, str] = {
    "mpe2.simple_spread_v3": "envs.batched_mpe:make",
    "mpe2.simple_speaker_listener_v4": "envs.batched_mpe:make",
    "mpe2.simple_reference_v3": "envs.batched_mpe:make",
    "mpe2.simple_adversary_v3": "envs.batched_mpe:make",
    "mpe2.simple_tag_v3": "envs.batched_mpe:make",
}
"""Env ids with a batched implementation -> its maker ``(scenario, num_envs, **kwargs)``."""


def torch_native(env_id: str, algo: str, check_inputs: bool = False, recurrent: bool = False) -> bool:
    """Whether a run keeps its training env's arrays torch tensors end to end: a VMAS env (a torch simulation,
    then run on the learner's device) trained by PPO, feed-forward, without ``health.check_inputs`` (numpy
    checks). Evaluation envs stay numpy (not the hot path)."""
    return env_id.startswith("vmas:") and algo == "ppo" and not check_inputs and not recurrent


def batched_factory(env_id: str, kwargs: Mapping[str, Any], tensors: bool = False,
                    device: str = "cpu") -> Callable[[int], Any]:
    """``num_envs -> batched env`` for ``env_id`` with the env's own ``kwargs``: an id of :data:`BATCHED`, or
    ``vmas:<scenario>`` (:mod:`marl.env.vmas`; with ``tensors``: torch tensors on ``device`` in and out).

    Raises:
        ValueError: no batched implementation of ``env_id`` (the message lists those that exist), or
            ``tensors`` asked of a numpy simulation.
    """
    if env_id.startswith("vmas:"):
        from marl.env.vmas import make as make_vmas

        scenario = env_id.split(":", 1)[1]
        return lambda num_envs: make_vmas(scenario, num_envs, tensors=tensors, device=device, **dict(kwargs))
    if tensors:
        raise ValueError(f"{env_id!r}: the batched MPE simulation is numpy; torch tensors come from VMAS ids only")
    if env_id not in BATCHED:
        raise ValueError(f"env.backend=batched: {env_id!r} has no batched implementation; batched ids: "
                         f"{', '.join(sorted(BATCHED))}, vmas:<scenario> (or use env.backend=sync / subprocess)")
    if "render_mode" in kwargs:
        raise ValueError("env.backend=batched does not render; drop env.kwargs.render_mode "
                         "(marl record draws with the env itself)")
    module, attr = BATCHED[env_id].split(":")
    maker = getattr(importlib.import_module(module), attr)
    scenario = env_id.rsplit(".", 1)[-1]

    def make(num_envs: int) -> Any:
        return maker(scenario, num_envs, **dict(kwargs))

    return make


def batched_spec(env: Any, use_state: bool) -> EnvSpec:
    """The :class:`EnvSpec` of a batched env: its groups, mpe2's spaces, the global state if asked."""
    groups = tuple(
        GroupSpec(g, tuple(agents), env.observation_space(agents[0]), env.action_space(agents[0]))
        for g, agents in env.groups.items()
    )
    state_shape = tuple(env.state_space.shape) if use_state else None
    return EnvSpec(tuple(env.agents), groups, state_shape=state_shape)


class BatchedVectorEnv:
    """A batched env as a :class:`marl.env.vector.VectorEnv` with one chunk.

    Args:
        env: the batched env (see the module doc).
        use_state: compute the global state (central critics) each step.

    Episode bookkeeping (returns per agent, lengths) is kept here and saved by :meth:`snapshot`
    together with the env's own :meth:`state_dict`, so a resumed run continues exactly.
    """

    num_chunks = 1

    def __init__(self, env: Any, use_state: bool = False) -> None:
        self.env = env
        self.num_envs = int(env.num_envs)
        self.spec = batched_spec(env, use_state)
        self.use_state = use_state
        self.tensors = bool(getattr(env, "tensors", False))
        """Steps hold torch tensors on the env's device (the env's ``tensors``), else numpy arrays."""
        n_agents = len(self.spec.agents)
        if self.tensors:
            import torch

            dev = env.device
            self._returns: Any = torch.zeros((self.num_envs, n_agents), dtype=torch.float64, device=dev)
            self._lengths: Any = torch.zeros(self.num_envs, dtype=torch.int64, device=dev)
            self._alive: dict[str, Any] = {g.name: torch.ones((self.num_envs, g.n_agents), dtype=torch.bool,
                                                              device=dev) for g in self.spec.groups}
        else:
            self._returns = np.zeros((self.num_envs, n_agents), np.float64)
            self._lengths = np.zeros(self.num_envs, np.int64)
            self._alive = {g.name: np.ones((self.num_envs, g.n_agents), bool) for g in self.spec.groups}
        self._agent_index = {g.name: [self.spec.agents.index(a) for a in g.agents] for g in self.spec.groups}
        self._pending: VecStep | None = None
        self._seed = 0

    # ------------------------------------------------------------------ VectorEnv
    def chunk_slice(self, chunk: int) -> slice:
        if chunk != 0:
            raise IndexError(f"chunk {chunk} out of range [0, 1): a batched env is one chunk")
        return slice(0, self.num_envs)

    def _obs(self, obs: Mapping[str, Any]) -> dict[str, GroupObs]:
        return {g: GroupObs(obs[g], _copy(self._alive[g]), None) for g in self._alive}

    def reset(self, seed: int | Sequence[int]) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        self._seed = int(seed) if isinstance(seed, (int, np.integer)) else int(seed[0])
        obs = self.env.reset(copy_seeds(seed, self.num_envs))
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._pending = None
        return self._obs(obs), self.env.state() if self.use_state else None

    def send(self, chunk: int, actions: Mapping[str, np.ndarray]) -> None:
        self.chunk_slice(chunk)
        if self._pending is not None:
            raise RuntimeError("the batched env was sent actions twice; recv(0) its result first")
        check_actions(self.spec, actions, self.num_envs)
        final_state = None
        out = self.env.step(dict(actions) if self.tensors else {g: np.asarray(a) for g, a in actions.items()})
        state = self.env.state() if self.use_state else None
        done = out.done_envs if self.tensors else np.asarray(out.done_envs, bool)
        if self.use_state:
            final_state = _zeros_like(state)
            if done.any():
                final_state[done] = self._final_state(out.final_obs)[done]
        transition = {}
        for g, idx in self._agent_index.items():
            ended = out.terminated[g] | out.truncated[g]
            transition[g] = GroupTransition(out.reward[g], out.terminated[g], out.truncated[g] & ~out.terminated[g],
                                            _where_ended(ended, out.final_obs[g]))
            self._returns[:, idx] += out.reward[g]
        self._lengths += 1
        episodes = self._episodes(done, out) if done.any() else []
        self._returns[done] = 0.0
        self._lengths[done] = 0
        self._pending = VecStep(self._obs(out.obs), transition, state, final_state, episodes)

    def recv(self, chunk: int) -> VecStep:
        self.chunk_slice(chunk)
        result, self._pending = self._pending, None
        if result is None:
            raise RuntimeError("recv(0) without a pending send(0, actions)")
        return result

    def step(self, actions: Mapping[str, np.ndarray]) -> VecStep:
        self.send(0, actions)
        return self.recv(0)

    def snapshot(self) -> dict[str, Any]:
        """The env's :meth:`state_dict` and the episode bookkeeping (plain data and arrays)."""
        if self._pending is not None:
            raise RuntimeError("snapshot() with a step in flight; recv it first")
        exact = hasattr(self.env, "state_dict")
        return {"env": copy.deepcopy(self.env.state_dict()) if exact else None, "seed": self._seed,
                "returns": _copy(self._returns), "lengths": _copy(self._lengths)}

    def restore(self, snapshot: Mapping[str, Any]) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        """Put the copies back in the state of :meth:`snapshot`; return the observations like ``reset``."""
        if not isinstance(snapshot, Mapping) or "env" not in snapshot:
            raise ValueError("this checkpoint's env snapshot is not a batched env's (the run used another "
                             "env.backend); resume with the run's config.yaml")
        if snapshot["env"] is None:  # a simulation without a state dict (VMAS): fresh copies, said once
            warnings.warn("this batched env cannot save its state: the resumed run restarts its env copies from a "
                          "fresh reset (the learner, optimizer, normalizers and counters continue exactly)",
                          stacklevel=2)
            return self.reset(int(snapshot["seed"]) + 1)
        self.env.load_state_dict(snapshot["env"])
        self._returns[:] = np.asarray(snapshot["returns"], np.float64)
        self._lengths[:] = np.asarray(snapshot["lengths"], np.int64)
        self._pending = None
        return self._obs(self.env.observe()), self.env.state() if self.use_state else None

    def render(self, env_index: int = 0) -> np.ndarray | None:
        return None

    def close(self) -> None:
        self._pending = None

    def __enter__(self) -> BatchedVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def _final_state(self, final_obs: Mapping[str, Any]) -> Any:
        """The global state of the final observations: every agent's observation in agent order."""
        position = {a: (g.name, k) for g in self.spec.groups for k, a in enumerate(g.agents)}
        parts = [final_obs[position[a][0]][:, position[a][1]] for a in self.spec.agents]
        if self.tensors:
            import torch

            return torch.cat(parts, dim=-1)
        return np.concatenate(parts, axis=-1)

    def _episodes(self, done: Any, out: Any) -> list[EpisodeStats]:
        """The episodes that ended at this step (``done [E]``), read from the bookkeeping in one pass per array."""
        index = (done.nonzero().flatten() if self.tensors else np.flatnonzero(done)).tolist()
        returns, lengths = self._returns[done].tolist(), self._lengths[done].tolist()
        truncated = [False] * len(index)
        for g in self._agent_index:
            flags = out.truncated[g][done].any(-1).tolist()
            truncated = [a or b for a, b in zip(truncated, flags)]
        agents = self.spec.agents
        return [EpisodeStats(env_index=i, returns=dict(zip(agents, r)), length=int(n), info={"truncated": float(t)})
                for i, r, n, t in zip(index, returns, lengths, truncated)]


def _copy(x: Any) -> Any:
    """A copy of a numpy array or a torch tensor (same kind, same device)."""
    return x.copy() if isinstance(x, np.ndarray) else x.clone()


def _zeros_like(x: Any) -> Any:
    return np.zeros_like(x) if isinstance(x, np.ndarray) else x.new_zeros(x.shape)


def _where_ended(ended: Any, final_obs: Any) -> Any:
    """``final_obs [E, A, ...]`` where ``ended [E, A]``, zeros elsewhere, float32 (numpy or torch, as given)."""
    if isinstance(final_obs, np.ndarray):
        return np.where(ended[..., None], final_obs, 0.0).astype(np.float32)
    import torch

    return torch.where(ended[..., None], final_obs, 0.0).to(torch.float32)
