"""PPO's trainer: collect a rollout -> GAE per group -> one update; the run's scaffolding does the rest.

Glossary (the words every counter and metric uses, on- and off-policy alike):

* **env step**: one step of one env copy; ``env_steps`` sums them over copies
  (a vector step of ``E`` copies adds ``E``). ``total_env_steps`` is counted in
  these. With ``env.action_repeat = k`` an env step is one agent decision and
  covers ``k`` env frames (``env_frames`` is logged too).
* **agent step**: one decision of one alive agent; ``agent_steps``.
* **iteration**: one rollout of ``T`` steps per copy followed by one update.
* **update**: ``update_epochs`` passes of minibatch gradient steps over a rollout.
* **grad step**: one optimizer step; ``grad_steps``.
* **episode**: one env copy from reset to the end (all agents done or time limit).

Data flows one way: env -> collector -> rollout -> learner -> logger. The run
directory, checkpoints, evaluation, resume, signals and ``summary.json`` are those
of :class:`marl.run.TrainingRun`, which both :class:`OnPolicyTrainer` (PPO) and
:class:`marl.off_policy.OffPolicyTrainer` (DQN, SAC, TD3) are; :mod:`marl.api`
picks the trainer of a config through :mod:`marl.registry`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable
from typing import Any

import torch

from marl.algos.ppo import PPOLearner, linear_schedule
from marl.config import Config, ConfigError
from marl.env.batched import torch_native
from marl.env.make import batched_vector_env
from marl.env.ray_env import WorkerLost
from marl.env.vector import SubprocVectorEnv, VectorEnv, chunk_slices
from marl.logger import episode_metrics
from marl.on_policy.collector import RolloutCollector, RolloutResult
from marl.on_policy.policy import ActorCriticPolicy
from marl.run import Report, TrainingRun


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, Slurm, cpusets), else the CPU count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def update_threads(cfg: Config, workers: int, on_cpu: bool = True) -> int:
    """Torch threads for the PPO update (``cfg.update_threads``; ``-1`` = auto), given the
    number of env worker processes (0 = in-process envs) and whether the learner runs on the CPU.

    Auto uses more than ``torch_threads`` only when this process has cores beyond the run's own
    (main process + workers): one thread per worker, at most 1 + the spare cores, at most 4.
    Borrowing the waiting workers' cores instead gained +2% / +11% on a quiet 2-core machine
    (simple_spread, 2 workers) but ran at 0.16-0.38x of one thread as soon as anything else
    ran there (``python bench/bench_update_threads.py``): a default must not lose 3-6x on a
    shared laptop to win 6% on an idle one. Collection keeps ``torch_threads`` (the workers need
    the cores then); 0 = leave torch's setting. A batched env (``env.backend=batched``) has no workers:
    auto gives ``torch_threads``; two threads made its update 3.3-4.3x slower on the shared 2-core
    machine (``bench/README.md``, "Batched environments").
    """
    if cfg.update_threads > 0:
        return cfg.update_threads
    if cfg.update_threads == -1 and workers > 0 and on_cpu:
        spare = available_cpus() - workers - 1
        if spare >= 1:
            return min(workers, spare + 1, 4)
    return cfg.torch_threads


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads (0 = unchanged), then restore the previous count."""
    previous = torch.get_num_threads()
    if n > 0 and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


