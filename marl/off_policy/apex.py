"""Ape-X shaped off-policy training (Horgan et al. 2018) on one machine: ``algo.num_actors > 0``.

::

    actor i (process):  loop { actor_batch vector steps of its env copies with the newest weights it has;
                               send the replay rows (replay_rows, per group) [T, E_i, A, ...] }
    learner:            loop { batch = the first one any actor has ready
                               replay[g].add(rows of step t, lanes = the actor's copies)   for every t
                               training phases due (algo.train_freq env steps each, algo.gradient_steps
                               updates, as in the synchronous loop)
                               every algo.weight_sync_interval gradient steps: weights + normalizer
                               statistics to every actor }

Every env copy keeps its own replay lane, so n-step targets never mix copies; with PER new rows
take the largest priority so far (the sampler's ``on_add``). The replay ratio is the synchronous
loop's: ``algo.gradient_steps`` gradient steps per ``algo.train_freq`` collected env steps.

Exploration: until the learner has ``algo.learning_starts`` env steps every actor acts uniformly at
random (it has no weights yet: the first weights are sent then). Afterwards DQN actor ``i`` of ``N``
acts epsilon-greedily with its own constant ``eps_i = base ** (1 + alpha * i / (N - 1))``
(:func:`apex_epsilon`, ``algo.apex_epsilon_base`` 0.4, ``algo.apex_epsilon_alpha`` 7); SAC and TD3
actors sample their policy (SAC) or add ``algo.exploration_noise`` (TD3).

Observation statistics are updated on the learner with the rows it receives (the same rows, in the
same per-step batches, that the synchronous loop updates them with) and travel with the weights.
Counters count collected env steps; ``apex/weight_lag_mean`` / ``apex/weight_lag_max`` log the
learner's gradient steps minus the weight version that acted (over the rows since the last log),
``apex/epsilon_<i>`` each actor's epsilon. An actor that dies is replaced on fresh env copies with a
warning (``apex/actor_restarts``); its batch in progress is lost. The learner holds a one-copy env
only for the spec and the checkpoint format; a resumed run starts fresh episodes in its actors (the
replay comes back only with ``algo.save_replay``).

The process layer is :class:`marl.on_policy.workers.WorkerPool` (forkserver start, first-ready
receive, replacement, clean close), given another process body (:func:`serve_actor`). With
``runtime=ray`` the actors are Ray actors instead (:class:`marl.on_policy.ray_workers.RayWorkerPool`
hosting an :class:`ApexActor` each, placed anywhere in the cluster, rebuilt at most ``ray.max_restarts``
times): they take new weights between batches (a Ray actor runs one call at a time), so a batch acts
with one weight version; ``ray.num_workers`` and ``ray.envs_per_worker`` are not used (the actors are
``algo.num_actors``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import numpy as np

from marl.config import Config, ConfigError, DQNConfig
from marl.env.make import env_factory, vector_env
from marl.env.sync import SyncVectorEnv
from marl.env.vector import VectorEnv
from marl.logger import episode_metrics
from marl.loop import EnvLoop
from marl.off_policy.actor import OffPolicyActor, build_actor
from marl.off_policy.replay import replay_rows
from marl.off_policy.trainer import MetricWindow, OffPolicyTrainer
from marl.on_policy.ray_workers import RayWorkerPool, connect
from marl.on_policy.workers import WorkerPool, serve_loop, to_numpy, to_torch
from marl.run import Report
from marl.seeding import seed_everything, seeds_for
from marl.types import EpisodeStats, GroupObs


def apex_epsilon(i: int, n: int, base: float = 0.4, alpha: float = 7.0) -> float:
    """Ape-X exploration of actor ``i`` of ``n``: ``base ** (1 + alpha * i / (n - 1))`` (``base`` when ``n == 1``).

    >>> [round(apex_epsilon(i, 3), 5) for i in range(3)]
    [0.4, 0.01619, 0.00066]
    """
    return float(base ** (1.0 + alpha * i / (n - 1))) if n > 1 else float(base)


class RowBatch(NamedTuple):
    """``T`` vector steps of one actor's ``E_i`` env copies as replay rows.

    Attributes:
        worker: the actor's index.
        version: weight version that acted (learner gradient steps when sent; -1: uniformly random, no weights).
        step_versions: ``[T]`` the version of every step.
        rows: group -> field -> ``[T, E_i, A, ...]`` (what :func:`replay_rows` builds for each step).
        lanes: ``[E_i]`` the run's env copy of each column (the replay lanes).
        episodes: episodes that finished, ``env_index`` counted over the run's copies.
        env_steps: ``T * E_i``; agent_steps: alive agent decisions.
        reward_norm: always ``None`` (what the pool keeps per worker; off-policy rewards are raw).
    """

    worker: int
    version: int
    step_versions: np.ndarray
    rows: dict[str, dict[str, np.ndarray]]
    lanes: np.ndarray
    episodes: list[EpisodeStats]
    env_steps: int
    agent_steps: int
    reward_norm: None = None


class ApexActor:
    """Env copies ``copies`` of the run, a CPU copy of the acting networks, a batch collector (no process logic).

    Args:
        cfg: the run's config; index: the actor's index; copies: the run's env copies it owns.
        seeds: reset seeds of those copies; torch_seed: seed of its exploration generator.
        epsilon: its exploration epsilon once it has weights (DQN; 0 for SAC / TD3, which explore by their noise).
        poll: called before every step; newer weights ``(state, version)`` it returns act from that step on.
    """

    def __init__(self, cfg: Config, index: int, copies: range, seeds: Sequence[int], torch_seed: int,
                 epsilon: float, poll: Callable[[], tuple[Any, int] | None] | None = None) -> None:
        self.index, self.epsilon, self.poll, self.batch = index, float(epsilon), poll, cfg.algo.actor_batch
        self.lanes = np.arange(copies.start, copies.stop)
        seed_everything(torch_seed)
        self.env = SyncVectorEnv(env_factory(cfg), len(copies))
        try:
            self.loop = EnvLoop(self.env, check_inputs=cfg.health.check_inputs)
            self.loop.reset(list(seeds))
            self.policy: OffPolicyActor = build_actor(self.env.spec, cfg, "cpu")
            self.policy.generator.manual_seed(torch_seed)
        except BaseException:
            self.env.close()
            raise
        self.version = -1

    def set_weights(self, state: Mapping[str, Any], version: int) -> None:
        """Act with the learner's networks and normalizer statistics (``OffPolicyActor.state_dict()``, numpy)."""
        self.policy.load_state_dict(to_torch(state))
        self.version = version

    def current_epsilon(self) -> float:
        """1 (uniformly random) until the first weights arrive, then :attr:`epsilon`."""
        return 1.0 if self.version < 0 else self.epsilon

    def collect(self) -> RowBatch:
        """``algo.actor_batch`` vector steps; each step acts with the newest weights ``poll`` hands over."""
        rows: dict[str, dict[str, list[np.ndarray]]] = {}
        versions, episodes, agent_steps = [], [], 0

        def act(obs: dict[str, GroupObs], state: np.ndarray | None) -> Any:
            return self.policy.act(obs, state, deterministic=False, update_stats=False, with_value=False,
                                   epsilon=self.current_epsilon())

        for _ in range(self.batch):
            newest = self.poll() if self.poll is not None else None
            if newest is not None:
                self.set_weights(*newest)
            versions.append(self.version)
            obs, out, step = self.loop.step(act)
            for g, o in obs.items():
                r = replay_rows(o, out.action[g].cpu().numpy(), step.transition[g], step.obs[g], None, None)
                for k, v in r.items():
                    rows.setdefault(g, {}).setdefault(k, []).append(v)
                agent_steps += int(o.alive.sum())
            episodes.extend(ep._replace(env_index=ep.env_index + int(self.lanes[0])) for ep in step.episodes)
        stacked = {g: {k: np.stack(v) for k, v in f.items()} for g, f in rows.items()}
        steps = np.asarray(versions, np.int64)
        return RowBatch(self.index, int(steps.min()), steps, stacked, self.lanes, episodes,
                        self.batch * len(self.lanes), agent_steps)

    def close(self) -> None:
        self.env.close()


