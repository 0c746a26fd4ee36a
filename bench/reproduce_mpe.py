"""The published MPE results, reproduced with the field's protocol: train, evaluate, convert, tabulate.

Protocol (Papoudakis et al. 2021, "Benchmarking Multi-Agent Deep Reinforcement Learning Algorithms in
Cooperative Tasks", the EPyMARL benchmark): per (task, algorithm) several seeds; over training,
``EVAL_POINTS`` evenly spaced evaluations of 100 episodes (plus one at the end); per seed the
evaluation curve; **maximum return** = the best evaluation point of the seed-mean curve, with the 95%
confidence interval over seeds at that point; **average return** = the mean of the seed-mean curve over
all evaluation points. Policy-gradient methods are evaluated by sampling their actions (as EPyMARL
does for IPPO / MAPPO), value-based ones greedily.

Scale: the paper's MPE numbers are team returns of the original multiagent-particle-envs; mpe2
differs in reward bookkeeping, so each published Spread cell is compared on our scale through an exact
identity on the same trajectory (``to_paper``): Spread (mpe2 ``local_ratio=0.5``) paper = 2 x ours - 75
(the original counted every agent's collision with itself, -1 per agent per step). Speaker-Listener has
no such identity: its published best cells (about -10.7) lie above what a near-optimal listener scores on
our scale even under the original dynamics (-13.8, ``bench/speaker_listener_bounds.py``), so they are
printed beside ours but not compared; instead the table's last column gives the share of the gap between a
listener that ignores the message and one that steers to the goal (``SL_REFERENCES``, on mpe2) that a
run's maximum closes. Reference has no identity either (squared vs plain distances) and is not tabulated.

Training runs on the batched simulation of mpe2 (``env.backend=batched``, ``envs/batched_mpe``),
which is faithful to mpe2 (tests/our_envs/test_batched_mpe.py) and many times faster. The env steps
budget counts env transitions (one per copy per step), as EPyMARL's ``t_env`` does.

    python bench/reproduce_mpe.py --budget 2000000 --seeds 0 1 2 3 4                # spread, MAPPO + IPPO
    python bench/reproduce_mpe.py --tasks speaker_listener --algos mappo --budget 2000000 --seeds 0 1 2
    python bench/reproduce_mpe.py --out bench/results/mpe --report-only            # tabulate finished runs

Each run's directory (``OUT/<task>-<algo>-seed<k>``) holds its summary.json; finished runs are not
re-trained, so a long reproduction can be stopped and continued.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EVAL_POINTS = 40

TASKS = {
    "spread": {"id": "mpe2.simple_spread_v3", "kwargs": "{N: 3, local_ratio: 0.5, max_cycles: 25, "
               "continuous_actions: false}"},
    "speaker_listener": {"id": "mpe2.simple_speaker_listener_v4", "kwargs": "{max_cycles: 25, "
                         "continuous_actions: false}"},
}


def to_paper(task: str, ours: float) -> float:
    """Our team return (mpe2, summed over agents over a 25-step episode) on the paper's scale for Spread; other
    tasks stay on our scale (no identity is known for them)."""
    return 2.0 * ours - 75.0 if task == "spread" else ours


# Speaker-Listener team returns (our scale, mpe2) of a planned listener that steers to the landmarks' centroid (it
# ignores the message) and to the goal (a perfect message): `python bench/speaker_listener_bounds.py`, 100 episodes.
SL_REFERENCES = (-31.75, -16.71)


def message_gap_closed(ours: float) -> float:
    """Share of the gap between the no-message and the perfect-message listener that a Speaker-Listener return
    (our scale) closes: 0 at the centroid planner, 1 at the goal planner."""
    low, high = SL_REFERENCES
    return (ours - low) / (high - low)


PUBLISHED = {
    # (task, algo) -> (maximum return, 95% CI half width over 5 seeds): EPyMARL paper Table 3 (parameter sharing;
    # arXiv 2006.07869v4), 20M env steps for on-policy methods, 2M for value-based ones. Speaker-Listener's cells are
    # on the paper's own scale, not comparable with ours (module docstring).
    ("spread", "mappo"): (-133.54, 3.08),
    ("spread", "ippo"): (-133.86, 3.67),
    ("spread", "vdn"): (-131.03, 1.85),
    ("spread", "qmix"): (-126.62, 2.96),
    ("speaker_listener", "mappo"): (-10.68, 0.30),
    ("speaker_listener", "ippo"): (-13.10, 3.50),
    ("speaker_listener", "vdn"): (-15.95, 2.48),
    ("speaker_listener", "qmix"): (-11.56, 0.53),
}
COMPARABLE = {"spread"}  # tasks whose published cells are on our table's scale

PPO_CONFIG = "configs/simple_spread_mappo.yaml"  # 128 copies x 25 steps, the MAPPO paper's MPE scale; --ppo-config
ALGOS = {
    "mappo": (PPO_CONFIG, ["model.critic=central", "eval.deterministic=false"]),
    "ippo": (PPO_CONFIG, ["model.critic=local", "eval.deterministic=false"]),
    "vdn": ("configs/spread_vdn.yaml", []),
    "qmix": ("configs/spread_qmix.yaml", []),
}


def run_dir(out: Path, task: str, algo: str, seed: int) -> Path:
    return out / f"{task}-{algo}-seed{seed}"


def train(out: Path, task: str, algo: str, seed: int, budget: int, extra: list[str],
          ppo_config: str = PPO_CONFIG) -> float:
    """Train one (task, algo, seed) unless its summary exists; return the wall time in seconds (0 if skipped)."""
    path = run_dir(out, task, algo, seed)
    if (path / "summary.json").exists():
        return 0.0
    config, overrides = ALGOS[algo]
    config = ppo_config if config == PPO_CONFIG else config
    t = TASKS[task]
    interval = max(budget // EVAL_POINTS, 1)
    cmd = [sys.executable, "-m", "marl", "train", config, f"run_dir={path}", f"seed={seed}",
           f"total_env_steps={budget}", f"env.id={t['id']}", f"env.kwargs={t['kwargs']}", "env.backend=batched",
           f"eval.interval={interval}", "eval.episodes=100", "eval.num_envs=100", "eval.stochastic_check=false",
           "log.progress=false", "torch_threads=1", *overrides, *extra]
    start = time.time()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.time() - start


def curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A run's evaluation points: env steps and team returns (our scale); a run still training is read from its
    TensorBoard events (``eval/ep_return``, written at every evaluation)."""
    if (path / "summary.json").exists():
        history = json.loads((path / "summary.json").read_text())["eval_history"]
        return (np.array([h["env_steps"] for h in history], float),
                np.array([h["ep_return"] for h in history], float))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted(path.glob("events.out.tfevents.*")):  # a resumed run appends a file
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if "eval/ep_return" in acc.Tags()["scalars"]:
            points.update({e.step: e.value for e in acc.Scalars("eval/ep_return")})
    steps = sorted(points)
    return np.array(steps, float), np.array([points[k] for k in steps], float)


