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

Goal envs: the achieved goals of the latest ``obs`` / ``final_obs`` of a chunk are
read with ``achieved_goals(chunk)`` after ``reset`` or ``recv`` (``VecStep`` has no
field for them).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import multiprocessing.util as mp_util
import os
import signal
import threading
import traceback
import weakref
from collections.abc import Callable, Mapping, Sequence
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from marl.env.adapters import Adapter, EnvSnapshot
from marl.env.buffers import (
    GroupBuffers,
    StepBuffers,
    allocate_buffers,
    block_layout,
    block_views,
    buffer_fields,
    buffers_from_arrays,
)
from marl.types import EnvSpec, EpisodeStats, GroupObs, GroupTransition, VecStep

__all__ = [
    "AchievedGoals",
    "EnvWorkerError",
    "SubprocVectorEnv",
    "SyncVectorEnv",
    "VectorEnv",
    "chunk_slices",
    "eval_seeds",
    "make_vector_env",
    "seeds_for",
]


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


class AchievedGoals(NamedTuple):
    """Achieved goals of a goal env's latest observations, group -> ``[E_chunk, A, G]``."""

    obs: dict[str, np.ndarray]
    final_obs: dict[str, np.ndarray]


class VectorEnv(Protocol):
    """E env copies in ``num_chunks`` contiguous chunks (see the module docstring)."""

    spec: EnvSpec
    num_envs: int
    num_chunks: int

    def reset(self, seed: int | Sequence[int]) -> tuple[dict[str, GroupObs], np.ndarray | None]: ...
    def snapshot(self) -> list[EnvSnapshot]: ...
    def restore(self, snapshots: Sequence[EnvSnapshot]) -> tuple[dict[str, GroupObs], np.ndarray | None]: ...
    def send(self, chunk: int, actions: Mapping[str, np.ndarray]) -> None: ...
    def recv(self, chunk: int) -> VecStep: ...
    def step(self, actions: Mapping[str, np.ndarray]) -> VecStep: ...
    def chunk_slice(self, chunk: int) -> slice: ...
    def achieved_goals(self, chunk: int) -> AchievedGoals | None: ...
    def render(self, env_index: int = 0) -> np.ndarray | None: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Seeds and chunks
# ---------------------------------------------------------------------------------------------


def _distinct_words(entropy: int | list[int], n: int, parity: int) -> list[int]:
    """First ``n`` distinct 32-bit words of a SeedSequence stream, lowest bit forced to ``parity``."""
    if n < 0:
        raise ValueError(f"need a non-negative number of seeds, got {n}")
    seq = np.random.SeedSequence(entropy)
    words: dict[int, None] = {}
    draw = n
    while len(words) < n:
        words = dict.fromkeys(int(w) & ~1 | parity for w in seq.generate_state(draw, np.uint32))
        draw += max(8, n // 8)
    return list(words)[:n]


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def seeds_for(seed: int, n: int) -> list[int]:
    """Training seeds of env copies ``0..n-1``: distinct, reproducible, even 32-bit ints.

    A prefix of a fixed stream, so copy ``i`` gets the same seed for any ``n > i``.
    Derived from ``np.random.SeedSequence(seed)``; ``seed = 0`` is valid.
    """
    return _distinct_words(_check_seed(seed), n, parity=0)


def eval_seeds(seed: int, n: int) -> list[int]:
    """Evaluation seeds: distinct odd 32-bit ints from ``SeedSequence([seed, 1])``.

    Odd, so disjoint from every :func:`seeds_for` seed (those are even).
    """
    return _distinct_words([_check_seed(seed), 1], n, parity=1)


def copy_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """Per-copy reset seeds: ``seeds_for(seed, n)`` for one int, or an explicit list of ``n`` seeds."""
    if isinstance(seed, (int, np.integer)):
        return seeds_for(int(seed), n)
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"reset got {len(seeds)} seeds for {n} env copies")
    return seeds


