"""Frame stacking on vs off where velocity matters: CartPole observed through positions only.

``envs.masked_cartpole`` hides the cart and pole velocities, so one observation cannot tell
which way the pole is falling. Trains ``configs/masked_cartpole_framestack_ppo.yaml`` with
``env.frame_stack=4`` (the config's value: the last 4 observations, oldest first) and with
``env.frame_stack=1`` (off), same PPO settings, budget and seeds, one run after another, and
reports per arm the final deterministic evaluation return (max 500), env steps to reach
``--threshold`` and the curve of eval return vs env steps (``OUT/return_vs_env_steps.png``,
mean over seeds with the min..max band). The measured difference is the difference of the
mean final returns (stack 4 minus stack 1) with a 95% percentile bootstrap interval over seeds
(:func:`marl.stats.bootstrap_difference`; with 3 seeds a coarse interval).

Run from the repository root (about 3 minutes per run on 2 busy cores)::

    .venv/bin/python -m bench.bench_frame_stack --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.bench_frame_of_reference import Arm, arm_table, plot_curves, run_arms
from marl.stats import bootstrap_difference

CONFIG = "configs/masked_cartpole_framestack_ppo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stack", type=int, default=4, help="frames stacked in the 'on' arm")
    parser.add_argument("--total-env-steps", type=int, default=0,
                        help="budget per run (0 = the config's own)")
    parser.add_argument("--threshold", type=float, default=200.0, help="eval return to reach")
    parser.add_argument("--out", type=Path, default=Path("bench/out/frame_stack"))
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs found in OUT/runs")
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resampling")
    args = parser.parse_args()
    common = [f"total_env_steps={args.total_env_steps}"] if args.total_env_steps else []
    on, off = f"stack{args.stack}", "stack1"
    arms = [Arm(on, CONFIG, (f"env.frame_stack={args.stack}",)), Arm(off, CONFIG, ("env.frame_stack=1",))]
    runs = run_arms(arms, args.seeds, args.out, common, "ep_return", args.reuse)
    text, numbers = arm_table(runs, args.threshold)
    finals = {name: np.array([r.final for r in arm_runs]) for name, arm_runs in runs.items()}
    rng = np.random.default_rng(args.bootstrap_seed)
    diff, low, high = bootstrap_difference(finals[on], finals[off], rng)
    print(f"\nmasked CartPole (positions only), eval return (deterministic policy, max 500)\n{text}")
    print(f"difference {on} - {off}: {diff:+.1f} "
          f"(95% bootstrap interval over seeds {low:+.1f} .. {high:+.1f})")
    plot_curves(runs, "eval return", "masked CartPole: frame stacking", args.out / "return_vs_env_steps.png",
                args.threshold)
    result = {"config": CONFIG, "overrides": common, "threshold": args.threshold, "arms": numbers,
              "difference": {"mean": diff, "low": low, "high": high}}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out / 'return_vs_env_steps.png'} and {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
