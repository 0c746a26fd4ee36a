"""The off-policy training loop; see :mod:`marl.off_policy` for the glossary and the data flow."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from marl import checkpoint as ckpt
from marl.algos.dqn import linear_epsilon
from marl.config import Config, DQNConfig, OffPolicyConfig
from marl.data import per_beta_at
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
from marl.run import Report, TrainingRun
from marl.types import ActOutput, EpisodeStats, GroupObs


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
    """

    remedies = OFF_POLICY_REMEDIES

    def __init__(self, cfg: Config) -> None:
        if not isinstance(cfg.algo, OffPolicyConfig):
            raise ValueError(f"OffPolicyTrainer runs dqn, sac or td3, not {cfg.algo.name!r}")
        self.goal_env: Any = None  # HER's goal env, once built (closed with the training envs)
        super().__init__(cfg)

    def build(self) -> None:
        cfg = self.cfg
        self.actor: OffPolicyActor = build_actor(self.spec, cfg, self.device)
        self.learner = build_learner(self.actor, cfg)
        goals = goal_functions(cfg, self.spec) if cfg.algo.her else None
        self.goal_env = None if goals is None else goals.env
        self.replay = build_replays(self.spec, cfg, goals)
        if goals is not None:  # relabelled rewards reach the success reward even before a real success
            for g in self.replay:
                self.health.note_rewards(g, goals.success_reward)
        self.rng = np.random.default_rng(cfg.seed)
        self.since_train = 0  # env steps collected since the last training phase
        self.window = MetricWindow()

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
        """One vector step of every env copy: act, step, store the rows; return the episodes that ended.

        With HER the achieved goals come with the observations (``GroupObs.achieved_goal``) and
        the final observations (``GroupTransition.final_achieved_goal``)."""

        def act(obs: dict[str, GroupObs], state: np.ndarray | None) -> ActOutput:
            return self.actor.act(obs, state, deterministic=False, update_stats=True, with_value=False,
                                  epsilon=epsilon)

        try:
            obs, out, step = self.loop.step(act)
        except WorkerLost as lost:  # runtime=ray: a worker died mid-step; that step is not stored
            self.loop.set_obs(lost.obs, lost.state)
            return []
        for g, buf in self.replay.items():
            o, tr = obs[g], step.transition[g]
            next_achieved = None
            if o.achieved_goal is not None:
                ended = (tr.terminated | tr.truncated)[..., None]
                next_achieved = np.where(ended, tr.final_achieved_goal, step.obs[g].achieved_goal)
            buf.add(replay_rows(o, out.action[g].cpu().numpy(), tr, step.obs[g], o.achieved_goal, next_achieved))
            self.health.note_rewards(g, tr.reward)
            self.agent_steps += int(o.alive.sum())
        self.env_steps += self.env.num_envs
        return step.episodes

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
        finished = self.collect(epsilon)
        self.episodes += len(finished)
        self.window.episodes.extend(finished)
        first = next(iter(self.replay.values()))
        ready = len(first) >= min(first.capacity, max(algo.learning_starts, algo.batch_size))
        self.since_train += self.env.num_envs if ready else 0
        reports = []
        while ready and self.since_train >= algo.train_freq:
            self.since_train -= algo.train_freq
            for _ in range(algo.gradient_steps):
                self.window.add(self.train_step())
            self.iteration += 1
            if self.iteration % cfg.log.interval == 0:
                self.check_finite()
                row = self.window.means()
                if isinstance(algo, DQNConfig):
                    row["train/epsilon"] = epsilon
                row.update(episode_metrics(self.window.episodes, self.spec))
                reports.append(Report(row, log=True))
                self.window = MetricWindow(self.learner.grad_steps)
        return reports

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