class OnPolicyTrainer(TrainingRun):
    """PPO: collect ``algo.num_steps`` steps per env copy, compute GAE, update; the rest is the run's.

    Checkpoint entries added to :class:`marl.run.TrainingRun`'s: ``collector``
    (reward normalizers; their running returns of every env copy of the run) and
    ``rng.generator`` (minibatch shuffling; the same on every rank under torchrun).

    Under torchrun (:mod:`marl.distributed`) each rank collects from its own env copies and
    shuffles its own rows with the shared generator; the gradients of every optimizer step are
    averaged over ranks (one all-reduce), the normalizer statistics merged at every update, the
    counters summed, and the parameters compared every ``distributed.check_interval`` updates.
    """

    supports_distributed = True

    def build(self) -> None:
        cfg = self.cfg
        self.policy = ActorCriticPolicy(self.spec, cfg, self.device)
        self.learner = PPOLearner(self.policy, cfg.algo)
        self.collector = RolloutCollector(self.loop, self.policy, num_steps=cfg.algo.num_steps,
                                          reward_norm=cfg.norm.reward, reward_clip=cfg.norm.reward_clip,
                                          gamma=cfg.algo.gamma, bptt_len=cfg.algo.bptt_len)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.finish_line = None  # DD-PPO preemption (distributed.preempt_fraction): the ranks' finished rollouts
        if self.dist is not None and cfg.distributed.preempt_fraction > 0:
            if self.policy.recurrent:
                raise ConfigError("distributed.preempt_fraction: recurrent policies train on whole BPTT chunks; "
                                  "set distributed.preempt_fraction=0 (or model.recurrent=none)")
            self.finish_line = self.dist.finish_line()
        if self.dist is not None:
            self.learner.grad_sync = self.dist.average_grads
            for norm in [*self.policy.obs_norm.values(), *self.collector.reward_scalers.values()]:
                norm.rms.sync = self.dist.gather_moments
                # with preemption the ranks must not step in lockstep: statistics merged once per rollout
                norm.rms.deferred = self.finish_line is not None
        workers = self.env.num_chunks if isinstance(self.env, SubprocVectorEnv) else 0
        self.update_threads = update_threads(cfg, workers, self.device.type == "cpu")

    def make_env(self) -> VectorEnv:
        """The training env; a VMAS env is simulated on the learner's device and stays torch end to end
        (:func:`marl.env.batched.torch_native`); every other env as :class:`marl.run.TrainingRun` makes it."""
        cfg = self.cfg
        if cfg.env.backend == "batched" and cfg.runtime != "ray" and torch_native(
                cfg.env.id, cfg.algo.name, cfg.health.check_inputs, cfg.model.recurrent != "none"):
            return batched_vector_env(cfg, len(self.copies), device=str(self.device))
        return super().make_env()

    def acting_policy(self) -> ActorCriticPolicy:
        return self.policy

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.policy.net.parameters())

    def checkpoint_state(self, name: str) -> dict[str, Any]:
        state = super().checkpoint_state(name)
        state["collector"] = self.collector.state_dict()
        if self.dist is not None:  # the running returns (and hidden states) of every rank's copies, in copy order
            for s in state["collector"]["reward_norm"].values():
                s["ret"] = torch.cat(self.dist.gather_objects(s["ret"]))
            if "hidden" in state["collector"]:
                state["collector"]["hidden"] = {g: torch.cat(self.dist.gather_objects(h))
                                                for g, h in state["collector"]["hidden"].items()}
        state["rng"]["generator"] = self.generator.get_state()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        collector = state["collector"]
        if self.dist is not None:  # this rank's copies' running returns and hidden states
            rows = slice(self.copies.start, self.copies.stop)
            collector = {"reward_norm": {g: {**s, "ret": s["ret"][rows]} for g, s in collector["reward_norm"].items()},
                         **({"hidden": {g: h[rows] for g, h in collector["hidden"].items()}}
                            if "hidden" in collector else {})}
        self.collector.load_state_dict(collector)
        self.generator.set_state(state["rng"]["generator"])

    def synced_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """What every rank must hold identically: the parameters, then the normalizer statistics (not the
        reward scalers' running returns, which are per env copy)."""
        norms = [*(("obs_norm." + k, n.rms) for k, n in self.policy.obs_norm.items()),
                 *(("reward_norm." + g, s.rms) for g, s in self.collector.reward_scalers.items())]
        return [*self.policy.net.named_parameters(),
                *((f"{name}.{key}", t) for name, rms in norms for key, t in rms.state_dict().items())]

    def preemption(self) -> Callable[[int], bool] | None:
        """DD-PPO's straggler preemption (``distributed.preempt_fraction``): the ``stop`` of this iteration's
        rollout, true once that fraction of the ranks has collected all ``num_steps`` steps and this rank holds at
        least ``preempt_min_steps`` of them; ``None`` when off (or one process)."""
        if self.finish_line is None:
            return None
        d, line, iteration = self.cfg.distributed, self.finish_line, self.iteration
        need = max(1, math.ceil(d.preempt_fraction * self.dist.world_size))
        least = max(1, math.ceil(d.preempt_min_steps * self.cfg.algo.num_steps))
        return lambda steps: steps >= least and line.count(iteration) >= need

    def collect_whole(self) -> RolloutResult:
        """A rollout; one during which a Ray worker was lost (:class:`WorkerLost`, ``runtime=ray``) is
        discarded, normalizer statistics included, and collected again from the copies' current observations."""
        while True:
            norms = self.policy.obs_norm
            before = copy.deepcopy((self.collector.state_dict(), {k: n.state_dict() for k, n in norms.items()}))
            try:
                rollout = self.collector.collect(self.preemption())
                if self.finish_line is not None and rollout.steps == self.cfg.algo.num_steps:
                    self.finish_line.arrive(self.iteration)
                return rollout
            except WorkerLost as lost:
                hidden = self.collector.state_dict().get("hidden")  # recurrent: the states at the loss
                self.loop.set_obs(lost.obs, lost.state)
                self.collector.load_state_dict(before[0])
                for k, n in norms.items():
                    n.load_state_dict(before[1][k])
                if hidden is not None:  # the surviving copies go on from where they are; rebuilt ones start afresh
                    for w in lost.workers:
                        for h in hidden.values():
                            h[chunk_slices(self.env.num_envs, self.env.num_chunks)[w]] = 0.0
                    self.collector.load_state_dict({**before[0], "hidden": hidden})

    def advance(self) -> list[Report]:
        """One iteration: anneal, collect a rollout, GAE per group, one update; one report (logged every
        ``log.interval`` iterations). A NaN/inf raises in the update, before anything is logged or saved."""
        cfg, algo = self.cfg, self.cfg.algo
        interval = cfg.distributed.check_interval
        if self.dist is not None and interval and self.iteration % interval == 0:
            self.dist.check_in_sync(self.synced_tensors())
        progress = self.env_steps / cfg.total_env_steps
        if algo.anneal_lr:
            self.learner.set_lr(linear_schedule(algo.lr, progress))
        if algo.anneal_clip:
            self.learner.clip_coef = linear_schedule(algo.clip_coef, progress)
        rollout = self.collect_whole()
        for norm in [*self.policy.obs_norm.values(), *self.collector.reward_scalers.values()]:
            norm.rms.flush()  # deferred data-parallel statistics (preemption): every rank's rollout merged
        for name, buf in rollout.groups.items():
            buf.finish(rollout.last_value[name], algo.gamma, algo.gae_lambda, algo.bootstrap_on_truncation,
                       steps=rollout.steps)
        recurrent = self.policy.recurrent  # sequence batches of whole BPTT chunks
        batches = {name: buf.sequences() if recurrent else buf.flat(rollout.steps)
                   for name, buf in rollout.groups.items()}
        with torch_threads(self.update_threads):
            metrics = self.learner.update(batches, num_minibatches=algo.num_minibatches,
                                          norm_advantage=cfg.norm.advantage, generator=self.generator)
        counts = [rollout.env_steps, rollout.agent_steps, len(rollout.episodes), int(rollout.steps < algo.num_steps)]
        if self.dist is not None:  # the counters count every rank's steps (episode metrics are this rank's)
            counts = self.dist.sum_ints(counts)
        self.iteration += 1
        self.env_steps += counts[0]
        self.agent_steps += counts[1]
        self.episodes += counts[2]
        row = {f"train/{k}": v for k, v in metrics.items()}
        if self.finish_line is not None:
            row["dist/preempted_ranks"] = counts[3]
        row.update(episode_metrics(rollout.episodes, self.spec))
        return [Report(row, log=self.iteration % cfg.log.interval == 0)]
