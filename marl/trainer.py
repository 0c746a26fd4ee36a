"""The training loop: collect -> learn -> log -> evaluate / checkpoint.

Glossary (the words every counter and metric uses):

* **env step**: one step of one env copy; ``env_steps`` sums them over copies
  (a vector step of ``E`` copies adds ``E``). ``total_env_steps`` is counted in
  these. With ``env.action_repeat = k`` an env step is one agent decision and
  covers ``k`` env frames (``env_frames`` is logged too).
* **agent step**: one decision of one alive agent; ``agent_steps``.
* **iteration**: one rollout of ``T`` steps per copy followed by one update.
* **update**: ``update_epochs`` passes of minibatch gradient steps over a rollout.
* **grad step**: one optimizer step; ``grad_steps``.
* **episode**: one env copy from reset to the end (all agents done or time limit).

Data flows one way: env -> collector -> rollout -> learner -> logger. A run
directory holds ``config.yaml``, TensorBoard event files, ``checkpoints/``
(``latest.pt``, ``best.pt``, optionally ``step_<env_steps>.pt``) and, at the end,
``summary.json``. SIGINT/SIGTERM write ``latest.pt`` before exiting with status 130/143.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marl import checkpoint as ckpt
from marl.algos.ppo import PPOLearner, linear_schedule
from marl.collector import Collector
from marl.config import Config, ConfigError, dump_yaml, from_dict, to_dict
from marl.env.adapters import EnvSnapshot
from marl.env.make import make_adapter
from marl.env.vector import make_vector_env
from marl.env.wrappers import Preprocess
from marl.evaluation import evaluate
from marl.health import HealthMonitor, NonFiniteError, entropy_action_dims
from marl.logger import Logger, episode_metrics, flatten_dict, flatten_eval
from marl.multi_agent.policy import Policy
from marl.types import EnvSpec


def score(result: dict[str, Any]) -> float:
    """What "best" means for an evaluation: win rate against a fixed opponent, else mean team return."""
    return result["win_rate"] if "win_rate" in result else result["mean_return"]


class TrainingInterrupted(SystemExit):
    """Raised (as a SystemExit) after a signal stopped training and the checkpoint was written."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def preprocess_of(cfg: Config) -> Preprocess:
    e = cfg.env
    return Preprocess(
        frame_stack=e.frame_stack, grayscale=e.grayscale, resize=tuple(e.resize) or None,
        action_repeat=e.action_repeat, pad=e.pad,
    )


def env_factory(cfg: Config, render_mode: str | None = None) -> functools.partial:
    """A picklable zero-argument factory of one env adapter for ``cfg``."""
    return functools.partial(
        make_adapter, cfg.env.id, dict(cfg.env.kwargs), groups=dict(cfg.env.groups) or None,
        render_mode=render_mode, preprocess=preprocess_of(cfg),
        use_state=cfg.model.critic == "central",  # state() can be costly (pistonball renders the screen)
    )


def vector_env(cfg: Config, num_envs: int, backend: str | None = None):
    """``num_envs`` copies of the config's env on ``backend`` (default ``cfg.env.backend``).

    The subprocess backend runs ``env.num_workers`` processes (0 = one per core, at
    most ``num_envs``); with ``env.overlap`` the collector acts on one worker's env
    copies while the others step.
    """
    backend = backend or cfg.env.backend
    workers = None
    if backend == "subprocess":
        workers = min(cfg.env.num_workers or (os.cpu_count() or 1), num_envs)
    return make_vector_env(env_factory(cfg), num_envs, backend=backend, num_workers=workers)


