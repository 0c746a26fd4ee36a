"""What both vector-env backends share: chunks of env copies, action checks, per-copy stepping, results.

The copies ``0..E-1`` are split into contiguous **chunks** (:func:`chunk_slices`); a backend
steps a chunk at a time (``send`` / ``recv``), so a trainer can act on one chunk while another
steps. A failure in one copy is raised as :class:`EnvWorkerError` naming the copy.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from marl.env.adapters import Adapter, EnvSnapshot
from marl.env.buffers import GroupBuffers, StepBuffers
from marl.types import EnvSpec, EpisodeStats, GroupObs, GroupTransition, VecStep


class EnvWorkerError(RuntimeError):
    """An env copy raised (in this process or in a worker), or a worker died.

    The original exception is the ``__cause__`` in-process; from a worker, its
    formatted traceback is in the message and in ``worker_traceback``.

    Attributes:
        env_index: global index of the failing env copy, or ``None`` when a whole
            worker died.
        worker_traceback: the formatted traceback from the worker, or ``""``.
    """

    def __init__(self, message: str, env_index: int | None = None, worker_traceback: str = ""):
        super().__init__(message)
        self.env_index = env_index
        self.worker_traceback = worker_traceback


def chunk_slices(num_envs: int, num_chunks: int) -> list[slice]:
    """Contiguous blocks of env copies; sizes differ by at most one (larger blocks first)."""
    if not 1 <= num_chunks <= num_envs:
        raise ValueError(f"num_chunks / num_workers must be in [1, num_envs={num_envs}], got {num_chunks}")
    base, extra = divmod(num_envs, num_chunks)
    bounds = np.cumsum([0] + [base + (c < extra) for c in range(num_chunks)])
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def action_fields(spec: EnvSpec) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    return [(f"{g.name}/action", (g.n_agents, *g.action_shape), g.action_dtype) for g in spec.groups]


def check_actions(spec: EnvSpec, actions: Mapping[str, np.ndarray], n: int) -> None:
    for g in spec.groups:
        if g.name not in actions:
            raise KeyError(
                f"no actions for group {g.name!r}; pass actions for groups {[x.name for x in spec.groups]}"
            )
        shape = np.shape(actions[g.name])
        if shape != (n, g.n_agents, *g.action_shape):
            raise ValueError(
                f"actions[{g.name!r}] has shape {shape}, expected [E_chunk, A, *action_shape] = "
                f"{(n, g.n_agents, *g.action_shape)}"
            )


def to_vec_step(bufs: StepBuffers, episodes: list[EpisodeStats]) -> VecStep:
    obs, transition = bufs.split()
    return VecStep(
        obs=obs,
        transition=transition,
        state=bufs.state,
        final_state=bufs.final_state,
        episodes=episodes,
    )


def copy_buffers(bufs: StepBuffers) -> StepBuffers:
    """A copy of every array of ``bufs`` (results must outlive the next step into ``bufs``)."""

    def copy(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a.copy()

    return StepBuffers(
        {g: GroupBuffers(*(copy(a) for a in b)) for g, b in bufs.groups.items()},
        copy(bufs.state),
        copy(bufs.final_state),
    )


def each_copy(start: int, count: int, call: Callable[[int], Any]) -> list[Any]:
    """``[call(j) for j < count]`` for env copies ``start + j``; a failure names the copy."""
    results = []
    for j in range(count):
        try:
            results.append(call(j))
        except Exception as err:
            raise EnvWorkerError(
                f"env copy {start + j} raised {type(err).__name__}: {err}", start + j, traceback.format_exc()
            ) from err
    return results


def copy_rows(
    actions: Mapping[str, np.ndarray], out: StepBuffers, n: int
) -> tuple[list[dict], list[StepBuffers]]:
    """Per-copy views: actions ``{group: [A, ...]}`` and buffers of copy ``j`` of ``[n, ...]`` arrays."""
    return [{g: a[j] for g, a in actions.items()} for j in range(n)], [out.at(j) for j in range(n)]


def step_block(
    adapters: list[Adapter], start: int, actions: list[dict], out: list[StepBuffers]
) -> list[EpisodeStats]:
    """Step adapter ``j`` (copy ``start + j``) with ``actions[j]`` into ``out[j]``; finished episodes."""
    done = each_copy(start, len(adapters), lambda j: adapters[j].step_into(actions[j], out[j]))
    return [e._replace(env_index=start + j) for j, e in enumerate(done) if e is not None]


def reset_block(adapters: list[Adapter], start: int, seeds: list[int], out: StepBuffers) -> None:
    each_copy(start, len(adapters), lambda j: adapters[j].reset_into(seeds[j], out.at(j)))


def restore_block(adapters: list[Adapter], start: int, snapshots: Sequence[EnvSnapshot], out: StepBuffers) -> None:
    each_copy(start, len(adapters), lambda j: adapters[j].restore_into(EnvSnapshot(*snapshots[j]), out.at(j)))


class ChunkedBase:
    """Chunk bookkeeping and ``step`` as send-all / recv-all."""

    spec: EnvSpec
    num_envs: int
    num_chunks: int
    _slices: list[slice]

    def chunk_slice(self, chunk: int) -> slice:
        if not 0 <= chunk < self.num_chunks:
            raise IndexError(f"chunk {chunk} out of range [0, {self.num_chunks})")
        return self._slices[chunk]

    def send(self, chunk: int, actions: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    def recv(self, chunk: int) -> VecStep:
        raise NotImplementedError

    def step(self, actions: Mapping[str, np.ndarray]) -> VecStep:
        check_actions(self.spec, actions, self.num_envs)
        for c, sl in enumerate(self._slices):
            self.send(c, {g: a[sl] for g, a in actions.items()})
        return concat_steps([self.recv(c) for c in range(self.num_chunks)])

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


def concat_steps(parts: list[VecStep]) -> VecStep:
    """Chunks' results as one ``[E, ...]`` result (the one chunk itself when alone)."""
    if len(parts) == 1:
        return parts[0]

    def cat(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        return None if arrays[0] is None else np.concatenate(arrays)

    first = parts[0]
    obs = {g: GroupObs(*(cat([p.obs[g][i] for p in parts]) for i in range(len(GroupObs._fields))))
           for g in first.obs}
    trans = {
        g: GroupTransition(*(cat([p.transition[g][i] for p in parts]) for i in range(len(GroupTransition._fields))))
        for g in first.transition
    }
    return VecStep(
        obs,
        trans,
        cat([p.state for p in parts]),
        cat([p.final_state for p in parts]),
        [e for p in parts for e in p.episodes],
    )
