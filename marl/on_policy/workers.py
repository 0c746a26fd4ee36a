"""Rollout workers of asynchronous PPO: env copies, a CPU copy of the acting policy and a collector.

* :class:`RolloutWorker` is a plain class with three methods, ``set_weights(state, version)``,
  ``collect() -> RolloutMessage`` and ``close()``: it knows nothing of processes or pipes, so
  any host can run it (here a worker process, :func:`serve`; a Ray actor would hold it unchanged).
* :func:`serve` hosts one worker in a process: it waits for the first weights, then collects
  rollout after rollout, sending each as soon as it is complete. A reader thread takes weights off
  the pipe while the worker collects; the worker acts at every step with the newest weights it has
  received (the parameters may change within a rollout: each step's behaviour log-probability is
  stored, and each step's version travels with the rollout). A rollout and a weights message can
  cross without either side blocking the other.
* :class:`WorkerPool` is the learner's side: it starts the processes, hands out whichever rollout
  is ready first, sends weights, replaces a worker that died (fresh env copies, a warning; what
  it was collecting is lost, never half-used) and stops every process on ``close``.

Everything crossing a pipe is numpy or plain Python (no torch tensors: torch would move them
through shared-memory file descriptors that a killed process can leak).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, NamedTuple

import numpy as np
import torch

from marl.config import Config
from marl.env.chunks import EnvWorkerError, chunk_slices
from marl.env.make import env_factory
from marl.env.subproc import _leave_to_main, _stop_signals_blocked
from marl.env.sync import SyncVectorEnv
from marl.loop import EnvLoop
from marl.normalization import RunningMeanStd
from marl.on_policy.collector import RolloutCollector
from marl.on_policy.policy import ActorCriticPolicy
from marl.seeding import seed_everything
from marl.types import ActOutput, EnvSpec, EpisodeStats, GroupObs

FIELDS = ("obs", "critic_in", "action", "log_prob", "value", "reward", "terminated", "truncated", "alive",
          "action_mask", "final_value")
"""Storage fields a rollout message carries (``critic_in`` / ``action_mask`` only when the group has them)."""

Moments = tuple[np.ndarray, np.ndarray, float]
"""``(mean, var, count)`` of a sample, what :meth:`RunningMeanStd.merge` takes."""


class RolloutMessage(NamedTuple):
    """One complete rollout of one worker: ``T`` steps of its ``E_w`` env copies.

    Attributes:
        worker: index of the worker that collected it.
        version: learner version of the oldest parameters that acted in it (the behaviour policy ``mu``).
        step_versions: ``[T]`` the version that acted at each step.
        groups: group -> storage field -> ``[T, E_w, A, ...]`` array (see :data:`FIELDS`).
        last_critic_in: group -> critic input ``[E_w, A, ...]`` of the observations after the last step.
        episodes: episodes that finished, ``env_index`` counted over the run's copies.
        env_steps: ``T * E_w``; agent_steps: alive agent decisions.
        obs_moments: normalizer name -> moments of the observations this rollout added (the learner merges them).
        reward_norm: the worker's reward scalers' state (checkpointed by the learner).
    """

    worker: int
    version: int
    step_versions: np.ndarray
    groups: dict[str, dict[str, np.ndarray]]
    last_critic_in: dict[str, np.ndarray]
    episodes: list[EpisodeStats]
    env_steps: int
    agent_steps: int
    obs_moments: dict[str, Moments]
    reward_norm: dict[str, Any]


def to_numpy(tree: Any) -> Any:
    """The same nested dicts / lists with every tensor as a numpy array (copied)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy().copy()
    if isinstance(tree, Mapping):
        return {k: to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_numpy(v) for v in tree)
    return tree


