"""The off-policy training loop; see :mod:`marl.off_policy` for the glossary and the data flow."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from marl import checkpoint as ckpt
from marl.algos.dqn import linear_epsilon
from marl.config import Config, ConfigError, DQNConfig, OffPolicyConfig
from marl.data import per_beta_at
from marl.distributed import rank_seed
from marl.env.ray_env import WorkerLost
from marl.health import OFF_POLICY_REMEDIES, check_finite_metrics, first_nonfinite
from marl.logger import episode_metrics
from marl.off_policy.actor import OffPolicyActor, build_actor, build_learner
from marl.off_policy.replay import (
    build_replays,
    goal_functions,
    load_replay_state,
    replay_bytes_per_row,
    replay_rows,
    replay_state,
    to_batch,
)
from marl.off_policy.turns import TurnRows
from marl.run import Report, TrainingRun
from marl.types import ActOutput, EpisodeStats, GroupObs, VecStep


class MetricWindow:
    """Learner metrics and finished episodes since the last log, summed as they come.

    A NaN or inf in any update makes its metric's sum non-finite, so one look at the
    sums (:meth:`all_finite`) covers every update of the window. The values are
    what the learners return (Python floats); nothing here reads from the device.
    """

    def __init__(self, first_grad_step: int = 0) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.episodes: list[EpisodeStats] = []
        self.first_grad_step = first_grad_step  # grad steps before the window's first update

    def add(self, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        """``train/<name>`` -> mean over the window's updates."""
        return {f"train/{k}": v / self.counts[k] for k, v in self.sums.items()}

    def all_finite(self) -> bool:
        return all(math.isfinite(v) for v in self.sums.values())