def chunk_slices(num_envs: int, num_chunks: int) -> list[slice]:
    """Contiguous blocks of env copies; sizes differ by at most one (larger blocks first)."""
    if not 1 <= num_chunks <= num_envs:
        raise ValueError(f"num_chunks / num_workers must be in [1, num_envs={num_envs}], got {num_chunks}")
    base, extra = divmod(num_envs, num_chunks)
    bounds = np.cumsum([0] + [base + (c < extra) for c in range(num_chunks)])
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _action_fields(spec: EnvSpec) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    return [(f"{g.name}/action", (g.n_agents, *g.action_shape), g.action_dtype) for g in spec.groups]


def _check_actions(spec: EnvSpec, actions: Mapping[str, np.ndarray], n: int) -> None:
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


def _to_vec_step(bufs: StepBuffers, episodes: list[EpisodeStats]) -> VecStep:
    obs, transition = bufs.split()
    return VecStep(
        obs=obs,
        transition=transition,
        state=bufs.state,
        final_state=bufs.final_state,
        episodes=episodes,
    )


def _copy_buffers(bufs: StepBuffers) -> StepBuffers:
    """A copy of every array of ``bufs`` (results must outlive the next step into ``bufs``)."""

    def copy(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a.copy()

    return StepBuffers(
        {g: GroupBuffers(*(copy(a) for a in b)) for g, b in bufs.groups.items()},
        copy(bufs.state),
        copy(bufs.final_state),
    )


def _goals_of(bufs: StepBuffers) -> AchievedGoals | None:
    if all(b.achieved_goal is None for b in bufs.groups.values()):
        return None
    return AchievedGoals(
        {g: b.achieved_goal.copy() for g, b in bufs.groups.items() if b.achieved_goal is not None},
        {
            g: b.final_achieved_goal.copy()
            for g, b in bufs.groups.items()
            if b.final_achieved_goal is not None
        },
    )


def _each_copy(start: int, count: int, call: Callable[[int], Any]) -> list[Any]:
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


def _rows(
    actions: Mapping[str, np.ndarray], out: StepBuffers, n: int
) -> tuple[list[dict], list[StepBuffers]]:
    """Per-copy views: actions ``{group: [A, ...]}`` and buffers of copy ``j`` of ``[n, ...]`` arrays."""
    return [{g: a[j] for g, a in actions.items()} for j in range(n)], [out.at(j) for j in range(n)]


def _step_block(
    adapters: list[Adapter], start: int, actions: list[dict], out: list[StepBuffers]
) -> list[EpisodeStats]:
    """Step adapter ``j`` (copy ``start + j``) with ``actions[j]`` into ``out[j]``; finished episodes."""
    done = _each_copy(start, len(adapters), lambda j: adapters[j].step_into(actions[j], out[j]))
    return [e._replace(env_index=start + j) for j, e in enumerate(done) if e is not None]


def _reset_block(adapters: list[Adapter], start: int, seeds: list[int], out: StepBuffers) -> None:
    _each_copy(start, len(adapters), lambda j: adapters[j].reset_into(seeds[j], out.at(j)))


def _restore_block(adapters: list[Adapter], start: int, snapshots: Sequence[EnvSnapshot], out: StepBuffers) -> None:
    _each_copy(start, len(adapters), lambda j: adapters[j].restore_into(EnvSnapshot(*snapshots[j]), out.at(j)))


class _ChunkedBase:
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
        _check_actions(self.spec, actions, self.num_envs)
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
    obs = {g: GroupObs(*(cat([p.obs[g][i] for p in parts]) for i in range(3))) for g in first.obs}
    trans = {
        g: GroupTransition(*(cat([p.transition[g][i] for p in parts]) for i in range(4)))
        for g in first.transition
    }
    return VecStep(
        obs,
        trans,
        cat([p.state for p in parts]),
        cat([p.final_state for p in parts]),
        [e for p in parts for e in p.episodes],
    )


# ---------------------------------------------------------------------------------------------
# In-process backend
# ---------------------------------------------------------------------------------------------


class SyncVectorEnv(_ChunkedBase):
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
        self._goals: list[AchievedGoals | None] = [None] * num_chunks
        # Per chunk, buffers the adapters write into and their per-copy views, made once (as a
        # worker process does with its shared memory); each result is a copy of them.
        self._actions: list[dict[str, np.ndarray]] = []
        self._bufs: list[StepBuffers] = []
        self._rows: list[tuple[list[dict], list[StepBuffers]]] = []
        for sl in self._slices:
            n = sl.stop - sl.start
            actions = {name.split("/")[0]: np.zeros((n, *shape), dtype) for name, shape, dtype in _action_fields(self.spec)}
            bufs = allocate_buffers(self.spec, (n,), self._fields)
            self._actions.append(actions)
            self._bufs.append(bufs)
            self._rows.append(_rows(actions, bufs, n))

    def reset(self, seed: int | Sequence[int]) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        seeds = copy_seeds(seed, self.num_envs)
        self._results = [None] * self.num_chunks
        out = allocate_buffers(self.spec, (self.num_envs,))
        _reset_block(self._adapters, 0, seeds, out)
        for c, sl in enumerate(self._slices):
            self._goals[c] = _goals_of(out.at(sl))
        return {g: GroupObs(b.obs, b.alive, b.action_mask) for g, b in out.groups.items()}, out.state

    def snapshot(self) -> list[EnvSnapshot]:
        """Per-copy replay records of the current episodes (see :class:`EnvSnapshot`)."""
        return [a.snapshot() for a in self._adapters]

    def restore(self, snapshots: Sequence[EnvSnapshot]) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        """Put every copy back in the state of ``snapshots``; return the observations like ``reset``."""
        if len(snapshots) != self.num_envs:
            raise ValueError(f"restore got {len(snapshots)} snapshots for {self.num_envs} env copies")
        self._results = [None] * self.num_chunks
        out = allocate_buffers(self.spec, (self.num_envs,))
        _restore_block(self._adapters, 0, snapshots, out)
        for c, sl in enumerate(self._slices):
            self._goals[c] = _goals_of(out.at(sl))
        return {g: GroupObs(b.obs, b.alive, b.action_mask) for g, b in out.groups.items()}, out.state

    def send(self, chunk: int, actions: Mapping[str, np.ndarray]) -> None:
        sl = self.chunk_slice(chunk)
        if self._results[chunk] is not None:
            raise RuntimeError(f"chunk {chunk} was sent actions twice; recv({chunk}) its result first")
        _check_actions(self.spec, actions, sl.stop - sl.start)
        for g, a in actions.items():
            self._actions[chunk][g][...] = a
        episodes = _step_block(self._adapters[sl], sl.start, *self._rows[chunk])
        out = _copy_buffers(self._bufs[chunk])
        self._goals[chunk] = _goals_of(out)
        self._results[chunk] = _to_vec_step(out, episodes)

    def recv(self, chunk: int) -> VecStep:
        self.chunk_slice(chunk)
        result, self._results[chunk] = self._results[chunk], None
        if result is None:
            raise RuntimeError(f"recv({chunk}) without a pending send({chunk}, actions)")
        return result

    def achieved_goals(self, chunk: int) -> AchievedGoals | None:
        return self._goals[chunk]

    def render(self, env_index: int = 0) -> np.ndarray | None:
        return self._adapters[env_index].render()

    def close(self) -> None:
        for adapter in self._adapters:
            adapter.close()
        self._adapters = []


# ---------------------------------------------------------------------------------------------
# Worker-process backend
# ---------------------------------------------------------------------------------------------


# Stop signals a scheduler sends to every process of the job (Ctrl-C, ``timeout``, ``scancel``,
# ``kill -TERM -PGID``, systemd). Workers leave them to the main process, which finishes its step,
# writes its checkpoint and then closes the workers; a worker that died of one would lose the run.
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def _leave_to_main(signum: int, _frame: object) -> None:
    """Stop-signal handler of a worker: nothing to do, the main process closes the worker.

    A handler rather than ``SIG_IGN``: an ignored signal stays ignored across ``exec``, so programs
    an env launches (a simulator binary) would inherit it; a handler goes back to the default there.
    """


@contextlib.contextmanager
def _stop_signals_blocked() -> Any:
    """Block SIGINT/SIGTERM in this thread while processes are started, as CPython's resource tracker does.

    A started process inherits the mask: a worker is never killed before :func:`_worker` installs
    its handlers, and the forkserver (started by the first ``forkserver`` worker) keeps them blocked
    for its life, so the group's signal does not kill it either (its children would then read as
    dead with exit code 255). A signal that arrives meanwhile stays pending here, so it is not lost.
    """
    # Starting the resource tracker unblocks both signals in this thread (CPython blocks them while
    # it starts the tracker, then unblocks them); starting a worker starts it, so do it first.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker(conn: Connection, factory: Callable[[], Adapter], start: int, count: int) -> None:
    """Worker loop: owns env copies ``start .. start+count-1``; data through shared memory.

    SIGINT and SIGTERM are left to the main process (see :data:`_STOP_SIGNALS`); the worker exits
    when told to close or when its pipe reaches EOF (the main process is gone), so it is never
    orphaned. The main process kills it with SIGKILL if it does not exit in time.
    """
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _leave_to_main)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked since the start (see _stop_signals_blocked)
    adapters: list[Adapter] = []
    shm: SharedMemory | None = None
    try:
        adapters = _each_copy(start, count, lambda _: factory())
        conn.send(("spec", adapters[0].spec))
        _, name, layout = conn.recv()
        shm = SharedMemory(name=name)
        arrays = block_views(shm.buf, layout)
        out = buffers_from_arrays(adapters[0].spec, arrays)
        actions = {n.split("/")[0]: a for n, a in arrays.items() if n.endswith("/action")}
        action_rows, out_rows = _rows(actions, out, count)  # views into shared memory, made once
        while True:
            cmd, arg = conn.recv()
            if cmd == "step":
                conn.send(("ok", _step_block(adapters, start, action_rows, out_rows)))
            elif cmd == "reset":
                _reset_block(adapters, start, arg, out)
                conn.send(("ok", None))
            elif cmd == "restore":
                _restore_block(adapters, start, arg, out)
                conn.send(("ok", None))
            elif cmd == "snapshot":
                conn.send(("ok", [a.snapshot() for a in adapters]))
            elif cmd == "render":
                conn.send(("ok", adapters[arg - start].render()))
            else:
                break
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the main process is gone: exit
        pass
    except BaseException as err:  # report everything; the trainer decides
        index = err.env_index if isinstance(err, EnvWorkerError) else None
        tb = err.worker_traceback if isinstance(err, EnvWorkerError) else traceback.format_exc()
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", index, str(err), tb))
    finally:
        for adapter in adapters:
            with contextlib.suppress(Exception):
                adapter.close()
        arrays = out = actions = action_rows = out_rows = None  # type: ignore[assignment]  # unmap views
        if shm is not None:
            with contextlib.suppress(BufferError):
                shm.close()
        conn.close()


