"""The Ray vector-env backend (``runtime=ray``): chunks of env copies stepped by Ray actors, inference here.

Each rollout worker is a Ray actor (:class:`EnvWorker`) holding one contiguous chunk of the env
copies, built in-process from the same picklable adapter factory the subprocess backend uses. The
learner keeps the policy and acts for every copy (central inference, as in SEED RL), so a worker
only steps envs: one actor call per chunk and vector step carries the actions in and one memory
block (every array of the step, laid out as the subprocess backend's shared memory) plus the
finished episodes out. ``send`` / ``recv`` per chunk let ``env.overlap`` act on one worker's copies
while the others step. Copy ``i`` is reset with ``seeds_for(seed, E)[i]`` as on every backend, so a
run on W workers x E/W copies matches a local run with E copies bit for bit (see docs/distributed.md).

Faults:

* An env that raises in a worker: :class:`EnvWorkerError` with the env's traceback, the copy
  index, the worker and its node.
* A worker process or its node dies: the worker is rebuilt (a new actor, up to
  ``max_restarts`` times per worker) and its copies start new episodes from seeds derived from the
  run seed, the worker and its restart count (:func:`restart_seeds`), with a warning. The vector
  step in progress is unusable, so ``recv`` raises :class:`WorkerLost` carrying every copy's
  current observations: PPO discards its rollout and collects it again, off-policy training
  stores nothing of that step.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from marl.env.adapters import Adapter, EnvSnapshot
from marl.env.buffers import Layout, block_layout, block_views, buffer_fields, buffers_from_arrays
from marl.env.chunks import (
    ChunkedBase,
    EnvWorkerError,
    action_fields,
    check_actions,
    chunk_slices,
    concat_steps,
    copy_rows,
    each_copy,
    reset_block,
    restore_block,
    step_block,
    to_vec_step,
)
from marl.ray_runtime import remote_class
from marl.seeding import copy_seeds
from marl.types import EnvSpec, GroupObs, VecStep

Obs = tuple[dict[str, GroupObs], np.ndarray | None]
"""Observations of env copies ``[E, A, ...]`` per group and the global state ``[E, S]`` (or ``None``)."""


class WorkerLost(RuntimeError):
    """Workers died during a vector step and were rebuilt; the step is lost, the env copies go on.

    Attributes:
        workers: indices of the rebuilt workers.
        obs, state: the current observations and state of every env copy ``[E, ...]`` (the rebuilt
            workers' copies just reset), for :meth:`marl.loop.EnvLoop.set_obs`.
    """

    def __init__(self, message: str, workers: list[int], obs: dict[str, GroupObs], state: np.ndarray | None):
        super().__init__(message)
        self.workers, self.obs, self.state = workers, obs, state


def restart_seeds(seed: int | Sequence[int], worker: int, restarts: int, n: int) -> list[int]:
    """Seeds of a rebuilt worker's ``n`` copies: from ``SeedSequence([*seed, 2, worker, restarts])``, below ``2**31``.

    Deterministic in the run seed (the last ``reset`` argument), the worker and its restart count, and
    from another stream than :func:`marl.seeding.seeds_for` (entropy word 2; evaluation uses 1).
    """
    entropy = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    words = np.random.SeedSequence([*entropy, 2, worker, restarts]).generate_state(n, np.uint32)
    return [int(w) >> 1 & ~1 for w in words]


# --------------------------------------------------------------------------- the worker (a Ray actor)
Reply = tuple  # ("ok", value) or ("error", env_index, message, traceback)


def _guarded(method: Callable[..., Any]) -> Callable[..., Reply]:
    """Run an actor method; an exception comes back as a reply naming the env copy (never kills the actor)."""

    @functools.wraps(method)
    def run(self: EnvWorker, *args: Any) -> Reply:
        try:
            return ("ok", method(self, *args))
        except Exception as err:  # noqa: BLE001 - reported to the learner, which decides
            import traceback

            index = err.env_index if isinstance(err, EnvWorkerError) else None
            tb = err.worker_traceback if isinstance(err, EnvWorkerError) else traceback.format_exc()
            return ("error", index, str(err), tb)

    return run


class EnvWorker:
    """Env copies ``start .. start+count-1`` in one process; every array of a step in one block.

    Plain class: :func:`marl.ray_runtime.remote_class` wraps it with ``ray.remote`` (so this module imports
    without Ray).
    """

    def __init__(self, factory: Callable[[], Adapter], start: int, count: int) -> None:
        self.factory, self.start, self.count = factory, start, count
        self.adapters: list[Adapter] = []

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    @_guarded
    def build(self) -> EnvSpec:
        """Build the copies and the step block; the spec."""
        self.adapters = each_copy(self.start, self.count, lambda _: self.factory())
        spec = self.adapters[0].spec
        layout, size = block_layout(buffer_fields(spec) + action_fields(spec), self.count)
        self.block = np.zeros(size, np.uint8)
        arrays = block_views(self.block, layout)  # type: ignore[arg-type]  # a numpy array is a buffer
        self.out = buffers_from_arrays(spec, arrays)
        self.actions = {n.split("/")[0]: a for n, a in arrays.items() if n.endswith("/action")}
        self.rows = copy_rows(self.actions, self.out, self.count)
        return spec

    @_guarded
    def reset(self, seeds: list[int]) -> np.ndarray:
        reset_block(self.adapters, self.start, seeds, self.out)
        return self.block

    @_guarded
    def restore(self, snapshots: list[tuple]) -> np.ndarray:
        restore_block(self.adapters, self.start, [EnvSnapshot(*s) for s in snapshots], self.out)
        return self.block

    @_guarded
    def snapshot(self) -> list[tuple]:
        return [tuple(a.snapshot()) for a in self.adapters]

    @_guarded
    def step(self, actions: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list]:
        for g, a in actions.items():
            self.actions[g][...] = a
        return self.block, step_block(self.adapters, self.start, *self.rows)  # serialized before the next call

    @_guarded
    def render(self, env_index: int) -> np.ndarray | None:
        return self.adapters[env_index - self.start].render()

    def close(self) -> None:
        for adapter in self.adapters:
            with contextlib.suppress(Exception):
                adapter.close()
        self.adapters = []



# --------------------------------------------------------------------------- the vector env
class _Workers:
    """The actors and the Ray connection; ``shutdown`` (idempotent) closes and kills every actor, then disconnects."""

    def __init__(self, connection: Any) -> None:
        self.actors: list[Any] = []
        self.connection = connection

    def shutdown(self, timeout: float = 3.0) -> None:
        actors, self.actors = self.actors, []
        if actors:
            import ray

            with contextlib.suppress(Exception):  # let envs close (simulator processes), briefly
                ray.wait([a.close.remote() for a in actors], num_returns=len(actors), timeout=timeout)
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class RayVectorEnv(ChunkedBase):
    """E env copies on ``num_workers`` Ray actors; each actor owns one contiguous chunk (a VectorEnv).

    Args:
        factory: picklable zero-argument callable returning one adapter (:func:`marl.env.make.env_factory`).
        num_envs: env copies E.
        num_workers: Ray actors = chunks (:func:`marl.env.chunks.chunk_slices`).
        connection: a :class:`marl.ray_runtime.RayConnection` this env closes with it, or ``None`` (the
            caller's own ``ray.init``).
        cpus_per_worker: CPUs each actor reserves.
        max_restarts: rebuilds of each worker after its process or node died; one more death raises
            :class:`EnvWorkerError`.
        start_timeout_s: seconds workers may take to be placed and to build their copies.

    Actors are spread over the cluster's nodes (``SPREAD``). ``close`` closes the envs, kills every
    actor and closes the connection; it is idempotent and also runs at garbage collection.
    """

    def __init__(
        self,
        factory: Callable[[], Adapter],
        num_envs: int,
        num_workers: int,
        *,
        connection: Any = None,
        cpus_per_worker: float = 1.0,
        max_restarts: int = 3,
        start_timeout_s: float = 120.0,
    ) -> None:
        import ray

        self._ray = ray
        # A dead actor, or its reply lost with its node (replies above ~100 kB wait in that node's object store).
        self._died = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)
        self._slices = chunk_slices(num_envs, num_workers)
        self.num_envs, self.num_chunks = num_envs, num_workers
        self._factory, self._cpus, self._max_restarts = factory, cpus_per_worker, max_restarts
        self._start_timeout = start_timeout_s
        self._workers = _Workers(connection)
        self._finalizer = weakref.finalize(self, self._workers.shutdown)
        self._pending: list[Any] = [None] * num_workers
        self._restarts = [0] * num_workers
        self._seed: int | list[int] = 0
        self._current: list[Obs | None] = [None] * num_workers  # last observations of each chunk (read-only)
        self._lost: list[int] = []  # rebuilt since the caller last had every copy's observations
        try:
            self._workers.actors = [self._spawn(w) for w in range(num_workers)]
            specs = self._build(list(range(num_workers)))
            self.spec = specs[0]
            self._layouts: list[Layout] = [
                block_layout(buffer_fields(self.spec) + action_fields(self.spec), sl.stop - sl.start)[0]
                for sl in self._slices
            ]
        except BaseException:
            self.close()
            raise

    # -- workers -----------------------------------------------------------------------------
    def _spawn(self, w: int) -> Any:
        sl = self._slices[w]
        return remote_class(EnvWorker).options(num_cpus=self._cpus, scheduling_strategy="SPREAD", max_restarts=0,
                                      max_task_retries=0).remote(self._factory, sl.start, sl.stop - sl.start)

    def _worker_name(self, w: int) -> str:
        sl = self._slices[w]
        return f"ray worker {w} (env copies {sl.start}..{sl.stop - 1})"

    def _build(self, workers: list[int]) -> list[EnvSpec]:
        """Build the copies of ``workers`` (placement included), within ``start_timeout_s``."""
        ray = self._ray
        refs = [self._workers.actors[w].build.remote() for w in workers]
        _, waiting = ray.wait(refs, num_returns=len(refs), timeout=self._start_timeout)
        if waiting:
            free = ray.available_resources().get("CPU", 0.0)
            names = ", ".join(self._worker_name(workers[refs.index(r)]) for r in waiting)
            raise EnvWorkerError(f"{names} not running after ray.start_timeout_s={self._start_timeout:g} s: the "
                                 f"cluster has {free:g} free CPUs and each worker asks ray.cpus_per_worker="
                                 f"{self._cpus:g}; add nodes, lower ray.cpus_per_worker or ray.num_workers")
        return [self._value(w, self._get(w, r)) for w, r in zip(workers, refs, strict=True)]

    def _get(self, w: int, ref: Any) -> Reply:
        """The reply of worker ``w``'s call ``ref``; raises ``RayActorError`` if the worker died."""
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as err:  # a bug outside the guarded methods
            raise EnvWorkerError(f"{self._worker_name(w)} failed: {err}") from None

    def _value(self, w: int, reply: Reply) -> Any:
        if reply[0] == "error":
            _, index, message, tb = reply
            raise EnvWorkerError(f"{message} (in {self._worker_name(w)} on node {self._node(w)})\n"
                                 f"--- worker traceback ---\n{tb}", index, tb)
        return reply[1]

    def _node(self, w: int) -> str:
        with contextlib.suppress(Exception):
            return self._ray.get(self._workers.actors[w].node_id.remote(), timeout=5)[:12]
        return "?"

    def _restart(self, w: int, cause: BaseException) -> None:
        """Replace dead worker ``w`` by a new actor whose copies start new episodes; warn."""
        sl = self._slices[w]
        while True:
            self._restarts[w] += 1
            n = self._restarts[w]
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            if n > self._max_restarts:
                raise EnvWorkerError(f"{self._worker_name(w)} died {n} times (ray.max_restarts="
                                     f"{self._max_restarts}); last: {first}")
            with contextlib.suppress(Exception):
                self._ray.kill(self._workers.actors[w], no_restart=True)
            self._workers.actors[w] = self._spawn(w)
            self._pending[w] = None
            try:
                self._build([w])
                seeds = restart_seeds(self._seed, w, n, sl.stop - sl.start)
                block = self._value(w, self._get(w, self._workers.actors[w].reset.remote(seeds)))
                break
            except self._died as err:  # the new one died too (its node is going away)
                cause = err
        self._current[w] = self._obs(w, block)
        if w not in self._lost:
            self._lost.append(w)
        warnings.warn(f"{self._worker_name(w)} was lost ({first}); rebuilt it on a new process (restart {n} of "
                      f"ray.max_restarts={self._max_restarts}); its env copies start new episodes and the "
                      "vector step in progress is discarded", RuntimeWarning, stacklevel=3)

    def _call(self, w: int, method: str, *args: Any) -> Any:
        """Call ``method`` on worker ``w`` and wait; a dead worker is rebuilt and the call repeated."""
        while True:
            ref = getattr(self._workers.actors[w], method).remote(*args)
            try:
                return self._value(w, self._get(w, ref))
            except self._died as err:
                self._restart(w, err)

    # -- blocks ------------------------------------------------------------------------------
    def _arrays(self, w: int, block: np.ndarray) -> dict[str, np.ndarray]:
        return block_views(block, self._layouts[w])  # type: ignore[arg-type]

    def _obs(self, w: int, block: np.ndarray) -> Obs:
        step = to_vec_step(buffers_from_arrays(self.spec, self._arrays(w, block)), [])
        return step.obs, step.state

    def _all_obs(self) -> Obs:
        """Every copy's current observations, as fresh arrays."""
        parts = [VecStep(o, {}, s, None, []) for o, s in self._current]  # type: ignore[misc]
        first = concat_steps(parts) if len(parts) > 1 else parts[0]
        obs = {g: GroupObs(*(None if a is None else np.array(a) for a in o)) for g, o in first.obs.items()}
        return obs, None if first.state is None else np.array(first.state)

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("the vector env is closed")

    def _drain(self) -> None:
        """Wait for every step in flight (their results are dropped, their observations kept)."""
        for w, ref in enumerate(self._pending):
            if ref is None:
                continue
            self._pending[w] = None
            try:
                block, _ = self._value(w, self._get(w, ref))
                self._current[w] = self._obs(w, block)
            except self._died as err:
                self._restart(w, err)

    def _lost_step(self) -> WorkerLost:
        self._drain()
        lost, self._lost = self._lost, []
        obs, state = self._all_obs()
        names = ", ".join(self._worker_name(w) for w in lost)
        return WorkerLost(f"{names} lost during a vector step; rebuilt", lost, obs, state)

    # -- VectorEnv ---------------------------------------------------------------------------
    def reset(self, seed: int | Sequence[int]) -> Obs:
        self._check_open()
        seeds = copy_seeds(seed, self.num_envs)
        self._seed = int(seed) if isinstance(seed, (int, np.integer)) else seeds
        self._drain()
        refs = [a.reset.remote(seeds[sl]) for a, sl in zip(self._workers.actors, self._slices, strict=True)]
        for w, ref in enumerate(refs):
            try:
                block = self._value(w, self._get(w, ref))
            except self._died as err:
                self._restart(w, err)
                block = self._call(w, "reset", seeds[self._slices[w]])
            self._current[w] = self._obs(w, block)
        self._lost = []
        return self._all_obs()

    def snapshot(self) -> list[EnvSnapshot]:
        """Per-copy replay records of the current episodes (see :class:`EnvSnapshot`)."""
        self._check_open()
        for w in range(self.num_chunks):
            if self._pending[w] is not None:
                raise RuntimeError(f"snapshot() with a step in flight on chunk {w}; recv it first")
        # deep copies: what Ray hands back is read-only, and the caller owns the snapshot
        return [EnvSnapshot(*copy.deepcopy(s)) for w in range(self.num_chunks) for s in self._call(w, "snapshot")]

    def restore(self, snapshots: Sequence[EnvSnapshot]) -> Obs:
        """Put every copy back in the state of ``snapshots``; return the observations like ``reset``."""
        self._check_open()
        if len(snapshots) != self.num_envs:
            raise ValueError(f"restore got {len(snapshots)} snapshots for {self.num_envs} env copies")
        self._drain()
        for w, sl in enumerate(self._slices):
            self._current[w] = self._obs(w, self._call(w, "restore", [tuple(s) for s in snapshots[sl]]))
        self._lost = []
        return self._all_obs()

    def send(self, chunk: int, actions: Mapping[str, np.ndarray]) -> None:
        self._check_open()
        sl = self.chunk_slice(chunk)
        if self._pending[chunk] is not None:
            raise RuntimeError(f"chunk {chunk} was sent actions twice; recv({chunk}) its result first")
        check_actions(self.spec, actions, sl.stop - sl.start)
        self._pending[chunk] = self._workers.actors[chunk].step.remote({g: np.asarray(a) for g, a in actions.items()})

    def recv(self, chunk: int) -> VecStep:
        """The step of ``chunk``; raises :class:`WorkerLost` (every step in flight drained) when a worker died."""
        self._check_open()
        self.chunk_slice(chunk)
        ref, self._pending[chunk] = self._pending[chunk], None
        if ref is None:
            raise RuntimeError(f"recv({chunk}) without a pending send({chunk}, actions)")
        try:
            block, episodes = self._value(chunk, self._get(chunk, ref))
        except self._died as err:
            self._restart(chunk, err)
            raise self._lost_step() from None
        if self._lost:
            self._current[chunk] = self._obs(chunk, block)
            raise self._lost_step()
        self._current[chunk] = self._obs(chunk, block)  # read-only views of the received block
        mine = np.array(block)  # the caller owns what it gets
        return to_vec_step(buffers_from_arrays(self.spec, self._arrays(chunk, mine)), episodes)

    def render(self, env_index: int = 0) -> np.ndarray | None:
        self._check_open()
        w = next(c for c, sl in enumerate(self._slices) if sl.start <= env_index < sl.stop)
        return self._call(w, "render", env_index)

    def worker_pids(self) -> list[int]:
        """Process ids of the worker actors, in worker order."""
        return self._ray.get([a.pid.remote() for a in self._workers.actors])

    def worker_nodes(self) -> list[str]:
        """Ray node ids of the worker actors, in worker order."""
        return self._ray.get([a.node_id.remote() for a in self._workers.actors])

    def close(self) -> None:
        self._finalizer()

