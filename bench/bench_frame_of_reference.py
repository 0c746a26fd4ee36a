"""Frame of reference on grid navigation: ``world`` vs ``egocentric`` frames, same budget and seeds.

Trains ``configs/grid_nav_world_ppo.yaml`` and ``configs/grid_nav_egocentric_ppo.yaml`` (PPO,
shared network; the two configs differ only in ``env.kwargs.frame``) for every seed, one run
after another, and reads the periodic deterministic evaluation (``eval/success_rate``: the
fraction of agents that reach their goal, on fresh, separately seeded envs) from each run's
TensorBoard events. Reports per frame:

* env steps to reach ``--threshold`` (the first evaluation at or above it; ``-`` when never),
  per seed and as mean over the seeds that reached it;
* the final success rate (evaluation at the end of training), mean and per seed;
* wall time and env steps/s of each run.

and plots success rate vs env steps (mean over seeds, band = min..max over seeds) to
``OUT/success_vs_env_steps.png``; ``OUT/results.json`` holds every number. ``--variant image``
runs the same comparison on image observations (``env.kwargs.obs_mode=image``, CNN encoder).

The helpers (:class:`Arm`, :func:`run_arms`, :func:`plot_curves`, ...) are also used by
``bench/bench_frame_stack.py``.

Run from the repository root (one run at a time; about 5 minutes per run on 2 busy cores)::

    .venv/bin/python -m bench.bench_frame_of_reference --seeds 0 1 2
    .venv/bin/python -m bench.bench_frame_of_reference --variant image --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from marl.api import train
from marl.config import load_config

VARIANTS: dict[str, tuple[str, ...]] = {
    "vector": (),
    "image": ("env.kwargs.obs_mode=image",),
}


class Arm(NamedTuple):
    """One side of a comparison: a config file and overrides applied to it."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()


class SeedRun(NamedTuple):
    """The evaluation curve and timing of one finished run.

    Attributes:
        arm: the arm's name.
        seed: the run's seed.
        env_steps: ``[N]`` env steps at which the run was evaluated.
        values: ``[N]`` the metric at those evaluations.
        final: the metric of the evaluation at the end of training.
        wall_time_s: training wall time in seconds (evaluations included).
        sps: env steps per second over the whole run.
        env_frames: env frames of the run (env steps x action repeat).
    """

    arm: str
    seed: int
    env_steps: np.ndarray
    values: np.ndarray
    final: float
    wall_time_s: float
    sps: float
    env_frames: int


