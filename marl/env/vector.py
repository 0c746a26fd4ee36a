"""Vector envs: E copies of one adapter, stepped in-process or in worker processes.

Arrays are ``[E, A, ...]`` (see :mod:`marl.types`). The copies are split into
contiguous **chunks**; ``send(chunk, actions)`` / ``recv(chunk)`` step one chunk, so
a trainer can run policy inference on one chunk while another steps::

    vec.send(0, act0); vec.send(1, act1)        # both chunks step in their workers
    out0 = vec.recv(0); act0 = policy(out0.obs)  # chunk 1 is still stepping
    vec.send(0, act0); out1 = vec.recv(1); ...

``step(actions)`` is send-all-then-recv-all. Returned arrays are fresh copies the
caller owns. Seeding: ``reset(seed)`` gives copy ``i`` the seed
``seeds_for(seed, E)[i]`` whatever the backend and chunking; auto-resets pass no
seed (each env keeps its seeded RNG).

Goal envs: the achieved goals travel with the observations
(``GroupObs.achieved_goal`` after ``reset`` / ``restore`` / ``recv``,
``GroupTransition.final_achieved_goal`` for ``final_obs``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np

from marl.env.adapters import Adapter
from marl.env.chunks import EnvWorkerError, chunk_slices, concat_steps
from marl.env.subproc import SubprocVectorEnv
from marl.env.sync import SyncVectorEnv
from marl.seeding import eval_seeds, seeds_for
from marl.types import EnvSpec, GroupObs, VecStep

__all__ = [
    "EnvWorkerError",
    "SubprocVectorEnv",
    "SyncVectorEnv",
    "VectorEnv",
    "chunk_slices",
    "concat_steps",
    "eval_seeds",
    "make_vector_env",
    "seeds_for",
]


class VectorEnv(Protocol):
    """E env copies in ``num_chunks`` contiguous chunks (see the module docstring)."""

    spec: EnvSpec
    num_envs: int
    num_chunks: int

    def reset(self, seed: int | Sequence[int]) -> tuple[dict[str, GroupObs], np.ndarray | None]: ...
    def snapshot(self) -> Any:
        """Plain data (lists, dicts, arrays) that :meth:`restore` turns back into the copies' exact state
        (per copy an :class:`EnvSnapshot` for adapters; one state dict for a batched env)."""
    def restore(self, snapshots: Any) -> tuple[dict[str, GroupObs], np.ndarray | None]: ...
    def send(self, chunk: int, actions: Mapping[str, np.ndarray]) -> None: ...
    def recv(self, chunk: int) -> VecStep: ...
    def step(self, actions: Mapping[str, np.ndarray]) -> VecStep: ...
    def chunk_slice(self, chunk: int) -> slice: ...
    def render(self, env_index: int = 0) -> np.ndarray | None: ...
    def close(self) -> None: ...


def make_vector_env(
    factory: Callable[[], Adapter],
    num_envs: int,
    backend: Literal["sync", "subprocess"] = "sync",
    num_workers: int | None = None,
) -> SyncVectorEnv | SubprocVectorEnv:
    # A batched env (marl.env.batched.BatchedVectorEnv) wraps one simulation object, not an adapter
    # factory: marl.env.make.vector_env builds it for env.backend=batched.
    """E copies of ``factory()`` as a vector env.

    Args:
        factory: picklable zero-argument callable returning one adapter.
        num_envs: env copies E.
        backend: ``"sync"`` (in-process) or ``"subprocess"`` (worker processes).
        num_workers: chunks: worker processes for ``"subprocess"`` (default
            ``min(E, cpu count)``); in-process chunks for ``"sync"`` (default 1).
    """
    if backend == "sync":
        return SyncVectorEnv(factory, num_envs, num_workers or 1)
    if backend == "subprocess":
        return SubprocVectorEnv(factory, num_envs, num_workers)
    raise ValueError(f"backend must be 'sync' or 'subprocess', got {backend!r}")
