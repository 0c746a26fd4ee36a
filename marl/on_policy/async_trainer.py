"""Asynchronous PPO (``algo.name: appo``): worker processes collect, the learner corrects the policy lag.

The IMPALA shape (Espeholt et al. 2018) on one machine::

    worker w (process):  loop { collect T steps, each with the newest weights received; send the rollout }
    learner:             loop { msg = the first rollout any worker has ready
                                lag = version - msg.step_versions      (learner updates since mu acted, [T])
                                drop it if max(lag) > algo.max_lag, else:
                                  pi, V = the learner's networks on msg's observations
                                  v_s, A_s = V-trace(r, V, log pi - log mu)      (marl.returns.compute_vtrace)
                                  PPO update on (A_s, v_s); version += 1
                                  send the weights and merged normalizer statistics to every worker }

A worker never waits for the learner (only for its first weights): collection and learning
overlap, and each step is a few updates old when the learner uses it (its *policy lag*, logged as
``async/policy_lag_mean`` / ``async/policy_lag_max`` over the steps since the last logged
iteration). Taking new weights within a rollout rather than only between rollouts cut the lag on
simple_spread with 2 workers from 3 updates to 1.0-1.6 on average (see docs/async.md).

The PPO update is :class:`marl.algos.ppo.PPOLearner`'s, unchanged: its "old" log-probabilities and
values are the learner's own at the start of the update, and the importance weights of the behaviour
policy enter through V-trace's clipped ``rho_s`` in the advantages (the decoupled PPO objective:
clipping around the proximal policy, correction for the behaviour policy). With no lag the targets
and the advantages are PPO's GAE returns and advantages (``gae_lambda`` is V-trace's lambda).

Normalization: observation statistics update in each worker on its own data; every rollout carries
the moments it added, which the learner merges (:meth:`RunningMeanStd.merge`) and sends back with
the weights. Reward scaling is per worker (each scales by the return std of its own copies); the
scalers' state comes back with every rollout and is checkpointed. Values at truncation (``final_value``)
come from the behaviour critic; V(x_s) and V(x_T) from the learner's.

Counters: every env step a worker delivered counts, dropped rollouts too (``async/dropped_rollouts``);
an iteration is one rollout received. A worker that dies is replaced on fresh env copies with a
warning (``async/worker_restarts``). With ``runtime=ray`` the workers are Ray actors
(:mod:`marl.on_policy.ray_workers`), which take new weights between rollouts. The learner holds a
one-copy env only for the spec and the checkpoint format; a resumed run starts fresh episodes in its
workers (the reward scalers continue).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from marl.algos.ppo import PPOLearner, linear_schedule
from marl.config import ConfigError
from marl.data.rollout import GroupBatch
from marl.env.make import vector_env
from marl.env.vector import VectorEnv
from marl.logger import episode_metrics
from marl.on_policy.policy import ActorCriticPolicy
from marl.on_policy.ray_workers import RayWorkerPool, connect
from marl.on_policy.trainer import torch_threads
from marl.on_policy.workers import RolloutMessage, WorkerPool, resolve_workers, to_numpy, to_torch
from marl.returns import compute_vtrace
from marl.run import Report, TrainingRun
from marl.seeding import seeds_for


def vtrace_batches(
    policy: ActorCriticPolicy, msg: RolloutMessage, *, gamma: float, lam: float, rho_bar: float, c_bar: float,
    bootstrap_on_truncation: bool = True,
) -> tuple[dict[str, GroupBatch], dict[str, float]]:
    """The rows of one rollout ready for :meth:`PPOLearner.update`, with V-trace advantages and targets.

    ``log_prob`` and ``value`` of the batches are the learner's (``policy``) on the stored inputs, the
    advantages and returns V-trace's (:func:`marl.returns.compute_vtrace`, ``log_rho = log pi - log mu``).

    Returns:
        group -> :class:`GroupBatch` ``[T*E_w, A, ...]``, and ``vtrace_rho_mean`` (mean clipped ratio
        over alive agents) and ``vtrace_ratio_max``.
    """
    device = policy.device
    batches: dict[str, GroupBatch] = {}
    rho_sum, alive_sum, ratio_max = 0.0, 0, 0.0
    for name, fields in msg.groups.items():
        f = {k: torch.from_numpy(v).to(device) for k, v in fields.items()}
        steps, envs = f["reward"].shape[:2]
        net = policy.net[name]
        obs = f["obs"].flatten(0, 1)
        critic_in = f["critic_in"].flatten(0, 1) if "critic_in" in f else obs
        mask = f["action_mask"].flatten(0, 1) if "action_mask" in f else None
        action = f["action"].flatten(0, 1)
        with torch.no_grad():
            dist, value = net.dist_and_value(obs, critic_in, mask)
            log_prob = dist.log_prob(action)
            last_value = net.value(torch.from_numpy(msg.last_critic_in[name]).to(device))
        log_rho = log_prob.view(steps, envs, -1) - f["log_prob"]
        terminated = f["terminated"] if bootstrap_on_truncation else f["terminated"] | f["truncated"]
        out = compute_vtrace(f["reward"], value.view(steps, envs, -1), log_rho, terminated=terminated,
                             truncated=f["truncated"], alive=f["alive"], final_value=f["final_value"],
                             last_value=last_value, gamma=gamma, lam=lam, rho_bar=rho_bar, c_bar=c_bar)
        alive = f["alive"]
        rho_sum += float(out.rho.sum())
        alive_sum += int(alive.sum())
        if alive.any():
            ratio_max = max(ratio_max, float(log_rho[alive].exp().max()))
        batches[name] = GroupBatch(obs, critic_in, action, log_prob, value, out.advantage.flatten(0, 1),
                                   out.target.flatten(0, 1), alive.flatten(0, 1), mask)
    return batches, {"vtrace_rho_mean": rho_sum / max(alive_sum, 1), "vtrace_ratio_max": ratio_max}


class AsyncPPOTrainer(TrainingRun):
    """Asynchronous PPO with V-trace (see the module docstring); the run's scaffolding does the rest.

    Checkpoint entries added to :class:`marl.run.TrainingRun`'s: ``collector`` (``workers``: each
    worker's reward scalers), ``async`` (``version``, ``dropped_rollouts``, ``worker_restarts``) and
    ``rng.generator`` (minibatch shuffling).
    """

    pool: Any = None  # a WorkerPool (runtime=local) or a marl.on_policy.ray_workers.RayWorkerPool (runtime=ray)

    def make_env(self) -> VectorEnv:
        return vector_env(self.cfg, 1, backend="sync")  # the copies live in the workers

    def build(self) -> None:
        cfg = self.cfg
        self.num_workers = resolve_workers(cfg)
        rows = cfg.algo.num_steps * cfg.env.num_envs // self.num_workers
        if cfg.env.num_envs % self.num_workers or rows % cfg.algo.num_minibatches:
            raise ConfigError(f"env.num_workers: {self.num_workers} workers need to split env.num_envs="
                              f"{cfg.env.num_envs} evenly into rollouts of rows divisible by algo.num_minibatches; "
                              "set env.num_workers explicitly")
        self.policy = ActorCriticPolicy(self.spec, cfg, self.device)
        self.learner = PPOLearner(self.policy, cfg.algo)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.version = 0
        self.dropped = 0
        self.restarts_before = 0  # replacements in the resumed parts of the run
        self.reward_state: list[dict | None] = [None] * self.num_workers
        self.lags: list[np.ndarray] = []
        # The workers keep collecting during the update: no cores to borrow (update_threads' auto mode does so).
        self.update_threads = cfg.update_threads if cfg.update_threads > 0 else cfg.torch_threads
        # runtime=ray: connect now, before train() installs its stop-signal handlers (ray.init installs its own)
        self.ray_connection = connect(cfg, self.num_workers) if cfg.runtime == "ray" else None

    def _copy_seeds(self, worker: int, generation: int) -> list[int]:
        """Reset seeds of a worker's copies: the sync run's on the first start of a run, then derived from
        the env step count, the worker and its generation (a resumed run or a replaced worker: new episodes)."""
        sl = self.pool.slices[worker] if self.pool is not None else slice(0, 0)
        if self.env_steps == 0 and generation == 0:
            return seeds_for(self.cfg.seed, self.cfg.env.num_envs)[sl]
        entropy = np.random.SeedSequence([self.cfg.seed, self.env_steps, worker, generation + 1])
        return seeds_for(int(entropy.generate_state(1)[0]) >> 1, sl.stop - sl.start)

    def prepare(self) -> None:
        """Start the workers before the run's clock starts, as PPO's env workers do (theirs start with the
        trainer): start-up is not training time."""
        if self.pool is None:
            self._start_workers()

    def _start_workers(self) -> None:
        """Start the workers (after :meth:`restore`: the seeds and reward scalers depend on it); they build their
        env copies and wait for their first weights, which the first :meth:`advance` sends."""
        algo = self.cfg.algo
        if self.cfg.runtime == "ray":  # actors on a Ray cluster; the same methods as the process pool
            self.pool = RayWorkerPool(self.cfg, self.num_workers, self._copy_seeds, timeout=algo.worker_timeout_s,
                                      connection=self.ray_connection)
        else:
            self.pool = WorkerPool(self.cfg, self.num_workers, self._copy_seeds, timeout=algo.worker_timeout_s)
        self.pool.start(self.reward_state)

    def weights(self) -> dict[str, Any]:
        """What a worker acts with: the learner's parameters and merged observation statistics (numpy)."""
        return to_numpy(self.policy.state_dict())

    def acting_policy(self) -> ActorCriticPolicy:
        return self.policy

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.policy.net.parameters())

    def checkpoint_state(self, name: str) -> dict[str, Any]:
        state = super().checkpoint_state(name)
        rewards = self.pool.reward_state if self.pool is not None else self.reward_state
        state["collector"] = {"workers": [to_torch(s) if s is not None else {} for s in rewards]}
        state["async"] = {"version": self.version, "dropped_rollouts": self.dropped,
                          "worker_restarts": self.restarts()}
        state["rng"]["generator"] = self.generator.get_state()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        saved = state["collector"]["workers"]
        if len(saved) == self.num_workers:  # another worker count: the reward scalers start afresh
            self.reward_state = [to_numpy(s) or None for s in saved]
        info = state["async"]
        self.version, self.dropped = int(info["version"]), int(info["dropped_rollouts"])
        self.restarts_before = int(info["worker_restarts"])
        self.generator.set_state(state["rng"]["generator"])

    def restarts(self) -> int:
        return self.restarts_before + (self.pool.restarts if self.pool is not None else 0)

    def close(self) -> None:
        try:
            if self.pool is not None:
                self.pool.close()
            if getattr(self, "ray_connection", None) is not None:  # idempotent; the pool may have closed it
                self.ray_connection.close()
        finally:
            super().close()

    def advance(self) -> list[Report]:
        """One rollout received: merge its statistics, drop it if too stale, else V-trace and one PPO update;
        send the new weights to every worker."""
        cfg, algo = self.cfg, self.cfg.algo
        if self.pool is None:
            self._start_workers()
        if self.pool.latest is None:  # the first rollouts: no worker collects before the run's clock starts
            self.pool.broadcast(self.weights(), self.version)
        msg = self.pool.next_rollout()
        lag = self.version - msg.step_versions  # [T]
        for name, (mean, var, count) in msg.obs_moments.items():
            self.policy.obs_norm[name].rms.merge(mean, var, count)
        self.iteration += 1
        self.env_steps += msg.env_steps
        self.agent_steps += msg.agent_steps
        self.episodes += len(msg.episodes)
        self.lags.append(lag)
        row = episode_metrics(msg.episodes, self.spec)
        if 0 <= algo.max_lag < int(lag.max()):
            self.dropped += 1
        else:
            progress = min(1.0, self.env_steps / cfg.total_env_steps)
            if algo.anneal_lr:
                self.learner.set_lr(linear_schedule(algo.lr, progress))
            if algo.anneal_clip:
                self.learner.clip_coef = linear_schedule(algo.clip_coef, progress)
            batches, stats = vtrace_batches(self.policy, msg, gamma=algo.gamma, lam=algo.gae_lambda,
                                            rho_bar=algo.rho_bar, c_bar=algo.c_bar,
                                            bootstrap_on_truncation=algo.bootstrap_on_truncation)
            with torch_threads(self.update_threads):
                metrics = self.learner.update(batches, num_minibatches=algo.num_minibatches,
                                              norm_advantage=cfg.norm.advantage, generator=self.generator)
            self.version += 1
            row.update({f"train/{k}": v for k, v in {**metrics, **stats}.items()})
            self.pool.broadcast(self.weights(), self.version)
        log = self.iteration % cfg.log.interval == 0
        if log:
            row["async/policy_lag_mean"] = float(np.concatenate(self.lags).mean())
            row["async/policy_lag_max"] = float(np.concatenate(self.lags).max())
            self.lags = []
        row["async/dropped_rollouts"] = float(self.dropped)
        row["async/worker_restarts"] = float(self.restarts())
        return [Report(row, log=log)]