def to_torch(tree: Any) -> Any:
    """The same nested dicts / lists with every numpy array as a tensor."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(tree)
    if isinstance(tree, Mapping):
        return {k: to_torch(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_torch(v) for v in tree)
    return tree


def resolve_workers(cfg: Config) -> int:
    """Workers of an appo run: with ``runtime=ray`` its actors (``ray.num_workers``, or ``env.num_envs /
    ray.envs_per_worker``); else ``env.num_workers``, or for 0 the largest divisor of ``env.num_envs`` not
    above the CPU count (every worker gets the same number of copies)."""
    if cfg.runtime == "ray":
        return cfg.ray.num_workers or cfg.env.num_envs // cfg.ray.envs_per_worker
    if cfg.env.num_workers > 0:
        return cfg.env.num_workers
    cpus = os.cpu_count() or 1
    return max(d for d in range(1, cfg.env.num_envs + 1) if cfg.env.num_envs % d == 0 and d <= cpus)


class RefreshingPolicy(ActorCriticPolicy):
    """The acting policy of a worker: before each step it takes the newest weights ``poll`` returns
    (``(state, version)`` or ``None``) and records the version that acts.

    Attributes:
        version: the learner version of the current parameters (-1 before the first weights).
        step_versions: the version of every ``act`` since the list was last cleared.
    """

    def __init__(self, spec: EnvSpec, cfg: Config, poll: Callable[[], tuple[Any, int] | None] | None = None) -> None:
        super().__init__(spec, cfg, "cpu")
        self.poll = poll
        self.version = -1
        self.step_versions: list[int] = []

    def set_weights(self, state: Mapping[str, Any], version: int) -> None:
        self.load_state_dict(to_torch(state))
        self.version = version

    def act(
        self,
        obs: Mapping[str, GroupObs],
        state: np.ndarray | None = None,
        deterministic: bool = False,
        update_stats: bool = False,
        with_value: bool = True,
    ) -> ActOutput:
        """:meth:`ActorCriticPolicy.act` with the newest weights ``poll`` has; the acting version is recorded."""
        newest = self.poll() if self.poll is not None else None
        if newest is not None:
            self.set_weights(*newest)
        self.step_versions.append(self.version)
        return super().act(obs, state, deterministic, update_stats, with_value)


class RolloutWorker:
    """Env copies ``copies`` of the run in this process, a CPU copy of the acting policy, a collector.

    Observation statistics update on the worker's own data; the moments each rollout added travel
    with it, and :meth:`set_weights` replaces the statistics with the learner's merged ones. Reward
    scaling is the worker's own (each worker scales by the return std of its copies).

    Args:
        cfg: the run's config.
        index: the worker's index (in messages and errors).
        copies: the run's env copies this worker owns (a contiguous range).
        seeds: reset seeds of those copies.
        torch_seed: seed of the action sampling.
        poll: called before every step; newer weights ``(state, version)`` it returns act from that step on
            (``None``: the parameters change only through :meth:`set_weights`).
    """

    def __init__(self, cfg: Config, index: int, copies: range, seeds: Sequence[int], torch_seed: int,
                 poll: Callable[[], tuple[Any, int] | None] | None = None) -> None:
        self.index, self.first_copy = index, copies.start
        seed_everything(torch_seed)
        self.env = SyncVectorEnv(env_factory(cfg), len(copies))
        try:
            self.loop = EnvLoop(self.env, check_inputs=cfg.health.check_inputs)
            self.loop.reset(list(seeds))
            self.policy = RefreshingPolicy(self.env.spec, cfg, poll)
            self.collector = RolloutCollector(self.loop, self.policy, num_steps=cfg.algo.num_steps,
                                              reward_norm=cfg.norm.reward, reward_clip=cfg.norm.reward_clip,
                                              gamma=cfg.algo.gamma)
        except BaseException:
            self.env.close()
            raise
        self._added: dict[str, RunningMeanStd] = {}
        for name, norm in self.policy.obs_norm.items():
            self._added[name] = RunningMeanStd(norm.rms.mean.shape, epsilon=0.0)
            norm.rms.sync = self._tap(name)

    def _tap(self, name: str) -> Callable[[np.ndarray, np.ndarray, float], list[Moments]]:
        """The normalizer's ``sync`` hook: fold each batch into the statistics and into what this rollout added."""
        def sync(mean: np.ndarray, var: np.ndarray, count: float) -> list[Moments]:
            if count > 0:
                self._added[name].merge(mean, var, count)
            return [(mean, var, count)]
        return sync

    def set_weights(self, state: Mapping[str, Any], version: int) -> None:
        """Act with the learner's parameters and normalizer statistics (``policy.state_dict()``, numpy or torch)."""
        self.policy.set_weights(state, version)

    def load_reward_state(self, state: Mapping[str, Any]) -> None:
        """Continue the reward scalers of a checkpoint (``RolloutMessage.reward_norm``)."""
        self.collector.load_state_dict(to_torch(state))

    def collect(self) -> RolloutMessage:
        """One rollout of ``T`` steps with the current parameters (and newer ones ``poll`` hands over)."""
        self.policy.step_versions = []
        r = self.collector.collect()
        versions = np.asarray(self.policy.step_versions, np.int64)
        _, critic_in = self.policy.inputs(self.loop.obs, self.loop.state, update=False)
        groups = {g: {k: getattr(buf, k).numpy().copy() for k in FIELDS if getattr(buf, k) is not None}
                  for g, buf in r.groups.items()}
        moments = {name: (rms.mean.copy(), rms.var.copy(), rms.count) for name, rms in self._added.items()
                   if rms.count > 0}
        for name, rms in self._added.items():
            self._added[name] = RunningMeanStd(rms.mean.shape, epsilon=0.0)
        episodes = [ep._replace(env_index=ep.env_index + self.first_copy) for ep in r.episodes]
        return RolloutMessage(self.index, int(versions.min()), versions, groups,
                              {g: to_numpy(c) for g, c in critic_in.items()}, episodes, r.env_steps, r.agent_steps,
                              moments, to_numpy(self.collector.state_dict()))

    def close(self) -> None:
        self.env.close()