def check_env(cfg: Config) -> EnvSpec:
    """Build one env in-process and return its spec; bad ids / kwargs / groups become a ConfigError.

    Runs before any worker process starts, so a typo in ``env.id`` or an impossible
    grouping is reported in one line that names the key, not as a worker traceback.
    """
    try:
        adapter = env_factory(cfg)()
    except ImportError as exc:
        raise ConfigError(f"env.id={cfg.env.id!r}: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        key = "env.groups" if "group" in str(exc) else ("env.kwargs" if isinstance(exc, TypeError) else "env.id")
        raise ConfigError(f"{key}: cannot build env {cfg.env.id!r} with kwargs {dict(cfg.env.kwargs)}: {exc}") from exc
    try:
        return adapter.spec
    finally:
        adapter.close()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no GPU; use device=cpu or device=auto")
    return torch.device(name)


def default_run_dir(cfg: Config) -> Path:
    env = cfg.env.id.split(".")[-1].split(":")[-1]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env}-{cfg.algo.name}-seed{cfg.seed}-{stamp}"


def find_checkpoint(path: str | Path) -> Path:
    """A run directory -> its ``checkpoints/latest.pt``; a file -> itself."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "checkpoints" / "latest.pt", p / "latest.pt"):
            if candidate.is_file():
                return candidate
        raise ckpt.CheckpointError(f"{p}: no checkpoints/latest.pt in this run directory")
    return p


def check_resume_config(saved: dict, cfg: Config, path: Path) -> None:
    """Refuse to resume with a config whose networks or spaces differ from the checkpoint's."""
    keys = ["env.id", "env.kwargs", "env.groups", "env.num_envs", "env.frame_stack", "env.grayscale", "env.resize", "env.pad",
            "model.hidden", "model.activation", "model.sharing", "model.agent_id", "model.critic", "algo.name",
            "algo.optimizer", "norm.obs", "norm.reward"]
    now = flatten_dict(to_dict(cfg))
    old = flatten_dict(saved)
    diff = [k for k in now if any(k == key or k.startswith(key + ".") for key in keys) and now.get(k) != old.get(k)]
    if diff:
        listing = ", ".join(f"{k}: checkpoint {old.get(k)!r} vs config {now.get(k)!r}" for k in diff)
        raise ckpt.CheckpointError(f"{path}: checkpoint was trained with a different config ({listing}); "
                                   "resume with the run's own config.yaml or start a new run")


