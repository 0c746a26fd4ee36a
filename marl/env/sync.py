"""The in-process vector-env backend: E adapters stepped one after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from marl.env.adapters import Adapter, EnvSnapshot
from marl.env.buffers import StepBuffers, allocate_buffers, buffer_fields
from marl.env.chunks import (
    ChunkedBase,
    action_fields,
    check_actions,
    chunk_slices,
    copy_buffers,
    copy_rows,
    reset_block,
    restore_block,
    step_block,
    to_vec_step,
)
from marl.seeding import copy_seeds
from marl.types import GroupObs, VecStep


class SyncVectorEnv(ChunkedBase):
    """E adapters stepped one after another in this process.

    Args:
        factory: zero-argument callable returning one adapter.
        num_envs: number of env copies E.
        num_chunks: contiguous chunks for ``send`` / ``recv`` (default 1); chunking here
            only exercises the overlap code path, it runs nothing in parallel.
    """

    def __init__(self, factory: Callable[[], Adapter], num_envs: int, num_chunks: int = 1):
        self._slices = chunk_slices(num_envs, num_chunks)
        self._adapters: list[Adapter] = []
        try:
            for _ in range(num_envs):
                self._adapters.append(factory())
        except Exception:
            self.close()
            raise
        self.spec = self._adapters[0].spec
        self._fields = buffer_fields(self.spec)
        self.num_envs, self.num_chunks = num_envs, num_chunks
        self._results: list[VecStep | None] = [None] * num_chunks
        # Per chunk, buffers the adapters write into and their per-copy views, made once (as a
        # worker process does with its shared memory); each result is a copy of them.
        self._actions: list[dict[str, np.ndarray]] = []
        self._bufs: list[StepBuffers] = []
        self.copy_rows: list[tuple[list[dict], list[StepBuffers]]] = []
        for sl in self._slices:
            n = sl.stop - sl.start
            actions = {name.split("/")[0]: np.zeros((n, *shape), dtype)
                       for name, shape, dtype in action_fields(self.spec)}
            bufs = allocate_buffers(self.spec, (n,), self._fields)
            self._actions.append(actions)
            self._bufs.append(bufs)
            self.copy_rows.append(copy_rows(actions, bufs, n))

    def reset(self, seed: int | Sequence[int]) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        seeds = copy_seeds(seed, self.num_envs)
        self._results = [None] * self.num_chunks
        out = allocate_buffers(self.spec, (self.num_envs,))
        reset_block(self._adapters, 0, seeds, out)
        return out.split()[0], out.state

    def snapshot(self) -> list[EnvSnapshot]:
        """Per-copy replay records of the current episodes (see :class:`EnvSnapshot`)."""
        return [a.snapshot() for a in self._adapters]

    def restore(self, snapshots: Sequence[EnvSnapshot]) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        """Put every copy back in the state of ``snapshots``; return the observations like ``reset``."""
        if len(snapshots) != self.num_envs:
            raise ValueError(f"restore got {len(snapshots)} snapshots for {self.num_envs} env copies")
        self._results = [None] * self.num_chunks
        out = allocate_buffers(self.spec, (self.num_envs,))
        restore_block(self._adapters, 0, snapshots, out)
        return out.split()[0], out.state

    def send(self, chunk: int, actions: Mapping[str, np.ndarray]) -> None:
        sl = self.chunk_slice(chunk)
        if self._results[chunk] is not None:
            raise RuntimeError(f"chunk {chunk} was sent actions twice; recv({chunk}) its result first")
        check_actions(self.spec, actions, sl.stop - sl.start)
        for g, a in actions.items():
            self._actions[chunk][g][...] = a
        episodes = step_block(self._adapters[sl], sl.start, *self.copy_rows[chunk])
        self._results[chunk] = to_vec_step(copy_buffers(self._bufs[chunk]), episodes)

    def recv(self, chunk: int) -> VecStep:
        self.chunk_slice(chunk)
        result, self._results[chunk] = self._results[chunk], None
        if result is None:
            raise RuntimeError(f"recv({chunk}) without a pending send({chunk}, actions)")
        return result

    def render(self, env_index: int = 0) -> np.ndarray | None:
        return self._adapters[env_index].render()

    def close(self) -> None:
        for adapter in self._adapters:
            adapter.close()
        self._adapters = []
