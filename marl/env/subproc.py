"""The worker-process vector-env backend: chunks of env copies in processes, data through shared memory."""

from __future__ import annotations

import contextlib
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
from typing import Any, Literal

import numpy as np

from marl.env.adapters import Adapter, EnvSnapshot
from marl.env.buffers import (
    StepBuffers,
    block_layout,
    block_views,
    buffer_fields,
    buffers_from_arrays,
)
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
from marl.seeding import copy_seeds
from marl.types import GroupObs, VecStep

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
        adapters = each_copy(start, count, lambda _: factory())
        conn.send(("spec", adapters[0].spec))
        _, name, layout = conn.recv()
        shm = SharedMemory(name=name)
        arrays = block_views(shm.buf, layout)
        out = buffers_from_arrays(adapters[0].spec, arrays)
        actions = {n.split("/")[0]: a for n, a in arrays.items() if n.endswith("/action")}
        action_rows, out_rows = copy_rows(actions, out, count)  # views into shared memory, made once
        while True:
            cmd, arg = conn.recv()
            if cmd == "step":
                conn.send(("ok", step_block(adapters, start, action_rows, out_rows)))
            elif cmd == "reset":
                reset_block(adapters, start, arg, out)
                conn.send(("ok", None))
            elif cmd == "restore":
                restore_block(adapters, start, arg, out)
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


class SubprocVectorEnv(ChunkedBase):
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
                    buffer_fields(self.spec) + action_fields(self.spec), sl.stop - sl.start
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
        first = concat_steps([to_vec_step(self._copy(w), []) for w in range(self.num_chunks)])
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
        first = concat_steps([to_vec_step(self._copy(w), []) for w in range(self.num_chunks)])
        return first.obs, first.state

    def send(self, chunk: int, actions: Mapping[str, np.ndarray]) -> None:
        self._check_open()
        sl = self.chunk_slice(chunk)
        if self._pending[chunk] is not None:
            raise RuntimeError(f"chunk {chunk} was sent actions twice; recv({chunk}) its result first")
        check_actions(self.spec, actions, sl.stop - sl.start)
        for g, a in actions.items():
            self._arrays[chunk][f"{g}/action"][...] = a
        self._command(chunk, "step")

    def recv(self, chunk: int) -> VecStep:
        self._check_open()
        self.chunk_slice(chunk)
        if self._pending[chunk] != "step":
            raise RuntimeError(f"recv({chunk}) without a pending send({chunk}, actions)")
        episodes = self._wait(chunk)
        return to_vec_step(self._copy(chunk), episodes)

    def render(self, env_index: int = 0) -> np.ndarray | None:
        self._check_open()
        w = next(c for c, sl in enumerate(self._slices) if sl.start <= env_index < sl.stop)
        self._command(w, "render", env_index)
        return self._wait(w)

    def close(self) -> None:
        self._arrays = []  # drop the views so the shared memory can be unmapped
        self._finalizer()
