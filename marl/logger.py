"""Metrics to the experiment trackers (TensorBoard, W&B, MLflow: :mod:`marl.tracking`) and the console.

Tag scheme: ``<section>/<name>[/<group or agent>]``, x-axis = ``env_steps``. A ``train/*``
metric of a run with several groups is logged per group (``train/q_loss/<group>``) and as
the mean over groups (``train/q_loss``). Each concept has one name in every algorithm.

==========================  ===================================================================
tag                         meaning
==========================  ===================================================================
rollout/ep_return           team return of training episodes (sum over agents), mean
rollout/ep_return/<who>     per agent and per group (mean per-agent return)
rollout/ep_length           env steps per training episode
rollout/episodes            training episodes finished since the last log
rollout/<info>              episode infos, e.g. rollout/success_rate
train/policy_loss           PPO: clipped surrogate loss
train/value_loss            PPO: 0.5 (V - R)^2
train/entropy               policy entropy in nats (PPO; SAC: -E[log pi], exact for Discrete groups)
train/approx_kl             PPO: E[(r-1) - log r]
train/clip_fraction         PPO: fraction of ratios outside [1-eps, 1+eps]
train/explained_variance    PPO: 1 - Var(R - V) / Var(R)
train/q_loss                off-policy critic loss: DQN Huber(Q, y); SAC/TD3 0.5 sum_i (Q_i - y)^2;
                            VDN/QMIX (Q_tot - y)^2 (algo.td_loss)
train/q_mean                mean Q of the replayed actions (SAC/TD3: of (Q_1 + Q_2) / 2; VDN/QMIX: of Q_tot)
train/q_agent_mean          VDN/QMIX: mean per-agent Q of the replayed actions (alive agents)
train/team_reward           VDN/QMIX: mean n-step team reward (sum over alive agents) of the replayed rows
train/actor_loss            SAC: E[alpha log pi - min Q]; TD3: -Q_1(s, mu(s)) (its delayed steps)
train/actor_grad_norm       SAC/TD3: the actor's gradient norm before clipping
train/ent_coef              SAC: entropy coefficient alpha = exp(log_alpha)
train/ent_coef_loss         SAC with autotune: -log_alpha (log pi + target_entropy)
train/epsilon               DQN: probability of a random action at the logged step
train/per_beta              PER: importance-sampling exponent (annealed to 1)
train/grad_norm             gradient norm before clipping (PPO: all networks; off-policy: the Q nets)
train/lr                    PPO: learning rate
train/epochs                PPO: epochs run in the update (fewer with algo.target_kl)
train/vtrace_rho_mean       appo: mean clipped importance ratio min(rho_bar, pi/mu) over alive agents
train/vtrace_ratio_max      appo: largest pi/mu in the rollout of the update
async/policy_lag_mean       appo: learner updates since each step's parameters acted, mean since the last log
async/policy_lag_max        appo: the same, largest since the last log
async/dropped_rollouts      appo: rollouts dropped so far, their lag above algo.max_lag
async/worker_restarts       appo: worker processes replaced so far after they died
time/sps                    env steps per second (summed over env copies)
time/agent_sps              agent decisions per second
time/env_frames             env frames so far (env steps x env.action_repeat)
time/agent_steps            agent decisions so far
time/grad_steps             optimizer steps so far
replay/bytes_per_row        off-policy, once at step 0: checkpoint bytes of one replay row
eval/<field>                fields of marl.evaluation.summarize
health/<warning>            text: a warning sign of marl.health (e.g. health/q_divergence)
==========================  ===================================================================

PPO logs every ``log.interval`` iterations (its train/* values are means over the
update); off-policy trainers every ``log.interval`` training phases (means over the
gradient steps since the last log). Every tracker in ``log.backends`` gets the same tags with
``env_steps`` as its x-axis (docs/tracking.md).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from marl.types import EnvSpec, EpisodeStats

if TYPE_CHECKING:
    from marl.tracking import Tracker


def episode_metrics(episodes: list[EpisodeStats], spec: EnvSpec) -> dict[str, float]:
    """``rollout/*`` metrics of a list of finished training episodes (empty dict if none)."""
    if not episodes:
        return {}
    out = {
        "rollout/ep_return": float(np.mean([sum(e.returns.values()) for e in episodes])),
        "rollout/ep_length": float(np.mean([e.length for e in episodes])),
        "rollout/episodes": float(len(episodes)),
    }
    if spec.n_agents > 1:
        for a in spec.agents:
            out[f"rollout/ep_return/{a}"] = float(np.mean([e.returns.get(a, 0.0) for e in episodes]))
        if len(spec.groups) > 1:
            for g in spec.groups:
                out[f"rollout/ep_return/{g.name}"] = float(np.mean([out[f"rollout/ep_return/{a}"] for a in g.agents]))
    for k in sorted({k for e in episodes for k in e.info}):
        name = "success_rate" if k == "is_success" else k
        out[f"rollout/{name}"] = float(np.mean([e.info[k] for e in episodes if k in e.info]))
    return out


def flatten_eval(result: dict[str, Any]) -> dict[str, float]:
    """``eval/*`` scalars from an evaluation result (nested per_agent/per_group flattened)."""
    out = {}
    for k, v in result.items():
        if isinstance(v, dict):
            for sub, x in v.items():
                out[f"eval/{k}/{sub}"] = float(x)
        elif isinstance(v, (int, float)):
            out[f"eval/{k}"] = float(v)
    return out


class Logger:
    """Fans scalars, text, hyperparameters and artifacts out to the run's trackers
    (:mod:`marl.tracking`: TensorBoard, W&B, MLflow) and shows a one-line status on the console.

    Args:
        trackers: the open trackers (:func:`marl.tracking.open_trackers`); closed by :meth:`close`.
        progress: show a live progress bar (only when stdout is a TTY).
        total_env_steps: the budget, for the progress bar.
    """

    def __init__(self, trackers: Sequence[Tracker], progress: bool, total_env_steps: int) -> None:
        self.trackers = list(trackers)
        self.total = total_env_steps
        self.start = time.time()
        self.progress = None
        self.task = None
        if progress and sys.stdout.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} env steps"),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
            )
            self.task = self.progress.add_task("train", total=total_env_steps, status="")
            self.progress.start()

    def scalars(self, metrics: dict[str, float], env_steps: int) -> None:
        """Log the finite values of ``metrics`` at ``env_steps`` (None and NaN are left out)."""
        clean = {k: v for k, v in metrics.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if clean:
            for t in self.trackers:
                t.scalars(clean, env_steps)

    def text(self, tag: str, text: str, env_steps: int = 0) -> None:
        for t in self.trackers:
            t.text(tag, text, env_steps)

    def hparams(self, flat_config: dict[str, Any], metrics: dict[str, float]) -> None:
        for t in self.trackers:
            t.hparams(flat_config, metrics)

    def artifacts(self, run_dir: Path, paths: Sequence[Path]) -> None:
        """Keep files of ``run_dir`` (best checkpoint, summary, videos) with each tracked run."""
        for t in self.trackers:
            t.artifacts(run_dir, paths)

    def status(self, env_steps: int, line: str) -> None:
        """Update the progress bar, or print the line when there is no TTY."""
        if self.progress is not None:
            self.progress.update(self.task, completed=min(env_steps, self.total), status=line)
        else:
            print(f"[{env_steps:>10,} / {self.total:,}] {line}", flush=True)

    def message(self, line: str) -> None:
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            print(line, flush=True)

    def close(self, status: str | None = None) -> None:
        """Stop the progress bar and end every tracked run as ``finished``, ``interrupted`` or ``failed``.

        ``status=None`` reads it from the exception being handled, so ``close()`` in a ``finally``
        block says how the run ended: none = finished; a stop signal (:class:`SystemExit`,
        :class:`KeyboardInterrupt`) = interrupted; anything else = failed.
        """
        if status is None:
            exc = sys.exc_info()[1]
            status = "finished" if exc is None else \
                "interrupted" if isinstance(exc, (SystemExit, KeyboardInterrupt)) else "failed"
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        trackers, self.trackers = self.trackers, []
        errors = []
        for t in trackers:
            try:
                t.close(status)
            except Exception as exc:  # noqa: BLE001 - one tracker failing to close must not leave the others open
                errors.append(exc)
        if errors:
            raise errors[0]


def flatten_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