# --------------------------------------------------------------------------- the worker process
class _Inbox:
    """A thread that reads the learner's messages while the worker collects; keeps only the newest weights."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.weights: tuple[Any, int] | None = None
        self.closed = False
        threading.Thread(target=self._run, daemon=True, name="marl-appo-inbox").start()

    def _run(self) -> None:
        try:
            while True:
                cmd, *args = self.conn.recv()
                if cmd != "weights":
                    break
                with self.lock:
                    self.weights = (args[0], args[1])
                    self.ready.set()
        except (EOFError, OSError):  # the learner is gone
            pass
        with self.lock:
            self.closed = True
            self.ready.set()

    def take(self, block: bool) -> tuple[Any, int] | None:
        """The newest weights not yet taken (waiting for them when ``block``); ``None`` if none or closed."""
        if block:
            self.ready.wait()
        with self.lock:
            weights, self.weights = self.weights, None
            if not self.closed:
                self.ready.clear()
            return weights


class _Outbox:
    """A thread that sends the worker's messages, so that the worker collects its next rollout while the learner,
    busy with an update, has not yet read the last one.

    A rollout (about 0.5 MB for simple_spread's 200 steps x 8 copies) does not fit a pipe's buffer: a plain
    ``send`` returns only once the learner has read it all, and the learner reads between its updates, so
    a worker that finished during an update sat idle until the update's end. The outbox holds one message:
    :meth:`put` waits while the previous one is still being sent, so a worker runs at most one rollout ahead
    of what the learner has read (the lag grows by at most that rollout's wait).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.error: BaseException | None = None
        self._message: Any = None
        self._full = threading.Event()
        self._sent = threading.Event()
        self._sent.set()
        self._thread = threading.Thread(target=self._run, daemon=True, name="marl-appo-outbox")
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._full.wait()
            self._full.clear()
            message, self._message = self._message, None
            if message is None:
                self._sent.set()
                return
            try:
                self.conn.send(message)
            except BaseException as err:  # noqa: BLE001 - handed to the worker's loop on its next put
                self.error = err
                self._sent.set()
                return
            self._sent.set()

    def put(self, message: Any) -> None:
        """Send ``message`` in the background, once the previous one is sent; a failed send raises here."""
        self.flush()
        self._sent.clear()
        self._message = message
        self._full.set()

    def flush(self) -> None:
        """Wait until the last message is sent (raises what its send raised)."""
        self._sent.wait()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the thread once the last message is sent (or its send failed); errors are not raised."""
        self._sent.wait()
        if self._thread.is_alive():
            self._sent.clear()
            self._message = None
            self._full.set()
            self._thread.join()


def serve(conn: Connection, cfg: Config, index: int, copies: range, seeds: Sequence[int], torch_seed: int,
          reward_state: Mapping[str, Any] | None) -> None:
    """Worker process: build a :class:`RolloutWorker`, then collect and send rollouts until told to stop.

    SIGINT / SIGTERM are left to the learner, which writes its checkpoint and then closes the workers;
    the worker also exits when the learner's end of the pipe closes, so it is never orphaned. An
    exception is sent as ``("error", env_index, message, traceback)``.
    """
    def build(inbox: _Inbox) -> RolloutWorker:
        return RolloutWorker(cfg, index, copies, seeds, torch_seed, poll=lambda: inbox.take(block=False))

    def start(worker: RolloutWorker, inbox: _Inbox) -> None:
        if reward_state:
            worker.load_reward_state(reward_state)
        first = inbox.take(block=True)  # the first rollout waits for the learner's parameters
        if first is not None:
            worker.set_weights(*first)

    serve_loop(conn, copies, build, start, send_ahead=True)


def serve_loop(conn: Connection, copies: range, build: Callable[[_Inbox], Any],
               start: Callable[[Any, _Inbox], None] | None = None, send_ahead: bool = False) -> None:
    """The body of a collecting process (appo's workers, Ape-X's actors): ``build(inbox)`` the collector, ``start``
    it, then send ``("rollout", collector.collect())`` until the learner closes the inbox.

    With ``send_ahead`` each message is sent by an :class:`_Outbox` thread while the next one is collected
    (appo); else the process waits for each send to finish before collecting again (Ape-X's actors: the
    learner paces them by reading).

    SIGINT / SIGTERM are left to the learner; a closed pipe ends the process quietly; any other exception is
    sent as ``("error", env_index, message, traceback)`` (``env_index`` run-wide, from ``copies``).
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _leave_to_main)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    torch.set_num_threads(1)
    worker, outbox = None, _Outbox(conn) if send_ahead else None
    send = outbox.put if outbox is not None else conn.send
    try:
        inbox = _Inbox(conn)
        worker = build(inbox)
        if start is not None:
            start(worker, inbox)
        while not inbox.closed:
            send(("rollout", worker.collect()))
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the learner is gone
        pass
    except BaseException as err:  # noqa: BLE001 - every failure is reported to the learner
        env_index = err.env_index + copies.start if isinstance(err, EnvWorkerError) and err.env_index is not None \
            else None
        with contextlib.suppress(OSError, ValueError):
            if outbox is not None:
                outbox.close()  # the rollout before the failure goes first; one connection, one sender at a time
            conn.send(("error", env_index, f"{type(err).__name__}: {err}", traceback.format_exc()))
    finally:
        if outbox is not None:
            outbox.close()
        if worker is not None:
            with contextlib.suppress(Exception):
                worker.close()
        conn.close()


# --------------------------------------------------------------------------- the learner's side
class WorkerPool:
    """The learner's handle on ``num_workers`` worker processes, each owning an equal share of the env copies.

    Args:
        cfg: the run's config (``env.num_envs`` copies split over the workers).
        num_workers: worker processes W.
        seeds: ``(worker, generation) -> reset seeds of its copies``; generation 0 is the first start,
            each replacement adds one.
        timeout: seconds :meth:`next_rollout` waits for any rollout before raising.

    Attributes:
        restarts: workers replaced after they died.
    """

    def __init__(self, cfg: Config, num_workers: int, seeds: Callable[[int, int], list[int]],
                 timeout: float = 300.0) -> None:
        self.cfg, self.seeds, self.timeout = cfg, seeds, timeout
        self.slices = chunk_slices(cfg.env.num_envs, num_workers)
        self.procs: list[Any] = [None] * num_workers
        self.conns: list[Connection | None] = [None] * num_workers
        self.generation = [0] * num_workers
        self.reward_state: list[dict | None] = [None] * num_workers
        self.latest: tuple[dict, int] | None = None
        self.restarts = 0
        self._next = 0  # round-robin start among ready workers
        self._ctx = mp.get_context("forkserver")
        # Workers fork from a server that has imported torch and marl once (when this process starts the server;
        # one already running keeps its own preload): a worker then starts in a fraction of a second, not seconds.
        self._ctx.set_forkserver_preload(["marl.on_policy.workers"])

    @property
    def num_workers(self) -> int:
        return len(self.slices)

    def start(self, reward_state: Sequence[dict | None] | None = None) -> None:
        """Start every worker (with the reward scalers of a checkpoint when given)."""
        if reward_state is not None:
            self.reward_state = list(reward_state)
        try:
            for w in range(self.num_workers):
                self._start(w)
        except BaseException:
            self.close()
            raise

    label, unit, work = "appo", "worker", "rollout"  # what messages call the owner, a process, its unit of work
    seed_salt: tuple[int, ...] = ()  # extra entropy of the processes' torch seeds

    def process_body(self, w: int, child: Connection, copies: range, seeds: list[int],
                     torch_seed: int) -> tuple[Callable[..., None], tuple]:
        """The function process ``w`` runs and its arguments (appo: :func:`serve`)."""
        return serve, (child, self.cfg, w, copies, seeds, torch_seed, self.reward_state[w])

    def _start(self, w: int) -> None:
        sl = self.slices[w]
        copies = range(sl.start, sl.stop)
        seeds = self.seeds(w, self.generation[w])
        entropy = [self.cfg.seed, w, self.generation[w], *self.seed_salt]
        torch_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        parent, child = self._ctx.Pipe()
        target, args = self.process_body(w, child, copies, seeds, torch_seed)
        proc = self._ctx.Process(target=target, name=f"marl-{self.label}-{w}", daemon=True, args=args)
        with _stop_signals_blocked():
            proc.start()
        child.close()
        self.procs[w], self.conns[w] = proc, parent
        if self.latest is not None:
            self.send_weights(w, *self.latest)

    def describe(self, w: int) -> str:
        sl = self.slices[w]
        return f"{self.unit} {w} (env copies {sl.start}..{sl.stop - 1})"

    def send_weights(self, w: int, state: dict, version: int) -> None:
        """Send worker ``w`` the learner's ``policy.state_dict()`` (numpy) and its version."""
        self.latest = (state, version)
        conn = self.conns[w]
        if conn is None:
            return
        with contextlib.suppress(OSError, ValueError):  # a dead worker is replaced on the next receive
            conn.send(("weights", state, version))

    def broadcast(self, state: dict, version: int) -> None:
        """Send every worker the same weights (the first parameters of a run)."""
        for w in range(self.num_workers):
            self.send_weights(w, state, version)

    def next_rollout(self) -> RolloutMessage:
        """The first complete rollout any worker has ready; replaces dead workers while waiting.

        Raises:
            EnvWorkerError: an env (or anything else) raised in a worker; the message names the worker,
                the env copy when known, and holds the worker's traceback.
            TimeoutError: no rollout for ``timeout`` seconds.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            order = [(self._next + i) % self.num_workers for i in range(self.num_workers)]
            conns = {self.conns[w]: w for w in order}
            sentinels = {self.procs[w].sentinel: w for w in order}
            ready = wait([*conns, *sentinels], timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            for w in order:
                conn = self.conns[w]
                if conn in ready:
                    try:
                        reply = conn.recv()
                    except (EOFError, OSError):
                        self._replace(w)
                        continue
                    if reply[0] == "error":
                        _, env_index, message, tb = reply
                        where = self.describe(w) + ("" if env_index is None else f", env copy {env_index}")
                        self.close()
                        raise EnvWorkerError(f"{message} (in {self.label} {where})\n--- worker traceback ---\n{tb}",
                                             env_index, tb)
                    self._next = (w + 1) % self.num_workers
                    msg: RolloutMessage = reply[1]
                    self.reward_state[w] = msg.reward_norm
                    return msg
                if self.procs[w].sentinel in ready:
                    self._replace(w)
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"no appo worker delivered a rollout in {self.timeout:.0f}s "
                                   "(algo.worker_timeout_s); is an env stuck?")

    def _replace(self, w: int) -> None:
        """Worker ``w`` died: drop what it was doing, start a new one on fresh env copies, warn."""
        proc, conn = self.procs[w], self.conns[w]
        proc.join(1.0)
        if conn is not None:
            conn.close()
        self.restarts += 1
        self.generation[w] += 1
        state = self.reward_state[w]
        if state is not None:  # keep the return statistics; the running returns belong to the old episodes
            state = {"reward_norm": {g: {**s, "ret": np.zeros_like(s["ret"])} for g, s in state["reward_norm"].items()}}
            self.reward_state[w] = state
        warnings.warn(f"{self.label} {self.describe(w)} died (exit code {proc.exitcode}); its {self.work} in progress "
                      f"is discarded and a new {self.unit} starts on fresh env copies", RuntimeWarning, stacklevel=3)
        self._start(w)

    def close(self, timeout: float = 3.0) -> None:
        """Stop every worker: ask, close the pipes (a worker blocked sending then exits), kill what remains."""
        for conn in self.conns:
            if conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(("close",))
                conn.close()
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            if proc is None:
                continue
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.procs = [None] * self.num_workers
        self.conns = [None] * self.num_workers
