"""The off-policy training loop; see :mod:`marl.off_policy` for the glossary and the data flow."""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marl import checkpoint as ckpt
from marl.algos.dqn import linear_epsilon
from marl.config import Config, DQNConfig, OffPolicyConfig, dump_yaml, to_dict
from marl.data import per_beta_at
from marl.env.adapters import EnvSnapshot
from marl.evaluation import evaluate
from marl.logger import Logger, episode_metrics, flatten_dict, flatten_eval
from marl.off_policy.actor import build_actor, build_learner
from marl.off_policy.replay import (
    achieved_goals,
    build_replays,
    goal_functions,
    load_replay_state,
    replay_bytes_per_row,
    replay_rows,
    replay_state,
    to_batch,
)
from marl.trainer import (
    TrainingInterrupted,
    check_resume_config,
    default_run_dir,
    find_checkpoint,
    resolve_device,
    seed_everything,
    vector_env,
)
from marl.types import EnvSpec, EpisodeStats, GroupObs


class OffPolicyTrainer:
    """Builds an off-policy run from a :class:`Config` and runs it (see the module docstring).

    Run directory, checkpoints (``latest.pt``, ``best.pt``, ``step_<env_steps>.pt``),
    evaluation, signals (SIGINT/SIGTERM save ``latest.pt`` and exit 130/143),
    ``summary.json`` and ``resume=RUN_DIR`` behave as in :class:`marl.trainer.Trainer`.
    """

    def __init__(self, cfg: Config) -> None:
        if not isinstance(cfg.algo, OffPolicyConfig):
            raise ValueError(f"OffPolicyTrainer runs dqn, sac or td3, not {cfg.algo.name!r}")
        self.resume_path: Path | None = None
        saved = None
        if cfg.resume:
            self.resume_path = find_checkpoint(cfg.resume)
            saved = ckpt.load(self.resume_path)
            check_resume_config(saved["config"], cfg, self.resume_path)
            if not cfg.run_dir:
                cfg = replace(cfg, run_dir=str(self.resume_path.parent.parent))
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        ckpt.clean_stale(self.ckpt_dir)
        dump_yaml(cfg, self.run_dir / "config.yaml")
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.env = vector_env(cfg, cfg.env.num_envs)
        self.spec: EnvSpec = self.env.spec
        self.goal_env = None
        try:
            self.actor = build_actor(self.spec, cfg, self.device)
            self.learner = build_learner(self.actor, cfg)
            goals = goal_functions(cfg, self.spec) if cfg.algo.her else None
            self.goal_env = None if goals is None else goals.env
            self.replay = build_replays(self.spec, cfg, goals)
        except Exception:
            self.close()
            raise
        self.rng = np.random.default_rng(cfg.seed)
        self.obs: dict[str, GroupObs] = {}
        self.goals: dict[str, np.ndarray] | None = None
        self._take_obs(self.env.reset(cfg.seed))
        self.env_steps = self.agent_steps = self.iteration = self.episodes = 0
        self.since_train = 0  # env steps collected since the last training phase
        self.best_eval: dict[str, Any] | None = None
        self.last_eval: dict[str, Any] | None = None
        self.eval_history: list[dict[str, Any]] = []
        self.wall_time_prev = 0.0
        self._start: float | None = None
        if saved is not None:
            self._restore(saved)  # on the CPU: load_state_dict copies onto the networks' device

    def _take_obs(self, obs_state: tuple[dict[str, GroupObs], Any]) -> None:
        """Hold copies of the env copies' current observations and achieved goals (after a reset or restore)."""
        self.obs = {g: GroupObs(o.obs.copy(), o.alive.copy(), None if o.action_mask is None else o.action_mask.copy())
                    for g, o in obs_state[0].items()}
        goals = achieved_goals(self.env)
        self.goals = None if goals is None else goals[0]

    def close(self) -> None:
        self.env.close()
        if self.goal_env is not None:
            self.goal_env.close()

    # ------------------------------------------------------------------ checkpoints
    def state(self, with_replay: bool = False) -> dict[str, Any]:
        state = {
            "config": to_dict(self.cfg),
            "policy": self.actor.state_dict(),
            "learner": self.learner.state_dict(),
            "counters": {"env_steps": self.env_steps, "agent_steps": self.agent_steps, "iteration": self.iteration,
                         "episodes": self.episodes, "since_train": self.since_train, "wall_time_s": self._wall_time()},
            "rng": {**ckpt.rng_state(), "replay": ckpt.generator_state(self.rng),
                    "actor": self.actor.generator.get_state()},
            "env": [tuple(s._replace(actions={g: torch.from_numpy(a) for g, a in s.actions.items()}))
                    for s in self.env.snapshot()],
            "best_eval": self.best_eval,
            "eval_history": self.eval_history,
        }
        if with_replay:
            state["replay"] = {g: replay_state(buf) for g, buf in self.replay.items()}
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["policy"])
        self.learner.load_state_dict(state["learner"])
        c = state["counters"]
        self.env_steps, self.agent_steps = int(c["env_steps"]), int(c["agent_steps"])
        self.iteration, self.episodes = int(c["iteration"]), int(c["episodes"])
        self.since_train, self.wall_time_prev = int(c["since_train"]), float(c["wall_time_s"])
        ckpt.set_rng_state(state["rng"])
        self.rng.bit_generator.state = state["rng"]["replay"]
        self.actor.generator.set_state(state["rng"]["actor"])
        # Env copies continue their episodes exactly: same reset, actions replayed (marl.env.adapters.EnvSnapshot).
        snaps = [EnvSnapshot(seed, rng, {g: a.numpy() for g, a in acts.items()}) for seed, rng, acts in state["env"]]
        self._take_obs(self.env.restore(snaps))
        self.best_eval = state.get("best_eval")
        self.eval_history = list(state.get("eval_history") or [])
        if "replay" in state:
            for g, buf in self.replay.items():
                load_replay_state(buf, state["replay"][g])

    def save(self, name: str = "latest.pt") -> Path:
        with_replay = self.cfg.algo.save_replay and name != "best.pt"
        return ckpt.save(self.state(with_replay), self.ckpt_dir / name)

    def _rotate(self) -> None:
        keep = self.cfg.checkpoint.keep_last
        if keep <= 0:
            return
        self.save(f"step_{self.env_steps}.pt")
        numbered = sorted(self.ckpt_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for old in numbered[:-keep]:
            old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, episodes: int | None = None) -> dict[str, Any]:
        """Deterministic evaluation on fresh, separately seeded env copies (:func:`marl.evaluation.evaluate`)."""
        cfg = self.cfg
        return evaluate(self.actor, lambda n: vector_env(cfg, n, backend="sync"), episodes or cfg.eval.episodes,
                        cfg.seed, deterministic=cfg.eval.deterministic, num_envs=cfg.eval.num_envs,
                        opponent=cfg.eval.opponent)

    def _eval_and_keep_best(self, logger: Logger) -> None:
        result = self.evaluate()
        result["env_steps"] = self.env_steps
        result["wall_time_s"] = self._wall_time()
        self.last_eval = result
        self.eval_history.append({"env_steps": self.env_steps, "wall_time_s": result["wall_time_s"],
                                  "mean_return": result["mean_return"]})
        logger.scalars(flatten_eval(result), self.env_steps)
        if self.best_eval is None or result["mean_return"] > self.best_eval["mean_return"]:
            self.best_eval = result
            self.save("best.pt")

    def _wall_time(self) -> float:
        return self.wall_time_prev + (time.time() - self._start if self._start is not None else 0.0)

    def _next_multiple(self, interval: int) -> int:
        return 0 if interval <= 0 else (self.env_steps // interval + 1) * interval

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
        """One vector step from :attr:`obs`: act, step, store the rows; return the episodes that ended."""
        obs, goals = self.obs, self.goals
        out = self.actor.act(obs, None, deterministic=False, update_stats=True, with_value=False, epsilon=epsilon)
        step = self.env.step(out.env_action)
        after_goals = achieved_goals(self.env) if goals is not None else None
        for g, buf in self.replay.items():
            tr = step.transition[g]
            achieved = next_achieved = None
            if after_goals is not None:
                achieved = goals[g]
                ended = (tr.terminated | tr.truncated)[..., None]
                next_achieved = np.where(ended, after_goals[1][g], after_goals[0][g])
            buf.add(replay_rows(obs[g], out.action[g].cpu().numpy(), tr, step.obs[g], achieved, next_achieved))
            self.agent_steps += int(obs[g].alive.sum())
        self.env_steps += self.env.num_envs
        self.obs, self.goals = step.obs, None if after_goals is None else after_goals[0]
        return step.episodes

    def train_step(self) -> dict[str, float]:
        """One gradient step: sample every group's replay, update, feed PER priorities back."""
        algo = self.cfg.algo
        beta = per_beta_at(self.env_steps / self.cfg.total_env_steps, algo.per_beta)
        samples = {g: buf.sample(algo.batch_size, self.rng, beta) for g, buf in self.replay.items()}
        batches = {g: to_batch(s, self.actor.obs_norm.get(g), self.device) for g, s in samples.items()}
        out = self.learner.update(batches)
        for g, buf in self.replay.items():
            buf.update_priorities(samples[g].indices, out.td_error[g])  # a no-op without PER
        if algo.per:
            out.metrics["per_beta"] = beta
        return out.metrics

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Train to ``total_env_steps``; write checkpoints and ``summary.json``; return the summary."""
        cfg, algo = self.cfg, self.cfg.algo
        logger = Logger(self.run_dir, cfg.log.tensorboard, cfg.log.progress, cfg.total_env_steps)
        self._start = time.time()
        interrupted: list[int] = []

        def on_signal(signum, _frame):
            if not interrupted:
                interrupted.append(signum)

        old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        next_eval = self._next_multiple(cfg.eval.interval)
        next_ckpt = self._next_multiple(cfg.checkpoint.interval)
        sps_start, sps_steps, sps_agent = time.time(), self.env_steps, self.agent_steps
        first = next(iter(self.replay.values()))
        ready_rows = min(first.capacity, max(algo.learning_starts, algo.batch_size))
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        window_episodes: list[EpisodeStats] = []
        try:
            logger.text("config", "```\n" + json.dumps(to_dict(cfg), indent=1) + "\n```")
            logger.scalars({"replay/bytes_per_row": float(sum(replay_bytes_per_row(b) for b in self.replay.values()))}, 0)
            while self.env_steps < cfg.total_env_steps and not interrupted:
                epsilon = self.exploration()
                finished = self.collect(epsilon)
                self.episodes += len(finished)
                window_episodes.extend(finished)
                ready = len(first) >= ready_rows
                self.since_train += self.env.num_envs if ready else 0
                while ready and self.since_train >= algo.train_freq:
                    self.since_train -= algo.train_freq
                    for _ in range(algo.gradient_steps):
                        for k, v in self.train_step().items():
                            sums[k] = sums.get(k, 0.0) + v
                            counts[k] = counts.get(k, 0) + 1
                    self.iteration += 1
                    if self.iteration % cfg.log.interval == 0:
                        elapsed = max(time.time() - sps_start, 1e-9)
                        row = {f"train/{k}": v / counts[k] for k, v in sums.items()}
                        if isinstance(algo, DQNConfig):
                            row["train/epsilon"] = epsilon
                        row.update(episode_metrics(window_episodes, self.spec))
                        row["time/sps"] = (self.env_steps - sps_steps) / elapsed
                        row["time/agent_sps"] = (self.agent_steps - sps_agent) / elapsed
                        row["time/env_frames"] = float(self.env_steps * cfg.env.action_repeat)
                        row["time/agent_steps"] = float(self.agent_steps)
                        row["time/grad_steps"] = float(self.learner.grad_steps)
                        logger.scalars(row, self.env_steps)
                        self._status(logger, row)
                        sums, counts, window_episodes = {}, {}, []
                if next_eval and self.env_steps >= next_eval:
                    self._eval_and_keep_best(logger)
                    next_eval = self._next_multiple(cfg.eval.interval)
                if next_ckpt and self.env_steps >= next_ckpt:
                    self.save()
                    self._rotate()
                    next_ckpt = self._next_multiple(cfg.checkpoint.interval)
            if interrupted:
                self.save()
                logger.message(
                    f"{signal.Signals(interrupted[0]).name}: stopped at {self.env_steps:,} env steps; saved "
                    f"{self.ckpt_dir / 'latest.pt'}. Resume with: marl train {self.run_dir / 'config.yaml'} "
                    f"resume={self.run_dir}"
                )
                raise TrainingInterrupted(128 + interrupted[0])
            if self.last_eval is None or self.last_eval["env_steps"] != self.env_steps:
                self._eval_and_keep_best(logger)
            self.save()
            summary = self.summary()
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            logger.hparams(flatten_dict({k: v for k, v in to_dict(cfg).items() if k not in ("run_dir", "resume")}),
                           {"final_eval_return": summary["final_eval"]["mean_return"]})
            logger.message(
                f"done: {self.env_steps:,} env steps in {summary['wall_time_s']:.0f}s ({summary['sps']:.0f} env steps/s); "
                f"final eval return {summary['final_eval']['mean_return']:.2f}, "
                f"best {summary['best_eval']['mean_return']:.2f}; run dir {self.run_dir}"
            )
            return summary
        finally:
            # As in the on-policy trainer: close first; after a signal keep absorbing repeats until exit.
            try:
                logger.close()
                self.close()
            finally:
                if not interrupted:
                    for s, h in old_handlers.items():
                        signal.signal(s, h)

    def _status(self, logger: Logger, row: dict[str, float]) -> None:
        ret = row.get("rollout/ep_return")
        best = self.best_eval["mean_return"] if self.best_eval else None
        loss = row.get("train/q_loss")
        logger.status(self.env_steps, "  ".join(part for part in (
            f"it {self.iteration}",
            f"ret {ret:.2f}" if ret is not None else "ret -",
            f"q_loss {loss:.3g}" if loss is not None and math.isfinite(loss) else "",
            f"best eval {best:.2f}" if best is not None else "",
            f"sps {row['time/sps']:.0f}",
        ) if part))

    def summary(self) -> dict[str, Any]:
        wall = self._wall_time()
        return {
            "env_steps": self.env_steps,
            "agent_steps": self.agent_steps,
            "env_frames": self.env_steps * self.cfg.env.action_repeat,
            "iterations": self.iteration,
            "episodes": self.episodes,
            "grad_steps": self.learner.grad_steps,
            "wall_time_s": wall,
            "sps": self.env_steps / max(wall, 1e-9),
            "agent_sps": self.agent_steps / max(wall, 1e-9),
            "final_eval": self.last_eval,
            "best_eval": self.best_eval,
            "eval_history": self.eval_history,
            "n_parameters": sum(p.numel() for p in self.learner.trainable()),
        }