class Trainer:
    """Builds everything a run needs from a :class:`Config` and runs it.

    Owns the training envs (through the collector), the learner, the logger and the
    checkpoints; the pieces do not know about each other.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.resume_path: Path | None = None
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
        check_env(cfg)
        self.env = vector_env(cfg, cfg.env.num_envs)
        self.spec: EnvSpec = self.env.spec
        try:
            self.policy = Policy(self.spec, cfg, self.device)
            self.learner = PPOLearner(self.policy, cfg.algo)
            self.collector = Collector(
                self.env, self.policy, cfg.algo.num_steps, cfg.norm.reward, cfg.norm.reward_clip,
                cfg.algo.gamma, cfg.seed, overlap=cfg.env.overlap, check_inputs=cfg.health.check_inputs,
            )
        except Exception:
            self.env.close()
            raise
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.health = HealthMonitor(cfg.health, entropy_action_dims(self.spec))
        self.env_steps = 0
        self.agent_steps = 0
        self.iteration = 0
        self.episodes = 0
        self.best_eval: dict[str, Any] | None = None
        self.last_eval: dict[str, Any] | None = None
        self.eval_history: list[dict[str, Any]] = []
        self.wall_time_prev = 0.0
        if self.resume_path is not None:
            self._restore(ckpt.load(self.resume_path, map_location=self.device))

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "config": to_dict(self.cfg),
            "policy": self.policy.state_dict(),
            "learner": self.learner.state_dict(),
            "collector": self.collector.state_dict(),
            "counters": {"env_steps": self.env_steps, "agent_steps": self.agent_steps, "iteration": self.iteration,
                         "episodes": self.episodes, "wall_time_s": self._wall_time()},
            "rng": {**ckpt.rng_state(), "generator": self.generator.get_state()},
            "env": [tuple(s._replace(actions={g: torch.from_numpy(a) for g, a in s.actions.items()}))
                    for s in self.env.snapshot()],
            "best_eval": self.best_eval,
            "eval_history": self.eval_history,
            "health": self.health.state_dict(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.learner.load_state_dict(state["learner"])
        self.collector.load_state_dict(state["collector"])
        c = state["counters"]
        self.env_steps, self.agent_steps = int(c["env_steps"]), int(c["agent_steps"])
        self.iteration, self.episodes = int(c["iteration"]), int(c["episodes"])
        self.wall_time_prev = float(c["wall_time_s"])
        ckpt.set_rng_state(state["rng"])
        self.generator.set_state(state["rng"]["generator"])
        # Env copies continue their episodes exactly: same reset, actions replayed (marl.env.adapters.EnvSnapshot).
        snaps = [EnvSnapshot(seed, rng, {g: a.numpy() for g, a in acts.items()}) for seed, rng, acts in state["env"]]
        self.collector.set_obs(*self.env.restore(snaps))
        self.best_eval = state.get("best_eval")
        self.eval_history = list(state.get("eval_history") or [])
        if "health" in state:
            self.health.load_state_dict(state["health"])

    def save(self, name: str = "latest.pt") -> Path:
        return ckpt.save(self.state(), self.ckpt_dir / name)

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
        cfg = self.cfg
        make = functools.partial(vector_env, cfg, backend="sync")
        return evaluate(self.policy, make, episodes or cfg.eval.episodes, cfg.seed,
                        deterministic=cfg.eval.deterministic, num_envs=cfg.eval.num_envs, opponent=cfg.eval.opponent)

    def _eval_and_keep_best(self, logger: Logger) -> None:
        result = self.evaluate()
        result["env_steps"] = self.env_steps
        result["wall_time_s"] = self._wall_time()
        self.last_eval = result
        self.eval_history.append({"env_steps": self.env_steps, "wall_time_s": result["wall_time_s"],
                                  "mean_return": result["mean_return"]})
        logger.scalars(flatten_eval(result), self.env_steps)
        if self.best_eval is None or score(result) > score(self.best_eval):
            self.best_eval = result
            self.save("best.pt")

    def _wall_time(self) -> float:
        return self.wall_time_prev + (time.time() - self._start if hasattr(self, "_start") else 0.0)

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Train to ``total_env_steps``; write checkpoints and ``summary.json``; return the summary."""
        cfg = self.cfg
        algo = cfg.algo
        logger = Logger(self.run_dir, cfg.log.tensorboard, cfg.log.progress, cfg.total_env_steps)
        self._start = time.time()
        interrupted: list[int] = []

        def on_signal(signum, _frame):
            if interrupted:  # a second signal during the final save is ignored; the save is atomic anyway
                return
            interrupted.append(signum)

        old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        next_eval = self._next_multiple(cfg.eval.interval)
        next_ckpt = self._next_multiple(cfg.checkpoint.interval)
        sps_start, sps_steps, sps_agent = time.time(), self.env_steps, self.agent_steps
        try:
            logger.text("config", "```\n" + json.dumps(to_dict(cfg), indent=1) + "\n```")
            while self.env_steps < cfg.total_env_steps and not interrupted:
                progress = self.env_steps / cfg.total_env_steps
                if algo.anneal_lr:
                    self.learner.set_lr(linear_schedule(algo.lr, progress))
                if algo.anneal_clip:
                    self.learner.clip_coef = linear_schedule(algo.clip_coef, progress)
                try:  # a NaN/inf stops the run here, before anything is logged or saved
                    rollout = self.collector.collect()
                    for name, buf in rollout.groups.items():
                        buf.finish(rollout.last_value[name], algo.gamma, algo.gae_lambda, algo.bootstrap_on_truncation)
                    batches = {name: buf.flat() for name, buf in rollout.groups.items()}
                    metrics = self.learner.update(batches, algo.num_minibatches, cfg.norm.advantage, self.generator)
                except NonFiniteError as err:
                    raise err.with_context(self.env_steps, self.ckpt_dir / "latest.pt") from None
                self.iteration += 1
                self.env_steps += rollout.env_steps
                self.agent_steps += rollout.agent_steps
                self.episodes += len(rollout.episodes)
                elapsed = max(time.time() - sps_start, 1e-9)
                row = {f"train/{k}": v for k, v in metrics.items()}
                row.update(episode_metrics(rollout.episodes, self.spec))
                row["time/sps"] = (self.env_steps - sps_steps) / elapsed
                row["time/agent_sps"] = (self.agent_steps - sps_agent) / elapsed
                row["time/env_frames"] = float(self.env_steps * cfg.env.action_repeat)
                row["time/agent_steps"] = float(self.agent_steps)
                for warning in self.health.observe(row, self.env_steps):
                    logger.message(str(warning))
                    logger.text(f"health/{warning.name}", str(warning), self.env_steps)
                if self.iteration % cfg.log.interval == 0:
                    logger.scalars(row, self.env_steps)
                    ret = row.get("rollout/ep_return")
                    best = score(self.best_eval) if self.best_eval else None
                    logger.status(self.env_steps, "  ".join([
                        f"it {self.iteration}",
                        f"ret {ret:.2f}" if ret is not None else "ret -",
                        (f"best eval {'win rate ' if 'win_rate' in self.best_eval else ''}{best:.2f}"
                         if best is not None else ""),
                        f"sps {row['time/sps']:.0f}",
                    ]))
                if next_eval and self.env_steps >= next_eval:
                    self._eval_and_keep_best(logger)
                    next_eval = self._next_multiple(cfg.eval.interval)
                if next_ckpt and self.env_steps >= next_ckpt:
                    self.save()
                    self._rotate()
                    next_ckpt = self._next_multiple(cfg.checkpoint.interval)
            if interrupted:
                self.save()
                name = signal.Signals(interrupted[0]).name
                logger.message(
                    f"{name}: stopped at {self.env_steps:,} env steps; saved {self.ckpt_dir / 'latest.pt'}. "
                    f"Resume with: marl train {self.run_dir / 'config.yaml'} resume={self.run_dir}"
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
                f"final eval return {summary['final_eval']['mean_return']:.2f}, best {summary['best_eval']['mean_return']:.2f}; "
                f"run dir {self.run_dir}"
            )
            return summary
        finally:
            # Close first, restore the signal handlers last: a second Ctrl-C during the final
            # save or the shutdown is absorbed instead of killing the process half-way.
            try:
                logger.close()
                self.env.close()
            finally:
                if not interrupted:  # after a signal the process is exiting: keep absorbing repeats until it has
                    for s, h in old_handlers.items():
                        signal.signal(s, h)

    def _next_multiple(self, interval: int) -> int:
        if interval <= 0:
            return 0
        return (self.env_steps // interval + 1) * interval

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
            "n_parameters": sum(p.numel() for p in self.policy.net.parameters()),
        }


