"""Tune PPO on CartPole-v1 with Optuna, built from Python.

The same study as::

    marl tune configs/cartpole_ppo.yaml total_env_steps=20000 eval.interval=5000 \\
        --space configs/tune/ppo.yaml --trials 12 --out tune/cartpole-ppo

Run from the repository root (needs ``pip install -e ".[tune]"``)::

    python examples/tune_cartpole.py                  # 12 trials of 20k env steps (minutes on 2 cores)
    python examples/tune_cartpole.py --tiny           # 3 trials of 1k env steps: a smoke test in seconds

Re-running continues the study stored in ``OUT/study.db``. The report is ``OUT/report.md``; the best
trial's config is ``OUT/best.yaml``: ``marl train OUT/best.yaml`` trains it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from marl.tune import tune

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="finished trials the study should hold")
    parser.add_argument("--steps", type=int, default=20_000, help="total_env_steps of every trial")
    parser.add_argument("--seeds", type=int, default=1, help="runs per trial (the value is their mean)")
    parser.add_argument("--out", default="tune/cartpole-ppo", help="report and run folder")
    parser.add_argument("--tiny", action="store_true", help="3 trials of 1024 env steps (smoke test)")
    args = parser.parse_args()
    trials, steps = (3, 1024) if args.tiny else (args.trials, args.steps)
    overrides = [f"total_env_steps={steps}", f"eval.interval={max(steps // 4, 256)}", "log.progress=false",
                 "log.tensorboard=false"]
    summary = tune(ROOT / "configs" / "cartpole_ppo.yaml", ROOT / "configs" / "tune" / "ppo.yaml", trials=trials,
                   overrides=overrides, seeds=args.seeds, out=args.out, study_name="cartpole-ppo")
    best = summary["best"]
    if best is None:
        print(f"{summary['n_trials']} trials, none complete yet (all pruned or failed)")
        return
    print(f"best trial {best['number']}: mean final eval return {best['value']:.1f}")
    for key, value in best["params"].items():
        print(f"  {key} = {value}")
    print(f"report: {Path(args.out) / 'report.md'}; train it: marl train {Path(args.out) / 'best.yaml'}")


if __name__ == "__main__":
    main()