def serve_actor(conn: Connection, cfg: Config, index: int, copies: range, seeds: Sequence[int], torch_seed: int,
                epsilon: float) -> None:
    """Actor process: build an :class:`ApexActor`, then collect and send batches until told to stop.

    SIGINT / SIGTERM are left to the learner (which checkpoints, then closes the actors); the actor also
    exits when the learner's end of the pipe closes. An exception goes back as ``("error", env_index,
    message, traceback)``.
    """
    serve_loop(conn, copies, lambda inbox: ApexActor(cfg, index, copies, seeds, torch_seed, epsilon,
                                                     poll=lambda: inbox.take(block=False)))


class ActorPool(WorkerPool):
    """:class:`WorkerPool` running :func:`serve_actor` processes; ``epsilons[i]`` is actor i's exploration."""

    def __init__(self, cfg: Config, num_actors: int, seeds: Callable[[int, int], list[int]],
                 epsilons: Sequence[float], timeout: float = 300.0) -> None:
        super().__init__(cfg, num_actors, seeds, timeout)
        self.epsilons = list(epsilons)
        self._ctx.set_forkserver_preload(["marl.on_policy.workers", "marl.off_policy.apex"])

    label, unit, work = "apex", "actor", "batch"
    seed_salt = (7,)

    def process_body(self, w: int, child: Connection, copies: range, seeds: list[int],
                     torch_seed: int) -> tuple[Callable[..., None], tuple]:
        return serve_actor, (child, self.cfg, w, copies, seeds, torch_seed, self.epsilons[w])


