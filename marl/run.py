"""What every training run shares, whatever the algorithm: :class:`TrainingRun`.

A run directory holds ``config.yaml``, TensorBoard event files, ``checkpoints/``
(``latest.pt``, ``best.pt``, optionally ``step_<env_steps>.pt``) and, at the end,
``summary.json``. SIGINT/SIGTERM write ``latest.pt`` before exiting with status 130/143.

:class:`TrainingRun` owns that scaffolding: the run directory and the resolved config,
seeding and the device, the training env copies and the act -> step loop over them
(:class:`marl.loop.EnvLoop`: their current observations, reset at the start and restored
on resume), the counters (``env_steps``,
``agent_steps``, ``iteration``, ``episodes``, wall time), evaluation every
``eval.interval`` env steps with ``best.pt`` kept for the best :func:`score`,
``latest.pt`` every ``checkpoint.interval`` env steps with ``checkpoint.keep_last``
numbered copies, resume from a run directory or checkpoint, the health monitor and
the logger, stop signals, the progress line and ``summary.json``. A trainer subclass
adds only its algorithm: :meth:`~TrainingRun.build` (networks, learner, collector or
replay), :meth:`~TrainingRun.advance` (one iteration, stepping :attr:`~TrainingRun.loop`),
:meth:`~TrainingRun.acting_policy` and
:meth:`~TrainingRun.n_parameters`, and extends :meth:`~TrainingRun.checkpoint_state` /
:meth:`~TrainingRun.restore` with its own entries.

Why one small base class rather than a scaffolding object the trainers hold: the
scaffolding and the algorithm share the counters and the checkpoint dict, and the
scaffolding needs four things from the algorithm (one iteration, its checkpoint
entries, its policy for evaluation, its parameter count). Held as a separate object it would need either a
back-reference to the trainer or a bundle of callbacks; as one level of inheritance with named abstract hooks each
trainer reads as its algorithm and nothing else. There is no deeper hierarchy.

Checkpoint entries written here: ``config``, ``policy``, ``learner``, ``counters``
(``env_steps, agent_steps, iteration, episodes, wall_time_s``), ``rng`` (python,
numpy, torch), ``env`` (the vector env's ``snapshot()``, e.g. an :class:`marl.env.snapshot.EnvSnapshot` per
copy: a resumed run continues its episodes exactly), ``best_eval``, ``eval_history`` and ``health``;
each trainer adds its own (see :class:`marl.on_policy.OnPolicyTrainer`,
:class:`marl.off_policy.OffPolicyTrainer`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import multiprocessing
import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal, NamedTuple, Protocol, Self

import torch

from marl import checkpoint as ckpt
from marl.config import Config, ConfigError, dump_yaml, to_dict
from marl.distributed import Ranks, SilentLogger, rank_seed
from marl.env.make import env_spec, eval_backend, vector_env, warn_if_default_horizon, warn_if_frozen
from marl.env.vector import VectorEnv
from marl.evaluation import EvaluationStopped, evaluate
from marl.health import REMEDIES, HealthMonitor, NonFiniteError, entropy_action_dims
from marl.logger import Logger, flatten_dict, flatten_eval
from marl.loop import EnvLoop
from marl.scoring import eval_record, group_score, result_line, score, with_stochastic  # noqa: F401 (public here too)
from marl.seeding import seed_everything, seeds_for
from marl.tracking import open_trackers, run_artifacts
from marl.types import ActingPolicy, EnvSpec


class TrainingInterrupted(SystemExit):
    """Raised (as a SystemExit) after a signal stopped training and the checkpoint was written."""


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


def check_resume_config(saved: dict, cfg: Config, path: Path) -> None:
    """Refuse to resume with a config whose networks or spaces differ from the checkpoint's."""
    keys = ["env.id", "env.kwargs", "env.groups", "env.num_envs", "env.frame_stack", "env.grayscale", "env.resize",
            "env.pad", "model.hidden", "model.activation", "model.sharing", "model.agent_id", "model.critic",
            "algo.name", "algo.optimizer", "norm.obs", "norm.reward"]
    now = flatten_dict(to_dict(cfg))
    old = flatten_dict(saved)
    diff = [k for k in now if any(k == key or k.startswith(key + ".") for key in keys) and now.get(k) != old.get(k)]
    if diff:
        listing = ", ".join(f"{k}: checkpoint {old.get(k)!r} vs config {now.get(k)!r}" for k in diff)
        raise ckpt.CheckpointError(f"{path}: checkpoint was trained with a different config ({listing}); "
                                   "resume with the run's own config.yaml or start a new run")


