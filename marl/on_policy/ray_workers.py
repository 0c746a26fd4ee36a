"""Rollout workers of asynchronous PPO (``algo.name=appo runtime=ray``) and Ape-X actors (``algo.num_actors > 0
runtime=ray``) on a Ray cluster.

Each worker is a Ray actor hosting one :class:`marl.on_policy.workers.RolloutWorker` (its share of
the env copies, a CPU copy of the acting policy, a collector), or what ``make_worker`` builds with the same
``set_weights`` / ``collect`` methods (an :class:`marl.off_policy.apex.ApexActor`). :class:`RayWorkerPool` is
the learner's side, with the methods of :class:`marl.on_policy.workers.WorkerPool`, so
:class:`marl.on_policy.async_trainer.AsyncPPOTrainer` and :class:`marl.off_policy.apex.ApexTrainer` run either
unchanged::

    learner:  every idle actor gets  collect(weights_ref, version)   (weights put once per version)
              msg = the rollout of whichever actor finishes first   (ray.wait on the outstanding calls)
              ... V-trace and one PPO update ...
              broadcast(weights): that actor (now idle) collects again with them

An actor takes new weights between its rollouts (a Ray actor runs one call at a time): each rollout
acts with one version, and its lag is the number of updates the learner made while it was collected.

Faults: an actor whose process or node dies is rebuilt on fresh env copies (the seeds of its next
generation) with a warning, its rollout in flight discarded, at most ``ray.max_restarts`` times per
worker; an env that raises in an actor ends the run with an :class:`EnvWorkerError` naming the
worker, its node and the env copy, with the env's traceback. ``close`` kills every actor and
closes the Ray connection (:class:`marl.ray_runtime.RayConnection`).
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from marl.config import Config
from marl.env.chunks import EnvWorkerError, chunk_slices
from marl.on_policy.workers import RolloutMessage, RolloutWorker
from marl.ray_runtime import remote_class

Reply = tuple  # ("ok", value) or ("error", env_index, message, traceback)


def writable(tree: Any) -> Any:
    """The same nested dicts / lists / tuples with every numpy array copied: what ``ray.get`` returns is read-only
    shared memory, which torch must not wrap (an in-place update would write into Ray's object store)."""
    if isinstance(tree, np.ndarray):
        return np.array(tree)
    if isinstance(tree, Mapping):
        return {k: writable(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a NamedTuple
        return type(tree)(*(writable(v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(writable(v) for v in tree)
    return tree


def connect(cfg: Config, num_workers: int) -> Any:
    """The run's :class:`marl.ray_runtime.RayConnection` as ``ray.address`` says, offering the actors' CPUs."""
    from marl.ray_runtime import RayConnection

    r = cfg.ray
    return RayConnection(r.address, r.connect_timeout_s, num_workers * r.cpus_per_worker)


class RolloutActor:
    """A :class:`RolloutWorker` in a Ray actor; every failure comes back as an ``("error", ...)`` reply.

    Plain class: :func:`marl.ray_runtime.remote_class` wraps it with ``ray.remote`` (so this module imports
    without Ray).
    """

    def __init__(self) -> None:
        self.worker: RolloutWorker | None = None
        self.first_copy = 0

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def _reply(self, call: Callable[[], Any]) -> Reply:
        try:
            return ("ok", call())
        except Exception as err:  # noqa: BLE001 - reported to the learner, which stops the run
            index = err.env_index if isinstance(err, EnvWorkerError) else None
            if index is not None:  # the worker's own copy index -> the run's
                index += self.first_copy
            tb = err.worker_traceback if isinstance(err, EnvWorkerError) and err.worker_traceback \
                else traceback.format_exc()
            return ("error", index, f"{type(err).__name__}: {err}", tb)

    def build(self, cfg: Config, index: int, copies: range, seeds: Sequence[int], torch_seed: int,
              reward_state: Mapping[str, Any] | None, make_worker: Callable[..., Any] | None = None) -> Reply:
        """Build the worker: ``make_worker(cfg, index, copies, seeds, torch_seed)`` (default :class:`RolloutWorker`)."""
        import torch

        torch.set_num_threads(1)
        self.first_copy = copies.start

        def make() -> None:
            self.worker = (make_worker or RolloutWorker)(cfg, index, copies, seeds, torch_seed)
            if reward_state:
                self.worker.load_reward_state(reward_state)

        return self._reply(make)

    def collect(self, weights: Mapping[str, Any] | None, version: int) -> Reply:
        """Take ``weights`` (if given), then collect one rollout."""
        def run() -> RolloutMessage:
            assert self.worker is not None
            if weights is not None:
                self.worker.set_weights(writable(weights), version)
            return self.worker.collect()

        return self._reply(run)

    def close(self) -> None:
        if self.worker is not None:
            with contextlib.suppress(Exception):
                self.worker.close()
            self.worker = None



class RayWorkerPool:
    """The learner's handle on ``num_workers`` rollout actors (same methods as :class:`WorkerPool`).

    Args:
        cfg: the run's config (``env.num_envs`` copies split over the actors; the ``ray`` section).
        num_workers: actors W.
        seeds: ``(worker, generation) -> reset seeds of its copies``; generation 0 is the first start,
            each rebuild adds one.
        timeout: seconds :meth:`next_rollout` waits for any rollout before raising.
        connection: a :class:`marl.ray_runtime.RayConnection` closed with the pool; ``None`` opens one as
            ``ray.address`` says.
        make_worker: ``worker -> factory`` of what actor ``worker`` hosts (see :meth:`RolloutActor.build`);
            ``None``: a :class:`RolloutWorker` each. Until :attr:`latest` weights exist, workers collect without.
        label: what messages call the workers' owner (``appo``, ``apex``).

    Attributes:
        restarts: actors rebuilt after they died (all workers together).
    """

    def __init__(self, cfg: Config, num_workers: int, seeds: Callable[[int, int], list[int]],
                 timeout: float = 300.0, connection: Any = None,
                 make_worker: Callable[[int], Callable[..., Any]] | None = None, label: str = "appo") -> None:
        from marl.ray_runtime import import_ray

        self._ray = import_ray()
        self.cfg, self.seeds, self.timeout = cfg, seeds, timeout
        self.make_worker, self.label = make_worker, label
        self.slices = chunk_slices(cfg.env.num_envs, num_workers)
        self.actors: list[Any] = [None] * num_workers
        self.pending: list[Any] = [None] * num_workers  # the outstanding collect call of each actor
        self.generation = [0] * num_workers
        self.reward_state: list[dict | None] = [None] * num_workers
        self.latest: tuple[dict, int] | None = None
        self.restarts = 0
        self._ref: tuple[Any, int] | None = None  # (object ref of the latest weights, version)
        self._sent = [-1] * num_workers  # the version each actor holds
        self._next = 0
        self._died = (self._ray.exceptions.RayActorError, self._ray.exceptions.ObjectLostError)
        self.connection = connection if connection is not None else connect(cfg, num_workers)

    @property
    def num_workers(self) -> int:
        return len(self.slices)

    def describe(self, w: int) -> str:
        sl = self.slices[w]
        return f"ray worker {w} (env copies {sl.start}..{sl.stop - 1})"

    def start(self, reward_state: Sequence[dict | None] | None = None) -> None:
        """Place and build every actor (with the reward scalers of a checkpoint when given), within
        ``ray.start_timeout_s``; then each starts collecting."""
        if reward_state is not None:
            self.reward_state = list(reward_state)
        try:
            refs = [self._spawn(w) for w in range(self.num_workers)]
            self._built(list(range(self.num_workers)), refs)
            for w in range(self.num_workers):
                self._launch(w)
        except BaseException:
            self.close()
            raise

    def _spawn(self, w: int) -> Any:
        """A new actor for worker ``w``; the reference of its ``build`` call."""
        sl, r = self.slices[w], self.cfg.ray
        torch_seed = int(np.random.SeedSequence([self.cfg.seed, w, self.generation[w]]).generate_state(1)[0])
        actor = remote_class(RolloutActor).options(num_cpus=r.cpus_per_worker, scheduling_strategy="SPREAD",
                                                   max_restarts=0, max_task_retries=0).remote()
        self.actors[w], self.pending[w], self._sent[w] = actor, None, -1
        return actor.build.remote(self.cfg, w, range(sl.start, sl.stop), self.seeds(w, self.generation[w]),
                                  torch_seed, self.reward_state[w],
                                  None if self.make_worker is None else self.make_worker(w))

    def _built(self, workers: list[int], refs: list[Any]) -> None:
        """Wait for the ``build`` calls ``refs`` of ``workers``; an actor that died before it was built is an
        :class:`EnvWorkerError` naming it."""
        ray, limit = self._ray, self.cfg.ray.start_timeout_s
        _, waiting = ray.wait(refs, num_returns=len(refs), timeout=limit)
        if waiting:
            free = ray.available_resources().get("CPU", 0.0)
            names = ", ".join(self.describe(workers[refs.index(r)]) for r in waiting)
            raise EnvWorkerError(f"{names} not running after ray.start_timeout_s={limit:g} s: the cluster has "
                                 f"{free:g} free CPUs and each worker asks ray.cpus_per_worker="
                                 f"{self.cfg.ray.cpus_per_worker:g}; add nodes, lower ray.cpus_per_worker or "
                                 "ray.num_workers")
        for w, ref in zip(workers, refs, strict=True):
            try:
                reply = ray.get(ref)
            except self._died as err:
                raise EnvWorkerError(f"{self.label} {self.describe(w)} died before it was built: "
                                     f"{str(err).splitlines()[0]}") from None
            self._value(w, reply)

    def _value(self, w: int, reply: Reply) -> Any:
        if reply[0] == "error":
            _, env_index, message, tb = reply
            where = f"{self.describe(w)} on node {self._node(w)}" + ("" if env_index is None else
                                                                    f", env copy {env_index}")
            self.close()
            raise EnvWorkerError(f"{message} (in {self.label} {where})\n--- worker traceback ---\n{tb}", env_index, tb)
        return reply[1]

    def _node(self, w: int) -> str:
        with contextlib.suppress(Exception):
            return self._ray.get(self.actors[w].node_id.remote(), timeout=5)[:12]
        return "?"

    def _launch(self, w: int) -> None:
        """Worker ``w`` (idle) collects its next rollout, with the latest weights if it does not hold them (none
        exist yet: Ape-X's warm-up, where actors act uniformly at random)."""
        if self.pending[w] is not None:
            return
        if self.latest is None:
            self.pending[w] = self.actors[w].collect.remote(None, -1)
            return
        state, version = self.latest
        if self._ref is None or self._ref[1] != version:
            self._ref = (self._ray.put(state), version)
        weights = self._ref[0] if self._sent[w] != version else None
        self.pending[w] = self.actors[w].collect.remote(weights, version)
        self._sent[w] = version

    def send_weights(self, w: int, state: dict, version: int) -> None:
        """The learner's ``policy.state_dict()`` (numpy) and version: worker ``w`` takes them before its next
        rollout (at once if it is idle)."""
        self.latest = (state, version)
        self._launch(w)

    def broadcast(self, state: dict, version: int) -> None:
        """New weights for every worker: the idle ones collect with them now, the busy ones after their rollout."""
        self.latest = (state, version)
        for w in range(self.num_workers):
            self._launch(w)

    def next_rollout(self) -> RolloutMessage:
        """The first complete rollout any actor has ready; rebuilds dead actors while waiting.

        Raises:
            EnvWorkerError: an env raised in an actor (the message names the worker, its node and the copy,
                and holds the env's traceback), or an actor died more than ``ray.max_restarts`` times.
            TimeoutError: no rollout for ``timeout`` seconds.
        """
        ray = self._ray
        for w in range(self.num_workers):
            self._launch(w)
        deadline = time.monotonic() + self.timeout
        while True:
            order = [(self._next + i) % self.num_workers for i in range(self.num_workers)]
            refs = {self.pending[w]: w for w in order if self.pending[w] is not None}
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            for ref in ready:
                w = refs[ref]
                self.pending[w] = None
                try:
                    reply = ray.get(ref)
                except self._died as err:
                    self._rebuild(w, err)
                    continue
                except ray.exceptions.RayTaskError as err:  # a failure outside the guarded methods
                    self.close()
                    raise EnvWorkerError(f"{self.label} {self.describe(w)} failed: {err}") from None
                msg: RolloutMessage = writable(self._value(w, reply))
                self._next = (w + 1) % self.num_workers
                self.reward_state[w] = msg.reward_norm
                return msg
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"no {self.label} ray worker delivered a rollout in {self.timeout:.0f}s"
                                   f"{' (algo.worker_timeout_s)' if self.label == 'appo' else ''}; is an env stuck?")

    def _rebuild(self, w: int, cause: BaseException) -> None:
        """Actor ``w`` died: drop its rollout in flight, build a new one on fresh env copies, warn."""
        limit = self.cfg.ray.max_restarts
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        while True:
            self.generation[w] += 1
            self.restarts += 1
            if self.generation[w] > limit:
                self.close()
                raise EnvWorkerError(f"{self.label} {self.describe(w)} died {self.generation[w]} times "
                                     f"(ray.max_restarts={limit}); last: {first}")
            with contextlib.suppress(Exception):
                self._ray.kill(self.actors[w], no_restart=True)
            state = self.reward_state[w]
            if state is not None:  # keep the return statistics; the running returns belong to the old episodes
                state = {"reward_norm": {g: {**s, "ret": np.zeros_like(s["ret"])}
                                         for g, s in state["reward_norm"].items()}}
                self.reward_state[w] = state
            try:
                self._built([w], [self._spawn(w)])
                break
            except self._died as err:  # the new one died too (its node is going away)
                first = str(err).strip().splitlines()[0]
        warnings.warn(f"{self.label} {self.describe(w)} was lost ({first}); rebuilt it on a new process (restart "
                      f"{self.generation[w]} of ray.max_restarts={limit}); its rollout in progress is discarded "
                      "and its env copies start new episodes", RuntimeWarning, stacklevel=3)
        self._launch(w)

    def pids(self) -> list[int]:
        """Process ids of the actors, in worker order."""
        return self._ray.get([a.pid.remote() for a in self.actors])

    def close(self, timeout: float = 3.0) -> None:
        """Let the envs close (briefly), kill every actor, close the Ray connection. Idempotent."""
        actors, self.actors = [a for a in self.actors if a is not None], [None] * self.num_workers
        self.pending = [None] * self.num_workers
        ray = self._ray
        if actors:
            with contextlib.suppress(Exception):
                ray.wait([a.close.remote() for a in actors], num_returns=len(actors), timeout=timeout)
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        if self.connection is not None:
            self.connection.close()
            self.connection = None