class ApexTrainer(OffPolicyTrainer):
    """DQN / SAC / TD3 with ``algo.num_actors`` actor processes feeding the learner's replay (module docstring).

    Checkpoint entries added to :class:`OffPolicyTrainer`'s: ``apex`` (``weight_version``, ``actor_restarts``).
    """

    pool: ActorPool | RayWorkerPool | None = None
    ray_connection: Any = None
    supports_distributed = False

    def make_env(self) -> VectorEnv:
        return vector_env(self.cfg, 1, backend="sync")  # the copies live in the actors

    def build(self) -> None:
        if self.spec.turn_based:
            raise ConfigError("algo.num_actors: turn-based (AEC) games are not available with Ape-X actors; "
                              "set algo.num_actors=0")
        super().build()
        algo = self.cfg.algo
        self.num_actors = algo.num_actors
        self.epsilons = [apex_epsilon(i, self.num_actors, algo.apex_epsilon_base, algo.apex_epsilon_alpha)
                         if isinstance(algo, DQNConfig) else 0.0 for i in range(self.num_actors)]
        self.weight_version = -1  # learner grad steps when the actors' weights were last sent (-1: none yet)
        self.restarts_before = 0
        self.lags: list[np.ndarray] = []
        # runtime=ray: connect now, before train() installs its stop-signal handlers (ray.init installs its own)
        self.ray_connection = connect(self.cfg, self.num_actors) if self.cfg.runtime == "ray" else None

    def _copy_seeds(self, actor: int, generation: int) -> list[int]:
        """The synchronous run's reset seeds on a run's first start; then derived from the env steps, the actor and
        its generation (a resumed run or a replaced actor starts new episodes)."""
        sl = self.pool.slices[actor] if self.pool is not None else slice(0, 0)
        if self.env_steps == 0 and generation == 0:
            return seeds_for(self.cfg.seed, self.cfg.env.num_envs)[sl]
        entropy = np.random.SeedSequence([self.cfg.seed, self.env_steps, actor, generation + 1])
        return seeds_for(int(entropy.generate_state(1)[0]) >> 1, sl.stop - sl.start)

    def weights(self) -> dict[str, Any]:
        """What an actor acts with: the networks and the observation statistics (numpy)."""
        return to_numpy(self.actor.state_dict())

    def start_actors(self) -> None:
        if self.cfg.runtime == "ray":
            self.pool = RayWorkerPool(self.cfg, self.num_actors, self._copy_seeds, connection=self.ray_connection,
                                      make_worker=self._ray_actor, label="apex")
        else:
            self.pool = ActorPool(self.cfg, self.num_actors, self._copy_seeds, self.epsilons)
        if self.env_steps >= self.cfg.algo.learning_starts:  # a resumed run: act with the policy at once
            self.weight_version = self.learner.grad_steps
            self.pool.latest = (self.weights(), self.weight_version)
        self.pool.start()

    def prepare(self) -> None:
        """Start the actors before the run's clock starts: their start-up (processes or Ray actors, env copies) is
        not training time, as for appo's workers."""
        if self.pool is None:
            self.start_actors()

    def _ray_actor(self, actor: int) -> Callable[..., ApexActor]:
        """What Ray actor ``actor`` hosts: an :class:`ApexActor` with its epsilon (picklable: sent to the cluster)."""
        return functools.partial(ApexActor, epsilon=self.epsilons[actor])

    def sync_weights(self) -> None:
        self.weight_version = self.learner.grad_steps
        self.pool.broadcast(self.weights(), self.weight_version)

    def restarts(self) -> int:
        return self.restarts_before + (self.pool.restarts if self.pool is not None else 0)

    def close(self) -> None:
        try:
            if self.pool is not None:
                self.pool.close()
                self.restarts_before += self.pool.restarts
                self.pool = None
            if self.ray_connection is not None:  # idempotent; the pool may have closed it
                self.ray_connection.close()
        finally:
            super().close()

    def checkpoint_state(self, name: str) -> dict[str, Any]:
        state = super().checkpoint_state(name)
        state["apex"] = {"weight_version": self.weight_version, "actor_restarts": self.restarts()}
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.restarts_before = int(state.get("apex", {}).get("actor_restarts", 0))

    def store_batch(self, batch: RowBatch) -> None:
        """Write an actor's rows into its lanes, step by step (observation statistics update per step, as in the
        synchronous loop); count its steps and episodes."""
        for g, fields in batch.rows.items():
            buf = self.replay[g]
            for t in range(len(batch.step_versions)):
                row = {k: v[t] for k, v in fields.items()}
                self.actor.normalize(g, row["obs"], row["alive"], True)
                buf.add(row, batch.lanes)
                self.health.note_rewards(g, row["reward"])
        self.env_steps += batch.env_steps
        self.agent_steps += batch.agent_steps
        self.episodes += len(batch.episodes)
        acted = batch.step_versions[batch.step_versions >= 0]
        if acted.size:
            self.lags.append(self.learner.grad_steps - acted)

    def advance(self) -> list[Report]:
        """One actor batch stored, then the training phases now due (as :meth:`OffPolicyTrainer.advance`); fresh
        weights to the actors when learning starts and every ``algo.weight_sync_interval`` gradient steps."""
        cfg, algo = self.cfg, self.cfg.algo
        if self.pool is None:
            self.start_actors()
        batch: RowBatch = self.pool.next_rollout()
        before = self.env_steps
        self.store_batch(batch)
        self.window.episodes.extend(batch.episodes)
        if self.weight_version < 0 and self.env_steps >= algo.learning_starts:
            self.sync_weights()  # warm-up over: the actors act with the policy from now on
        first = next(iter(self.replay.values()))
        ready = len(first) >= min(first.capacity, max(algo.learning_starts, algo.batch_size))
        self.since_train += self.env_steps - before if ready else 0
        reports = []
        while ready and self.since_train >= algo.train_freq:
            self.since_train -= algo.train_freq
            for _ in range(algo.gradient_steps):
                self.window.add(self.train_step())
                if self.learner.grad_steps - self.weight_version >= algo.weight_sync_interval:
                    self.sync_weights()
            self.iteration += 1
            if self.iteration % cfg.log.interval == 0:
                reports.append(self.report())
        return reports

    def report(self) -> Report:
        self.check_finite()
        row = self.window.means()
        warm = self.weight_version < 0
        for i, eps in enumerate(self.epsilons):
            if isinstance(self.cfg.algo, DQNConfig):
                row[f"apex/epsilon_{i}"] = 1.0 if warm else eps
        lags = np.concatenate(self.lags) if self.lags else np.zeros(0)
        if lags.size:
            row["apex/weight_lag_mean"] = float(lags.mean())
            row["apex/weight_lag_max"] = float(lags.max())
        row["apex/actor_restarts"] = float(self.restarts())
        row.update(episode_metrics(self.window.episodes, self.spec))
        self.lags = []
        self.window = MetricWindow(self.learner.grad_steps)
        return Report(row, log=True)