def scalar_curve(run_dir: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """``(env_steps [N], values [N])`` of the scalar ``tag`` in the TensorBoard events of ``run_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        raise KeyError(f"{run_dir}: no scalar {tag!r} in the TensorBoard events (was log.tensorboard on?)")
    points = events.Scalars(tag)
    return np.array([p.step for p in points], np.int64), np.array([p.value for p in points], np.float64)


def first_crossing(env_steps: np.ndarray, values: np.ndarray, threshold: float) -> int | None:
    """Env steps of the first evaluation with ``value >= threshold``; ``None`` if none.

    >>> first_crossing(np.array([10, 20, 30]), np.array([0.5, 0.9, 0.7]), 0.8)
    20
    """
    hits = np.flatnonzero(values >= threshold)
    return int(env_steps[hits[0]]) if hits.size else None


def train_seed(arm: Arm, seed: int, out: Path, common: Sequence[str], metric: str, reuse: bool) -> SeedRun:
    """Train ``arm`` with ``seed`` in ``out/runs/<arm>/seed<seed>`` (or reuse a finished run there)."""
    run_dir = out / "runs" / arm.name / f"seed{seed}"
    summary_path = run_dir / "summary.json"
    if not (reuse and summary_path.is_file()):
        if run_dir.exists():
            shutil.rmtree(run_dir)
        overrides = [*arm.overrides, *common, f"seed={seed}", f"run_dir={run_dir}", "log.tensorboard=true",
                     "log.progress=false"]
        train(load_config(arm.config, overrides))
    summary = json.loads(summary_path.read_text())
    steps, values = scalar_curve(run_dir, f"eval/{metric}")
    return SeedRun(arm.name, seed, steps, values, float(summary["final_eval"][metric]),
                   float(summary["wall_time_s"]), float(summary["sps"]), int(summary["env_frames"]))


def run_arms(
    arms: Sequence[Arm], seeds: Sequence[int], out: Path, common: Sequence[str], metric: str, reuse: bool
) -> dict[str, list[SeedRun]]:
    """Every arm for every seed, sequentially (seed-major, so a partial run still compares both arms)."""
    runs: dict[str, list[SeedRun]] = {a.name: [] for a in arms}
    for seed in seeds:
        for arm in arms:
            run = train_seed(arm, seed, out, common, metric, reuse)
            runs[arm.name].append(run)
            print(f"{arm.name:>12} seed {seed}: final {metric} {run.final:.3f}, {run.wall_time_s:.0f} s, "
                  f"{run.sps:.0f} env steps/s", flush=True)
    return runs


def mean_band(runs: Sequence[SeedRun]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(env_steps, mean, low, high)`` over seeds, on the evaluation points every run covers.

    Runs of one config are evaluated at the same env steps; other points are linearly
    interpolated onto the first run's grid, clipped to the range all runs cover.
    """
    grid = runs[0].env_steps
    lo_end = max(r.env_steps[0] for r in runs)
    hi_end = min(r.env_steps[-1] for r in runs)
    grid = grid[(grid >= lo_end) & (grid <= hi_end)]
    stacked = np.stack([np.interp(grid, r.env_steps, r.values) for r in runs])
    return grid, stacked.mean(0), stacked.min(0), stacked.max(0)


def plot_curves(
    runs: dict[str, list[SeedRun]], ylabel: str, title: str, path: Path, threshold: float | None = None
) -> None:
    """Mean over seeds (line) with the min..max band of each arm, vs env steps; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, arm_runs in runs.items():
        steps, mean, low, high = mean_band(arm_runs)
        ax.plot(steps, mean, label=f"{name} ({len(arm_runs)} seeds)")
        ax.fill_between(steps, low, high, alpha=0.25)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("env steps (agent decisions, summed over env copies)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def arm_table(runs: dict[str, list[SeedRun]], threshold: float | None) -> tuple[str, dict[str, Any]]:
    """A printable table and the JSON-ready numbers per arm."""
    lines = []
    numbers: dict[str, Any] = {}
    for name, arm_runs in runs.items():
        finals = np.array([r.final for r in arm_runs])
        row: dict[str, Any] = {
            "seeds": [r.seed for r in arm_runs],
            "final": finals.tolist(),
            "final_mean": float(finals.mean()),
            "final_std": float(finals.std()),
            "wall_time_s": [round(r.wall_time_s, 1) for r in arm_runs],
            "sps": [round(r.sps, 1) for r in arm_runs],
            "curves": {r.seed: {"env_steps": r.env_steps.tolist(), "values": r.values.tolist()}
                       for r in arm_runs},
        }
        text = (f"{name:>12}: final {finals.mean():.3f} ± {finals.std():.3f} "
                f"(seeds {np.round(finals, 3).tolist()})")
        if threshold is not None:
            hits = [first_crossing(r.env_steps, r.values, threshold) for r in arm_runs]
            reached = [h for h in hits if h is not None]
            row["steps_to_threshold"] = hits
            row["steps_to_threshold_mean"] = float(np.mean(reached)) if reached else None
            mean_text = f"{np.mean(reached):,.0f}" if reached else "-"
            text += (f"; steps to {threshold:g}: {mean_text} mean over {len(reached)}/{len(hits)} seeds "
                     f"({', '.join('-' if h is None else f'{h:,}' for h in hits)})")
        text += f"; wall {np.mean(row['wall_time_s']):.0f} s/run, {np.mean(row['sps']):.0f} env steps/s"
        lines.append(text)
        numbers[name] = row
    return "\n".join(lines), numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="vector",
                        help="vector: the configs as they are; image: env.kwargs.obs_mode=image")
    parser.add_argument("--total-env-steps", type=int, default=0,
                        help="budget per run (0 = the configs' own)")
    parser.add_argument("--threshold", type=float, default=0.8, help="eval success rate to reach")
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/out/frame_of_reference_<variant>")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs found in OUT/runs")
    args = parser.parse_args()
    out = args.out or Path("bench/out") / f"frame_of_reference_{args.variant}"
    common = list(VARIANTS[args.variant])
    if args.total_env_steps:
        common.append(f"total_env_steps={args.total_env_steps}")
    arms = [Arm(frame, f"configs/grid_nav_{frame}_ppo.yaml") for frame in ("world", "egocentric")]
    runs = run_arms(arms, args.seeds, out, common, "success_rate", args.reuse)
    text, numbers = arm_table(runs, args.threshold)
    print(f"\ngrid_nav, {args.variant} observations, eval success rate (deterministic policy)\n{text}")
    plot_curves(runs, "eval success rate", f"grid_nav frame of reference ({args.variant} obs)",
                out / "success_vs_env_steps.png", args.threshold)
    (out / "results.json").write_text(json.dumps({"variant": args.variant, "overrides": common,
                                                  "threshold": args.threshold, "arms": numbers}, indent=1))
    print(f"wrote {out / 'success_vs_env_steps.png'} and {out / 'results.json'}")


if __name__ == "__main__":
    main()