def next_multiple(env_steps: int, interval: int) -> int:
    """The first multiple of ``interval`` above ``env_steps`` (0 = never, for ``interval <= 0``)."""
    return 0 if interval <= 0 else (env_steps // interval + 1) * interval


# --------------------------------------------------------------------------- pieces of the loop
class Report(NamedTuple):
    """Metrics of one health check, from :meth:`TrainingRun.advance`.

    Attributes:
        metrics: ``train/*`` and ``rollout/*`` scalars (``time/*`` is added by the run).
        log: also write them to TensorBoard and the progress line (every ``log.interval``).
    """

    metrics: dict[str, float]
    log: bool


class StopSignals:
    """Inside ``with``, SIGINT and SIGTERM are recorded instead of raising.

    The first signal is kept in :attr:`signum` (every one is counted in :attr:`count`);
    repeats are absorbed, so a second Ctrl-C during the final checkpoint write cannot kill
    the process half-way.
    On exit the previous handlers come back only if no signal arrived: after one,
    the process is on its way out and keeps absorbing repeats until it is gone.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0  # signals received
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> Self:
        self._previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.signum is None:
            for s, handler in self._previous.items():
                signal.signal(s, handler)


def stop_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Have the kernel send ``signum`` to this process when its parent ``parent_pid`` ends (Linux
    ``PR_SET_PDEATHSIG``; a no-op elsewhere), however it ends (``kill PID``, ``timeout``, SIGKILL, the OOM
    killer): a run here then stops as after any stop signal, its checkpoint written. A parent already gone
    by the call sends the signal at once. The parent must be the process that started this one (not a
    forkserver), and the signal comes when the parent's thread that started it ends."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signum), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent ended before the request: nobody will send it
        os.kill(os.getpid(), signum)


def _supervised_job(parent_pid: int, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a :class:`SupervisedPool` worker. A run that a stop signal ended
    (:class:`TrainingInterrupted`, its checkpoint written, or a ``KeyboardInterrupt`` outside a run) ends the
    worker too, and so does any job once the pool's owner has ended: the worker does not start the next queued
    job. (The parent-death signal can come while the owner's pid is still this process's parent: the kernel
    sends it when the owner's thread that started the worker ends, and its other threads may end a moment
    later.)"""
    try:
        return fn(*args, **kwargs)
    except (TrainingInterrupted, KeyboardInterrupt) as stop:
        if isinstance(stop, TrainingInterrupted) and type(stop) is not TrainingInterrupted:
            raise  # a subclass with a meaning of its own (marl.tune's Pruned) goes back to the owner
        code = 128 + signal.SIGINT if isinstance(stop, KeyboardInterrupt) else stop.code
        _exit_now(code if isinstance(code, int) else 128 + signal.SIGTERM)
    finally:
        if os.getppid() != parent_pid:
            _exit_now(128 + signal.SIGTERM)


def _exit_now(code: int) -> None:
    """End this pool worker at once (no next job), its buffered output written first."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class SupervisedPool(ProcessPoolExecutor):
    """A process pool for training runs whose workers stop with their owner.

    When the owner process ends, however it ends, each worker gets SIGTERM (:func:`stop_with_parent`): its
    run stops as after any stop signal, checkpoint written, and the worker exits instead of starting a
    queued job. Workers start with ``spawn`` (default) or ``fork``, never the forkserver (whose workers'
    parent is the forkserver). Create and use it from the owner's main thread.

    Args:
        max_workers: processes at once.
        start_method: ``"spawn"`` or ``"fork"``.
    """

    def __init__(self, max_workers: int, start_method: Literal["spawn", "fork"] = "spawn") -> None:
        if start_method not in ("spawn", "fork"):
            raise ValueError(f"start_method must be 'spawn' or 'fork', got {start_method!r}")
        super().__init__(max_workers, mp_context=multiprocessing.get_context(start_method),
                         initializer=stop_with_parent, initargs=(os.getpid(),))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(_supervised_job, os.getpid(), fn, *args, **kwargs)


class Learner(Protocol):
    """What the run needs of a learner: its checkpoint entry and its optimizer-step counter."""

    grad_steps: int

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


# --------------------------------------------------------------------------- the run
class TrainingRun(ABC):
    """One training run of one config: the scaffolding around an algorithm (see the module docstring).

    Construction resolves ``cfg.resume`` (its run directory becomes the default
    ``run_dir``; a config whose networks or spaces differ is refused), writes
    ``config.yaml``, seeds every RNG, builds the env copies, calls :meth:`build` and
    restores the checkpoint when resuming (the envs are closed if either fails).

    Args:
        cfg: the experiment.

    Attributes:
        cfg: the config as run (``run_dir`` filled in on resume).
        run_dir, ckpt_dir: the run directory and its ``checkpoints/``.
        env, spec: the training env copies and their spec.
        loop: the :class:`~marl.loop.EnvLoop` over :attr:`env` (one unit per chunk with ``env.overlap``).
        device: torch device of the networks.
        env_steps, agent_steps, iteration, episodes: counters (see :mod:`marl.on_policy.trainer`).
        best_eval, last_eval: evaluation results (``None`` before the first).
        eval_history: :func:`eval_record` of every evaluation, in order.
        health: the warning-sign monitor (its state is checkpointed).
        learner: set by :meth:`build`; what updates the networks.
    """

    remedies: Mapping[str, str] = REMEDIES
    """Warning name -> what to try, shown with each health warning (a subclass may specialise it)."""

    learner: Learner

    supports_distributed: bool = False
    """Whether the trainer averages its gradients and normalizers over torchrun ranks (:mod:`marl.distributed`)."""

    def __init__(self, cfg: Config) -> None:
        self.resume_path: Path | None = None
        saved: dict[str, Any] | None = None
        if cfg.resume:
            self.resume_path = ckpt.find_checkpoint(cfg.resume, "latest")
            saved = ckpt.load(self.resume_path)  # on the CPU: load_state_dict copies onto the networks' device
            check_resume_config(saved["config"], cfg, self.resume_path)
            if not cfg.run_dir:
                cfg = replace(cfg, run_dir=str(self.resume_path.parent.parent))
        self.cfg = cfg
        # Under torchrun: this rank (None without torchrun: one process, nothing below changes).
        self.dist = self._join_ranks(cfg)
        self.is_main = self.dist is None or self.dist.is_main
        self.copies = range(cfg.env.num_envs) if self.dist is None else self.dist.env_copies(cfg.env.num_envs)
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        if self.dist is not None:
            self.run_dir = Path(self.dist.broadcast_object(str(self.run_dir)))  # rank 0's time stamp
        self.ckpt_dir = self.run_dir / "checkpoints"
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        seed_everything(cfg.seed)  # every rank: the same initial networks
        self.device = resolve_device(cfg.device) if self.dist is None else self.dist.device
        spec = env_spec(cfg)  # a bad env id / kwargs / groups: one line naming the key, before any worker starts
        if self.is_main and any(len(g.obs_space.shape) == 3 for g in spec.groups):
            warn_if_frozen(cfg)  # screen-cut observations that never change: the env needs a render mode
        if self.is_main:
            warn_if_default_horizon(cfg)  # only env.id changed: simple_spread's horizon settings on another env
        self.env: VectorEnv = self.make_env()
        self.spec: EnvSpec = self.env.spec
        self.loop = EnvLoop(self.env, overlap=cfg.env.overlap, check_inputs=cfg.health.check_inputs)
        self.env_steps = self.agent_steps = self.iteration = self.episodes = 0
        self.best_eval: dict[str, Any] | None = None
        self.last_eval: dict[str, Any] | None = None
        self.eval_history: list[dict[str, Any]] = []
        self.wall_time_prev = 0.0
        self._start: float | None = None
        self._stop: StopSignals | None = None  # set while train() runs
        self.health = HealthMonitor(cfg.health, entropy_action_dims(self.spec), remedies=self.remedies,
                                    gamma=cfg.algo.gamma)
        try:
            # A rank's copies take their seeds in the single-process stream: disjoint from every other rank's.
            self.loop.reset(cfg.seed if self.dist is None else seeds_for(cfg.seed, cfg.env.num_envs)[
                self.copies.start:self.copies.stop])
            self.build()
            if saved is not None:
                self.restore(saved)
            if not self.is_main:  # its own action noise (the networks are rank 0's; the minibatch generator shared)
                seed_everything(rank_seed(cfg.seed, self.dist.rank, self.env_steps))
        except Exception:
            self.close()
            raise
        # The run directory appears once the run has started: a failed start (bad env, algorithm / space
        # mismatch) leaves nothing that resume or marl compare could mistake for a run.
        if self.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            ckpt.clean_stale(self.ckpt_dir)
            dump_yaml(cfg, self.run_dir / "config.yaml")

    def _join_ranks(self, cfg: Config) -> Ranks | None:
        """Join torchrun's process group (``None`` without torchrun); refuse what data-parallel runs lack."""
        for key, message in cfg.distributed.problems():
            raise ConfigError(f"distributed.{key}: {message}")
        ranks = Ranks.from_env(cfg.device, cfg.distributed.timeout_s)
        if ranks is not None and not self.supports_distributed:
            what = f"algo.name={cfg.algo.name}" + (f" with model.recurrent={cfg.model.recurrent}"
                                                   if cfg.model.recurrent != "none" else "")
            raise ConfigError(f"{what}: data-parallel training under torchrun is not implemented for it (see "
                              "docs/distributed.md); run it without torchrun")
        if ranks is not None and cfg.env.backend == "batched":
            raise ConfigError("env.backend=batched: not supported under torchrun yet (its snapshot is one state for "
                              "all copies); use sync or subprocess")
        return ranks

    # ------------------------------------------------------------------ algorithm hooks
    @abstractmethod
    def build(self) -> None:
        """Create the algorithm's parts (networks, :attr:`learner`, collector or replay) for :attr:`env`."""

    def make_env(self) -> VectorEnv:
        """The env copies this process steps: :attr:`copies` of the config's (a trainer whose copies live in its
        own workers returns a one-copy stand-in for the spec and the checkpoint)."""
        return vector_env(self.cfg, len(self.copies))

    @abstractmethod
    def advance(self) -> list[Report]:
        """One iteration of the algorithm; advance the counters; return the health checks it completed.

        A :class:`NonFiniteError` raised here stops the run before anything else is
        logged or saved; the run adds the env step count and the last good checkpoint.
        """

    @abstractmethod
    def acting_policy(self) -> ActingPolicy:
        """The policy that acts, is evaluated and is saved as the checkpoint's ``policy`` entry."""

    @abstractmethod
    def n_parameters(self) -> int:
        """Trainable parameters, for the summary."""

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if training produced a NaN/inf not yet reported.

        Called before every evaluation and checkpoint write, so ``latest.pt`` and
        ``best.pt`` stay the last good ones. Default: nothing to check (the learner
        checks each update itself).
        """

    def prepare(self) -> None:
        """Start-up that waits for the stop signals to be handled (worker processes), before the clock starts."""

    def start_metrics(self) -> dict[str, float]:
        """Scalars logged once at env step 0 (e.g. the replay's bytes per row)."""
        return {}

    def status_parts(self, row: Mapping[str, float]) -> list[str]:
        """Extra items of the progress line (e.g. the Q loss), between the return and the best eval."""
        return []

    def close(self) -> None:
        """Close the env copies (and whatever else a trainer opened), and leave the process group."""
        self.env.close()
        if self.dist is not None:
            self.dist.close(settled=getattr(self, "_settled", False))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, name: str) -> dict[str, Any]:
        """The checkpoint written as ``checkpoints/<name>``; trainers add their entries to it."""
        return {
            "config": to_dict(self.cfg),
            "policy": self.acting_policy().state_dict(),
            "learner": self.learner.state_dict(),
            "counters": {"env_steps": self.env_steps, "agent_steps": self.agent_steps, "iteration": self.iteration,
                         "episodes": self.episodes, "wall_time_s": self.wall_time()},
            "rng": ckpt.rng_state(),
            "env": ckpt.to_checkpoint(self.env_snapshot()),
            "best_eval": self.best_eval,
            "eval_history": self.eval_history,
            "health": self.health.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a :meth:`checkpoint_state`; trainers restore their entries after calling this."""
        self.acting_policy().load_state_dict(state["policy"])
        self.learner.load_state_dict(state["learner"])
        c = state["counters"]
        self.env_steps, self.agent_steps = int(c["env_steps"]), int(c["agent_steps"])
        self.iteration, self.episodes = int(c["iteration"]), int(c["episodes"])
        self.wall_time_prev = float(c["wall_time_s"])
        ckpt.set_rng_state(state["rng"])
        # Env copies continue their episodes exactly (the vector env's snapshot: per copy, the episode's reset and
        # actions replayed, marl.env.snapshot.EnvSnapshot; a batched env's whole state, marl.env.batched).
        snaps = ckpt.from_checkpoint(state["env"])  # every copy of the run, in copy order
        if self.dist is not None:
            snaps = snaps[self.copies.start:self.copies.stop]
        self.loop.set_obs(*self.env.restore(snaps))
        self.best_eval = state.get("best_eval")
        self.eval_history = list(state.get("eval_history") or [])
        if "health" in state:
            self.health.load_state_dict(state["health"])

    def env_snapshot(self) -> Any:
        """The env copies' snapshot; in a distributed run every rank's copies, in copy order (a collective)."""
        snaps = self.env.snapshot()
        if self.dist is None:
            return snaps
        return [s for rank_snaps in self.dist.gather_objects(list(snaps)) for s in rank_snaps]

    def save(self, name: str = "latest.pt") -> Path:
        """Write ``checkpoints/<name>`` atomically, after :meth:`check_finite`.

        In a distributed run every rank calls it (the state gathers every rank's env copies) and rank 0 writes.
        """
        self.check_finite()
        state = self.checkpoint_state(name)
        return ckpt.save(state, self.ckpt_dir / name) if self.is_main else self.ckpt_dir / name

    def rotate(self) -> None:
        """Write ``step_<env_steps>.pt`` and delete all but the newest ``checkpoint.keep_last`` of them."""
        keep = self.cfg.checkpoint.keep_last
        if keep <= 0:
            return
        self.save(f"step_{self.env_steps}.pt")
        if not self.is_main:
            return
        numbered = sorted(self.ckpt_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for old in numbered[:-keep]:
            old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, episodes: int | None = None, deterministic: bool | None = None) -> dict[str, Any]:
        """Evaluation on fresh, separately seeded env copies (:func:`marl.evaluation.evaluate`); ``None`` arguments
        take the ``eval`` section's."""
        cfg = self.cfg
        make = functools.partial(vector_env, cfg, backend=eval_backend(cfg))
        deterministic = cfg.eval.deterministic if deterministic is None else deterministic
        return evaluate(self.acting_policy(), make, episodes or cfg.eval.episodes, cfg.seed,
                        deterministic=deterministic, num_envs=cfg.eval.num_envs, opponent=cfg.eval.opponent,
                        should_stop=self._stop_requested)

    def add_stochastic_eval(self) -> None:
        """With ``eval.stochastic_check``, evaluate the final policy again sampling its actions (same episodes and
        seeds) and keep both in ``final_eval`` (:func:`marl.scoring.with_stochastic`); skipped when stopped."""
        final = self.last_eval
        if not (self.cfg.eval.stochastic_check and self.cfg.eval.deterministic) or "stochastic" in final:
            return
        sto = None
        if self.is_main:
            try:
                sto = self.evaluate(deterministic=False)
            except EvaluationStopped:
                sto = None
        if self.dist is not None:
            sto = self.dist.broadcast_object(sto)
        if sto is not None:
            self.last_eval = with_stochastic(final, sto)

    def _stop_requested(self) -> bool:
        """A stop signal arrived while :meth:`train` runs (evaluations end early on it)."""
        return self._stop is not None and self._stop.signum is not None

    def evaluate_and_keep_best(self, logger: Logger) -> dict[str, Any] | None:
        """Evaluate now, log ``eval/*``, append to ``eval_history``; write ``best.pt`` on a new best :func:`score`.

        Returns ``None`` (nothing recorded) when a stop signal ended the evaluation early."""
        self.check_finite()
        result = None
        if self.is_main:
            start = time.perf_counter()
            try:
                result = self.evaluate()
            except EvaluationStopped:
                result = None
            else:
                if self.cfg.eval.score_groups:
                    result["score"] = group_score(result, self.spec, self.cfg.eval.score_groups)
                    result["score_groups"] = ",".join(self.cfg.eval.score_groups)
                result["eval_time_s"] = time.perf_counter() - start
                result["env_steps"] = self.env_steps
                result["wall_time_s"] = self.wall_time()
        if self.dist is not None:  # rank 0 evaluated: every rank keeps the same history and best
            result = self.dist.broadcast_object(result)
        if result is None:
            return None
        self.last_eval = result
        self.eval_history.append(eval_record(result))
        logger.scalars(flatten_eval(result), self.env_steps)
        if self.best_eval is None or score(result) > score(self.best_eval):
            self.best_eval = result
            self.save("best.pt")
        return result

    def wall_time(self) -> float:
        """Seconds of training, summed over the resumed parts of the run."""
        return self.wall_time_prev + (time.time() - self._start if self._start is not None else 0.0)

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Any]:
        """Train to ``total_env_steps``; write checkpoints and ``summary.json``; return the summary.

        Raises:
            TrainingInterrupted: after SIGINT/SIGTERM, once ``latest.pt`` is written
                (exit status ``128 + signal``).
            NonFiniteError: a NaN/inf in training; no checkpoint is overwritten with it.
        """
        cfg = self.cfg
        if self.is_main:  # rank 0 alone logs
            try:  # a missing tracker extra (log.backends) is a ConfigError here, before the first env step
                logger = Logger(open_trackers(cfg, self.run_dir, resuming=self.resume_path is not None),
                                cfg.log.progress, cfg.total_env_steps)
            except BaseException:
                self.close()
                raise
        else:
            logger = SilentLogger()
        if self.resume_path is not None:
            logger.message(f"resumed from {self.resume_path} at {self.env_steps:,} env steps")
        with StopSignals() as stop:
            self._stop = stop
            try:
                self.prepare()
                self._start = time.time()
                if self._loop(logger, stop):
                    self.save()
                    self._settled = True  # every rank stops here after the same step
                    raise self._interrupted(logger)
                summary = self._finish(logger)
                self._settled = True
                return summary
            except NonFiniteError as err:
                raise err.with_context(self.env_steps, self.ckpt_dir / "latest.pt") from None
            finally:
                # Close first; the signal handlers come back last (StopSignals), so a second Ctrl-C
                # during the final save or the shutdown is absorbed instead of killing the process.
                try:
                    logger.close()
                finally:
                    self.close()

    def _loop(self, logger: Logger, stop: StopSignals) -> bool:
        """Iterate until the budget is spent or a stop signal arrives; evaluate and checkpoint on schedule.

        Returns whether a stop signal ended it (in a distributed run: at any rank, agreed by all after
        the same iteration).
        """
        cfg = self.cfg
        logger.text("config", "```\n" + json.dumps(to_dict(cfg), indent=1) + "\n```")
        start = self.start_metrics()
        if start:
            logger.scalars(start, 0)
        next_eval = next_multiple(self.env_steps, cfg.eval.interval)
        next_ckpt = next_multiple(self.env_steps, cfg.checkpoint.interval)
        rate = (time.time(), self.env_steps, self.agent_steps)  # throughput of this process only
        while self.env_steps < cfg.total_env_steps and not self._stop_agreed(stop):
            for report in self.advance():
                self._report(logger, report, rate)
            if next_eval and self.env_steps >= next_eval:
                self.evaluate_and_keep_best(logger)
                next_eval = next_multiple(self.env_steps, cfg.eval.interval)
            if next_ckpt and self.env_steps >= next_ckpt:
                self.save()
                self.rotate()
                next_ckpt = next_multiple(self.env_steps, cfg.checkpoint.interval)
        return self._stop_agreed(stop, final=True)

    def _stop_agreed(self, stop: StopSignals, final: bool = False) -> bool:
        """Whether a stop signal arrived; in a distributed run at any rank (:meth:`agree_stop`)."""
        return stop.signum is not None if self.dist is None else self.agree_stop(stop.signum is not None, final)

    def agree_stop(self, flag: bool, final: bool) -> bool:
        """Whether ``flag`` is set at any rank: a collective every rank makes at the same loop iteration (``final``:
        the loop's last check). Trainers whose iterations are short may agree every few iterations only."""
        return self.dist.any_(flag)

    def _report(self, logger: Logger, report: Report, rate: tuple[float, int, int]) -> None:
        """Add ``time/*`` to a report's metrics, watch them for warning signs, and log them when due."""
        since, steps0, agent_steps0 = rate
        elapsed = max(time.time() - since, 1e-9)
        row = dict(report.metrics)
        row["time/sps"] = (self.env_steps - steps0) / elapsed
        row["time/agent_sps"] = (self.agent_steps - agent_steps0) / elapsed
        row["time/env_frames"] = float(self.env_steps * self.cfg.env.action_repeat)
        row["time/agent_steps"] = float(self.agent_steps)
        row["time/grad_steps"] = float(self.learner.grad_steps)
        for warning in self.health.observe(row, self.env_steps):
            logger.message(str(warning))
            logger.text(f"health/{warning.name}", str(warning), self.env_steps)
        if report.log:
            logger.scalars(row, self.env_steps)
            logger.status(self.env_steps, self._status_line(row))

    def _status_line(self, row: Mapping[str, float]) -> str:
        ret = row.get("rollout/ep_return")
        best = ""
        if self.best_eval is not None:
            best = f"best eval {'win rate ' if 'win_rate' in self.best_eval else ''}{score(self.best_eval):.2f}"
        parts = [f"it {self.iteration}", f"ret {ret:.2f}" if ret is not None else "ret -", *self.status_parts(row),
                 best, f"sps {row['time/sps']:.0f}"]
        return "  ".join(p for p in parts if p)

    def _interrupted(self, logger: Logger) -> TrainingInterrupted:
        """Say where the run stopped and how to resume (``latest.pt`` is written); the exit to raise."""
        # Distributed: a rank that got no signal stops because another did.
        signum = (self._stop.signum if self._stop is not None else None) or signal.SIGTERM
        logger.message(
            f"{signal.Signals(signum).name}: stopped at {self.env_steps:,} env steps; saved "
            f"{self.ckpt_dir / 'latest.pt'}. Resume with: marl train resume={self.run_dir}"
        )
        return TrainingInterrupted(128 + signum)

    def _finish(self, logger: Logger) -> dict[str, Any]:
        """Final evaluation (unless one just ran), ``latest.pt``, ``summary.json``, hparams, the last line.

        ``latest.pt`` is written before the final evaluation too: a stop signal during it ends the run
        within a step of the evaluation envs, with the trained networks already saved."""
        if self.last_eval is None or self.last_eval["env_steps"] != self.env_steps:
            self.save()
            if self.evaluate_and_keep_best(logger) is None:
                raise self._interrupted(logger)
        self.add_stochastic_eval()
        self.save()
        summary = self.summary()
        if self.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            logger.artifacts(self.run_dir, run_artifacts(self.run_dir))  # best.pt, summary.json, videos/*
        logger.hparams(flatten_dict({k: v for k, v in to_dict(self.cfg).items() if k not in ("run_dir", "resume")}),
                       {"eval/ep_return": summary["final_eval"]["ep_return"]})
        logger.message(f"done: {self.env_steps:,} env steps in {summary['wall_time_s']:.0f}s "
                       f"({summary['sps']:.0f} env steps/s); {result_line(summary)}; run dir {self.run_dir}")
        return summary

    def summary(self) -> dict[str, Any]:
        """What ``summary.json`` holds: counters, throughput, the final and best evaluations, the history."""
        wall = self.wall_time()
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
            "n_parameters": self.n_parameters(),
        }