class _Pool:
    """Worker processes, pipes and shared memory; ``shutdown`` is safe to call many times."""

    def __init__(self) -> None:
        self.procs: list[mp.process.BaseProcess] = []
        self.conns: list[Connection] = []
        self.shms: list[SharedMemory] = []
        self.lock = threading.Lock()

    def shutdown(self, timeout: float = 3.0) -> None:
        with self.lock:
            procs, conns, shms = self.procs, self.conns, self.shms
            self.procs, self.conns, self.shms = [], [], []
        for conn in conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("close", None))
        for proc in procs:
            proc.join(timeout)
            if proc.is_alive():  # stuck in an env call; SIGTERM would be ignored (see _worker)
                proc.kill()
                proc.join()
        for conn in conns:
            conn.close()
        for shm in shms:
            with contextlib.suppress(BufferError):  # views still alive here: unlink frees it at unmap
                shm.close()
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()


class SubprocVectorEnv(_ChunkedBase):
    """E env copies in ``num_workers`` processes; each worker owns one contiguous chunk.

    Args:
        factory: picklable zero-argument callable returning one adapter
            (e.g. ``functools.partial(make_adapter, "mpe2.simple_spread_v3", {})``).
        num_envs: number of env copies E.
        num_workers: worker processes = chunks (default ``min(E, cpu count)``).
        start_method: ``"forkserver"`` (default) or ``"spawn"``; ``fork`` is not
            offered (unsafe once torch has started threads).
        timeout: seconds a graceful ``close`` waits before terminating a worker.

    Observations, rewards, flags and actions travel through one shared-memory
    block per worker; the pipe carries only commands and finished episodes. An
    exception in a worker is raised here as :class:`EnvWorkerError` (naming the env
    copy, with the worker traceback); a worker that dies is detected within about
    a second. Either closes every worker. ``close`` is idempotent and also runs at
    garbage collection and interpreter exit.
    """

    def __init__(
        self,
        factory: Callable[[], Adapter],
        num_envs: int,
        num_workers: int | None = None,
        start_method: Literal["forkserver", "spawn"] = "forkserver",
        timeout: float = 3.0,
    ):
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be 'forkserver' or 'spawn', got {start_method!r}")
        workers = min(num_envs, os.cpu_count() or 1) if num_workers is None else num_workers
        self._slices = chunk_slices(num_envs, workers)
        self.num_envs, self.num_chunks = num_envs, workers
        self._pool = _Pool()
        self._finalizer = weakref.finalize(self, self._pool.shutdown, timeout)
        # At interpreter exit multiprocessing terminate()s daemon workers and joins them without a
        # timeout; workers ignore SIGTERM, so close them first (exit priority >= 0 runs before that).
        mp_util.Finalize(self, self._pool.shutdown, (timeout,), exitpriority=10)
        self._pending: list[str | None] = [None] * workers
        self._arrays: list[dict[str, np.ndarray]] = []
        ctx = mp.get_context(start_method)
        try:
            for w, sl in enumerate(self._slices):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker,
                    args=(child, factory, sl.start, sl.stop - sl.start),
                    name=f"marl-env-{w}",
                    daemon=True,
                )
                with _stop_signals_blocked():
                    proc.start()
                child.close()
                self._pool.procs.append(proc)
                self._pool.conns.append(parent)
            for w, sl in enumerate(self._slices):
                self._pending[w] = "spec"
                spec = self._wait(w)
                if w == 0:
                    self.spec = spec
                layout, size = block_layout(
                    buffer_fields(self.spec) + _action_fields(self.spec), sl.stop - sl.start
                )
                shm = SharedMemory(create=True, size=size)
                self._pool.shms.append(shm)
                self._arrays.append(block_views(shm.buf, layout))
                self._pool.conns[w].send(("attach", shm.name, layout))
        except BaseException:
            self.close()
            raise

    # -- messaging ---------------------------------------------------------------------------

    def _fail(self, error: EnvWorkerError) -> EnvWorkerError:
        self.close()
        return error

    def _wait(self, w: int) -> Any:
        """Reply of worker ``w`` to its pending command; raises if it failed or died."""
        conn, proc = self._pool.conns[w], self._pool.procs[w]
        while True:
            try:
                if conn.poll(0.5):
                    reply = conn.recv()
                    break
            except (EOFError, OSError):
                reply = None
                break
            if not proc.is_alive():
                reply = None
                break
        self._pending[w] = None
        if reply is None:
            raise self._dead(w)
        if reply[0] == "error":
            _, index, message, tb = reply
            where = self._worker_name(w)
            raise self._fail(
                EnvWorkerError(f"{message} (in {where})\n--- worker traceback ---\n{tb}", index, tb)
            )
        return reply[1]

    def _worker_name(self, w: int) -> str:
        sl = self._slices[w]
        return f"worker {w} (env copies {sl.start}..{sl.stop - 1})"

    def _dead(self, w: int) -> EnvWorkerError:
        proc = self._pool.procs[w]
        proc.join(1.0)
        return self._fail(
            EnvWorkerError(f"{self._worker_name(w)} died (exit code {proc.exitcode}) without replying")
        )

    def _command(self, w: int, cmd: str, arg: Any = None) -> None:
        if self._pending[w] is not None:
            raise RuntimeError(f"chunk {w} has a pending {self._pending[w]!r}; recv({w}) it first")
        try:
            self._pool.conns[w].send((cmd, arg))
        except (OSError, ValueError):
            raise self._dead(w) from None
        self._pending[w] = cmd

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("the vector env is closed")

    def _copy(self, w: int) -> StepBuffers:
        arrays = self._arrays[w]
        return buffers_from_arrays(
            self.spec, {n: a.copy() for n, a in arrays.items() if not n.endswith("/action")}
        )

    # -- VectorEnv -----------------------------------------------------------------------------

    def reset(self, seed: int | Sequence[int]) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        self._check_open()
        seeds = copy_seeds(seed, self.num_envs)
        for w, sl in enumerate(self._slices):
            if self._pending[w] == "step":
                self._wait(w)
            self._command(w, "reset", seeds[sl])
        for w in range(self.num_chunks):
            self._wait(w)
        first = concat_steps([_to_vec_step(self._copy(w), []) for w in range(self.num_chunks)])
        return first.obs, first.state

    def snapshot(self) -> list[EnvSnapshot]:
        """Per-copy replay records of the current episodes (see :class:`EnvSnapshot`)."""
        self._check_open()
        out: list[EnvSnapshot] = []
        for w in range(self.num_chunks):
            if self._pending[w] == "step":
                raise RuntimeError(f"snapshot() with a step in flight on chunk {w}; recv it first")
            self._command(w, "snapshot")
            out.extend(EnvSnapshot(*x) for x in self._wait(w))
        return out

    def restore(self, snapshots: Sequence[EnvSnapshot]) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        """Put every copy back in the state of ``snapshots``; return the observations like ``reset``."""
        self._check_open()
        if len(snapshots) != self.num_envs:
            raise ValueError(f"restore got {len(snapshots)} snapshots for {self.num_envs} env copies")
        for w, sl in enumerate(self._slices):
            if self._pending[w] == "step":
                self._wait(w)
            self._command(w, "restore", [tuple(x) for x in snapshots[sl]])
        for w in range(self.num_chunks):
            self._wait(w)
        first = concat_steps([_to_vec_step(self._copy(w), []) for w in range(self.num_chunks)])
        return first.obs, first.state

    def send(self, chunk: int, actions: Mapping[str, np.ndarray]) -> None:
        self._check_open()
        sl = self.chunk_slice(chunk)
        if self._pending[chunk] is not None:
            raise RuntimeError(f"chunk {chunk} was sent actions twice; recv({chunk}) its result first")
        _check_actions(self.spec, actions, sl.stop - sl.start)
        for g, a in actions.items():
            self._arrays[chunk][f"{g}/action"][...] = a
        self._command(chunk, "step")

    def recv(self, chunk: int) -> VecStep:
        self._check_open()
        self.chunk_slice(chunk)
        if self._pending[chunk] != "step":
            raise RuntimeError(f"recv({chunk}) without a pending send({chunk}, actions)")
        episodes = self._wait(chunk)
        return _to_vec_step(self._copy(chunk), episodes)

    def achieved_goals(self, chunk: int) -> AchievedGoals | None:
        self._check_open()
        return _goals_of(buffers_from_arrays(self.spec, self._arrays[chunk]))

    def render(self, env_index: int = 0) -> np.ndarray | None:
        self._check_open()
        w = next(c for c, sl in enumerate(self._slices) if sl.start <= env_index < sl.stop)
        self._command(w, "render", env_index)
        return self._wait(w)

    def close(self) -> None:
        self._arrays = []  # drop the views so the shared memory can be unmapped
        self._finalizer()


def make_vector_env(
    factory: Callable[[], Adapter],
    num_envs: int,
    backend: Literal["sync", "subprocess"] = "sync",
    num_workers: int | None = None,
) -> SyncVectorEnv | SubprocVectorEnv:
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