class OffPolicyTrainer(TrainingRun):
    """Builds an off-policy run (DQN, SAC, TD3; PER, n-step, HER) from a :class:`Config` and runs it.

    The run directory, checkpoints, evaluation, signals, ``summary.json`` and
    ``resume=RUN_DIR`` are those of :class:`marl.run.TrainingRun`; this class holds
    the acting networks (:attr:`actor`), the learner, one replay per group and the
    loop body: act, store, and every ``algo.train_freq`` env steps
    ``algo.gradient_steps`` updates (:meth:`advance`).

    Health: the learner's metrics are summed per logging window and checked for
    NaN/inf at every log and before every evaluation and checkpoint write (no
    checkpoint is overwritten with a non-finite network), and with PER after every
    update (a NaN TD error must not reach the priorities); the warning signs of
    :class:`marl.health.HealthMonitor` are watched once per log (``q_divergence``
    against the largest reward magnitude seen, ``ent_coef_collapse``,
    ``entropy_collapse``, ``returns_collapse``); ``health.check_inputs`` checks every
    observation and reward.

    Under torchrun (:mod:`marl.distributed`) each rank steps its own env copies into its own
    replay with its own exploration and sampling streams, and every gradient step averages the
    ranks' gradients (one all-reduce per optimizer step: each rank's batch of ``algo.batch_size``
    rows, so an effective batch of ``N * batch_size``); the observation normalizers merge every
    rank's rows, the counters are summed, ``algo.train_freq`` and ``learning_starts`` count the
    env steps of all ranks (so the replay ratio, sampled rows per collected row, is that of one
    process), and the parameters are compared every ``distributed.check_interval`` training phases.
    """

    remedies = OFF_POLICY_REMEDIES
    supports_distributed = True

    def __init__(self, cfg: Config) -> None:
        if not isinstance(cfg.algo, OffPolicyConfig):
            raise ValueError(f"OffPolicyTrainer runs dqn, sac or td3, not {cfg.algo.name!r}")
        self.goal_env: Any = None  # HER's goal env, once built (closed with the training envs)
        self.vector_steps = 0  # of this process since it started (torchrun: equal at every rank)
        self.unsynced = [0, 0]  # torchrun: this rank's agent steps and episodes not yet in the counters
        super().__init__(cfg)

    def build(self) -> None:
        cfg = self.cfg
        self.actor: OffPolicyActor = build_actor(self.spec, cfg, self.device)
        self.learner = build_learner(self.actor, cfg)
        goals = goal_functions(cfg, self.spec) if cfg.algo.her else None
        self.goal_env = None if goals is None else goals.env
        self.replay = build_replays(self.spec, cfg, goals, 1 if self.dist is None else self.dist.world_size)
        if goals is not None:  # relabelled rewards reach the success reward even before a real success
            for g in self.replay:
                self.health.note_rewards(g, goals.success_reward)
        # Turn-based games: one transition per agent from its move to its next turn (marl.off_policy.turns).
        self.turns = {g.name: TurnRows() for g in self.spec.groups} if self.spec.turn_based else None
        if self.turns is not None and (cfg.algo.n_step > 1 or cfg.algo.her):
            raise ConfigError(f"algo.{'her' if cfg.algo.her else 'n_step'}: turn-based (AEC) games take one-step "
                              "transitions from a move to the agent's next turn; set algo.n_step=1 and algo.her=false")
        self.rng = np.random.default_rng(cfg.seed)
        self.since_train = 0  # env steps collected since the last training phase
        self.window = MetricWindow()
        if self.dist is not None:
            if cfg.algo.save_replay:
                raise ConfigError("algo.save_replay: not available under torchrun (each rank holds its own replay); "
                                  "set algo.save_replay=false (a resumed run refills the replays)")
            self.learner.grad_sync = self.dist.average_grads
            for norm in self.actor.obs_norm.values():  # merged at sync_counts, not at every step
                norm.rms.sync = self.dist.gather_moments
                norm.rms.deferred = True
            self.rank_streams()

    def rank_streams(self) -> None:
        """Give a rank other than 0 its own exploration and replay-sampling streams (rank 0 keeps the
        single-process ones, so one rank is the plain run); derived from the seed, the rank and the env
        steps, so that a resumed run draws fresh ones."""
        if self.dist is not None and not self.is_main:
            seed = rank_seed(self.cfg.seed, self.dist.rank, self.env_steps)
            self.actor.generator.manual_seed(seed)
            self.rng = np.random.default_rng(seed + 1)

    def acting_policy(self) -> OffPolicyActor:
        return self.actor

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.learner.trainable())

    def close(self) -> None:
        super().close()
        if self.goal_env is not None:
            self.goal_env.close()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, name: str) -> dict[str, Any]:
        """Adds the replay-sampling and exploration RNGs, ``since_train`` and, with
        ``algo.save_replay``, the replays (not in ``best.pt``)."""
        if self.dist is not None:  # every rank saves at the same step: exact counters and statistics
            self.sync_counts()
        state = super().checkpoint_state(name)
        state["counters"]["since_train"] = self.since_train
        state["rng"].update(replay=ckpt.generator_state(self.rng), actor=self.actor.generator.get_state())
        if self.cfg.algo.save_replay and name != "best.pt":
            state["replay"] = {g: replay_state(buf) for g, buf in self.replay.items()}
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.since_train = int(state["counters"]["since_train"])
        self.rng.bit_generator.state = state["rng"]["replay"]
        self.actor.generator.set_state(state["rng"]["actor"])
        if "replay" in state:
            for g, buf in self.replay.items():
                load_replay_state(buf, state["replay"][g])
        self.window = MetricWindow(self.learner.grad_steps)
        self.rank_streams()

    # ------------------------------------------------------------------ loop pieces
    def exploration(self) -> float:
        """Epsilon of the next collected step: 1 in warm-up, DQN's linear schedule, else 0."""
        algo = self.cfg.algo
        if self.env_steps < algo.learning_starts:
            return 1.0
        if isinstance(algo, DQNConfig):
            return linear_epsilon(algo.epsilon_start, algo.epsilon_final, algo.exploration_fraction,
                                  self.env_steps / self.cfg.total_env_steps)
        return 0.0

    def collect(self, epsilon: float) -> list[EpisodeStats]:
        """One vector step of every env copy: act, step, store the rows, count the steps and episodes (of every
        rank); return the episodes that ended here.

        With HER the achieved goals come with the observations (``GroupObs.achieved_goal``) and
        the final observations (``GroupTransition.final_achieved_goal``)."""

        acted: list[np.ndarray | None] = []  # the global state the actions were chosen on

        def act(obs: dict[str, GroupObs], state: np.ndarray | None) -> ActOutput:
            acted.append(state)
            return self.act_step(obs, state, epsilon)

        try:
            obs, out, step = self.loop.step(act)
        except WorkerLost as lost:  # runtime=ray: a worker died mid-step; that step is not stored
            self.loop.set_obs(lost.obs, lost.state)
            self.drop_in_flight()
            return []
        agent_steps = self.store(obs, out, step, acted[0])
        self.vector_steps += 1
        if self.dist is None:
            self.env_steps += self.env.num_envs
            self.agent_steps += agent_steps
            self.episodes += len(step.episodes)
        else:  # every rank steps as many copies; the other counters are summed at sync_counts
            self.env_steps += self.env.num_envs * self.dist.world_size
            self.unsynced[0] += agent_steps
            self.unsynced[1] += len(step.episodes)
        return step.episodes

    def sync_counts(self, stop: bool = False) -> bool:
        """torchrun: add every rank's agent steps and episodes since the last call to the counters, merge the
        observation statistics gathered since then, and say whether ``stop`` is set at any rank. A collective:
        every rank calls it at the same vector step (every ``distributed.sync_interval`` of them, before a report,
        a divergence check and in every checkpoint). Between calls each rank folds its own observations into its
        statistics (acting and its minibatches use them; the parameters stay equal, the gradients are averaged)."""
        summed = self.dist.sum_ints([*self.unsynced, int(stop)])
        self.agent_steps += summed[0]
        self.episodes += summed[1]
        self.unsynced = [0, 0]
        for norm in self.actor.obs_norm.values():
            norm.rms.flush()
        return summed[2] > 0

    def agree_stop(self, flag: bool, final: bool) -> bool:
        """An iteration is one vector step here, so the ranks agree only every ``distributed.sync_interval`` of
        them (and at the loop's end), folding in :meth:`sync_counts`: a signal stops the run at the next such step."""
        if not final and self.vector_steps % self.cfg.distributed.sync_interval:
            return False
        return self.sync_counts(flag)

    def drop_in_flight(self) -> None:
        """A vector step was lost (a Ray worker died): no stored trajectory may span it."""
        for buf in self.replay.values():  # the step is missing from every copy: no trajectory spans it
            buf.cut(np.arange(self.env.num_envs))
        for turns in (self.turns or {}).values():  # moves in flight give no row (as after a resume)
            if turns.pending is not None:
                turns.pending[:] = False

    def act_step(self, obs: dict[str, GroupObs], state: np.ndarray | None, epsilon: float) -> ActOutput:
        """The collecting actor's actions for one vector step (normalizer statistics updated)."""
        return self.actor.act(obs, state, deterministic=False, update_stats=True, with_value=False, epsilon=epsilon)

    def store(self, obs: dict[str, GroupObs], out: ActOutput, step: VecStep, state: np.ndarray | None) -> int:
        """Write one vector step's rows into the replays (and note the rewards for the health monitor); return
        the number of agent decisions taken (alive agents).

        Args:
            obs: the observations acted on; out: the actor's output; step: what the env did.
            state: the global state the actions were chosen on (``None`` when the env reports none).
        """
        agent_steps = 0
        for g, buf in self.replay.items():
            o, tr = obs[g], step.transition[g]
            next_achieved = None
            if o.achieved_goal is not None:
                ended = (tr.terminated | tr.truncated)[..., None]
                next_achieved = np.where(ended, tr.final_achieved_goal, step.obs[g].achieved_goal)
            action = out.action[g].cpu().numpy()
            if self.turns is not None:
                buf.add(self.turns[g].rows(o, action, tr, step.obs[g]))
            else:
                buf.add(replay_rows(o, action, tr, step.obs[g], o.achieved_goal, next_achieved))
            self.health.note_rewards(g, tr.reward)
            agent_steps += int(o.alive.sum())
        return agent_steps

    def train_step(self) -> dict[str, float]:
        """One gradient step: sample every group's replay, update, feed PER priorities back."""
        algo = self.cfg.algo
        beta = per_beta_at(self.env_steps / self.cfg.total_env_steps, algo.per_beta)
        samples = {g: buf.sample(algo.batch_size, self.rng, beta) for g, buf in self.replay.items()}
        batches = {g: to_batch(s, self.actor.obs_norm.get(g), self.device) for g, s in samples.items()}
        out = self.learner.update(batches)
        if algo.per and not all(math.isfinite(v) for v in out.metrics.values()):
            self._raise_nonfinite(out.metrics, self.learner.grad_steps)  # before NaN TD errors reach the priorities
        for g, buf in self.replay.items():
            buf.update_priorities(samples[g].indices, out.td_error[g])  # a no-op without PER
        if algo.per:
            out.metrics["per_beta"] = beta
        return out.metrics

    def advance(self) -> list[Report]:
        """One vector step of every env copy, then the training phases now due (one per ``algo.train_freq``
        env steps, once the replays hold ``max(learning_starts, batch_size)`` rows); a report every
        ``log.interval`` training phases."""
        cfg, algo = self.cfg, self.cfg.algo
        epsilon = self.exploration()
        before = self.env_steps
        finished = self.collect(epsilon)
        self.window.episodes.extend(finished)
        ready = self.replay_ready()
        self.since_train += self.env_steps - before if ready else 0
        reports = []
        interval = cfg.distributed.check_interval
        while ready and self.since_train >= algo.train_freq:
            self.since_train -= algo.train_freq
            if self.dist is not None and interval and self.iteration % interval == 0:
                self.sync_counts()  # the statistics compared are the merged ones
                self.dist.check_in_sync(self.synced_tensors())
            for _ in range(algo.gradient_steps):
                self.window.add(self.train_step())
            self.iteration += 1
            if self.iteration % cfg.log.interval == 0:
                if self.dist is not None:  # the report's counters count every rank's steps
                    self.sync_counts()
                self.check_finite()
                row = self.window.means()
                if isinstance(algo, DQNConfig):
                    row["train/epsilon"] = epsilon
                row.update(episode_metrics(self.window.episodes, self.spec))
                reports.append(Report(row, log=True))
                self.window = MetricWindow(self.learner.grad_steps)
        return reports

    def replay_ready(self) -> bool:
        """Training may start: the replays hold ``max(learning_starts, batch_size)`` rows (or are full)."""
        algo, first = self.cfg.algo, next(iter(self.replay.values()))
        world = 1 if self.dist is None else self.dist.world_size  # learning_starts counts every rank's rows
        return len(first) >= min(first.capacity, max(-(-algo.learning_starts // world), algo.batch_size))

    def evaluate_and_keep_best(self, logger: Any) -> dict[str, Any] | None:
        """torchrun: merge the ranks' statistics first (every rank calls this), so that the policy rank 0 evaluates
        is the one ``best.pt`` keeps."""
        if self.dist is not None:
            self.sync_counts()
        return super().evaluate_and_keep_best(logger)

    def synced_tensors(self) -> list[tuple[str, Any]]:
        """What every rank must hold identically: the trained parameters, then the observation normalizers'
        statistics."""
        return [*(("learner." + str(i), p) for i, p in enumerate(self.learner.trainable())),
                *((f"obs_norm.{g}.{key}", t) for g, n in self.actor.obs_norm.items()
                  for key, t in n.rms.state_dict().items())]

    def check_finite(self) -> None:
        """The window's learner metrics are finite, else :class:`marl.health.NonFiniteError` naming the
        first non-finite one, the grad steps it covers, and what to try."""
        if not self.window.all_finite():
            self._raise_nonfinite(self.window.sums, self.window.first_grad_step + 1)

    def _raise_nonfinite(self, metrics: Mapping[str, float], first_grad_step: int) -> None:
        bad = first_nonfinite(self.actor.net.named_parameters())
        detail = ("; the acting networks are still finite" if bad is None else
                  f"; the acting networks are already non-finite (first: {bad})")
        check_finite_metrics({f"train/{k}": v for k, v in metrics.items()},
                             (first_grad_step, self.learner.grad_steps), detail)

    def start_metrics(self) -> dict[str, float]:
        return {"replay/bytes_per_row": float(sum(replay_bytes_per_row(b) for b in self.replay.values()))}

    def status_parts(self, row: Mapping[str, float]) -> list[str]:
        loss = row.get("train/q_loss")
        return [f"q_loss {loss:.3g}"] if loss is not None and math.isfinite(loss) else []