def finished(path: Path, include_running: bool) -> bool:
    """A run to tabulate: finished, or (``include_running``) started with at least one evaluation."""
    return (path / "summary.json").exists() or (include_running and len(curve(path)[0]) > 0)


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t (two-sided 95% intervals) for small df."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
    return table.get(df, 1.96)


def aggregate(task: str, curves: list[np.ndarray]) -> dict[str, float]:
    """Maximum and average returns (paper scale) of one cell from its seeds' evaluation curves."""
    n = min(len(c) for c in curves)
    paper = np.stack([[to_paper(task, v) for v in c[:n]] for c in curves])  # [seeds, points]
    mean = paper.mean(axis=0)
    best = int(mean.argmax())
    k = paper.shape[0]
    half = (t_quantile_975(k - 1) * paper[:, best].std(ddof=1) / math.sqrt(k)) if k > 1 else float("nan")
    return {"max": float(mean[best]), "max_ci": float(half), "average": float(mean.mean()), "seeds": k,
            "points": n, "best_point": best, "final": float(mean[-1]),
            "final_ours": float(np.mean([c[n - 1] for c in curves]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["spread"], choices=sorted(TASKS))
    p.add_argument("--algos", nargs="+", default=["mappo", "ippo"], choices=sorted(ALGOS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--budget", type=int, default=20_000_000, help="env steps per run (the paper: 20M on-policy)")
    p.add_argument("--out", default="bench/results/mpe", help="where the runs go")
    p.add_argument("--ppo-config", default=PPO_CONFIG, help="config of the MAPPO and IPPO runs (the 2M-step runs "
                   "of docs/benchmarks.md used configs/simple_spread_ppo.yaml: 16 copies x 100 steps)")
    p.add_argument("--report-only", action="store_true", help="tabulate the finished runs, train nothing")
    p.add_argument("--include-running", action="store_true", help="with --report-only: also tabulate runs still "
                   "training, at the evaluation points every seed has reached")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides of every run")
    a = p.parse_args()
    out = ROOT / a.out
    out.mkdir(parents=True, exist_ok=True)
    walls = {}
    for task in a.tasks:
        for algo in a.algos:
            for seed in a.seeds:
                if not a.report_only:
                    walls[(task, algo, seed)] = train(out, task, algo, seed, a.budget, a.overrides, a.ppo_config)
                    if walls[(task, algo, seed)]:
                        print(f"{task} {algo} seed {seed}: {walls[(task, algo, seed)]:.0f} s", flush=True)
    print("\n| task | algo | seeds | budget | max return (Spread: paper scale) | at | average | final (ours) "
          "| published max | message gap closed (S-L) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for task in a.tasks:
        for algo in a.algos:
            paths = [run_dir(out, task, algo, s) for s in a.seeds
                     if run_dir(out, task, algo, s).exists() and finished(run_dir(out, task, algo, s),
                                                                          a.include_running)]
            if not paths:
                continue
            curves = [curve(q) for q in paths]  # read once: a running run's events are parsed each time
            cells = aggregate(task, [c[1] for c in curves])
            steps = curves[0][0][cells["points"] - 1]
            pub = PUBLISHED.get((task, algo))
            pub_s = f"{pub[0]:.2f} ± {pub[1]:.2f}" if pub else "n/a"
            pub_s += "" if task in COMPARABLE or not pub else " (paper's scale)"
            gap = f"{message_gap_closed(cells['max']):.0%}" if task == "speaker_listener" else ""
            print(f"| {task} | {algo} | {cells['seeds']} | {steps:,.0f} | {cells['max']:.2f} ± {cells['max_ci']:.2f} "
                  f"| {curves[0][0][cells['best_point']]:,.0f} "
                  f"| {cells['average']:.2f} | {cells['final_ours']:.2f} | {pub_s} | {gap} |")


if __name__ == "__main__":
    main()