ON_POLICY = ("ppo",)


def train(cfg: Config) -> dict[str, Any]:
    """Train ``cfg`` from scratch or from ``cfg.resume``; return the run summary.

    On-policy algorithms run in :class:`Trainer`; off-policy ones (DQN, SAC, TD3)
    in :class:`marl.off_policy.OffPolicyTrainer`, which shares the env layer,
    evaluation, checkpoints and logging.
    """
    if cfg.algo.name in ON_POLICY:
        return Trainer(cfg).train()
    from marl.off_policy import OffPolicyTrainer

    return OffPolicyTrainer(cfg).train()


def load_policy(path: str | Path, device: str = "cpu") -> tuple[Policy, Config, dict]:
    """Rebuild the policy of a checkpoint (or run directory: its best.pt, else latest.pt)."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "checkpoints" / "best.pt", p / "checkpoints" / "latest.pt"):
            if candidate.is_file():
                p = candidate
                break
        else:
            raise ckpt.CheckpointError(f"{path}: no checkpoints/best.pt or latest.pt in this run directory")
    state = ckpt.load(p, map_location=device)
    cfg = from_dict(state["config"])
    factory = env_factory(cfg)
    probe = factory()
    try:
        spec = probe.spec
    finally:
        probe.close()
    if cfg.algo.name in ON_POLICY:
        policy = Policy(spec, cfg, device)
    else:
        from marl.off_policy import build_actor

        policy = build_actor(spec, cfg, device)
    policy.load_state_dict(state["policy"])
    return policy, cfg, state
