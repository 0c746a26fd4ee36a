"""Shared vs independent parameters on MPE simple_spread (3 agents), built from Python.

The same comparison as::

    marl compare configs/simple_spread_ppo.yaml total_env_steps=150000 \\
        --sharing shared,independent --seeds 0,1,2 --out reports/compare-simple_spread-sharing

Run from the repository root::

    python examples/compare_sharing.py                       # 150k env steps per run, seeds 0, 1, 2
    python examples/compare_sharing.py --steps 20000 --seeds 0,1 --out /tmp/spread-quick

Runs that already finished in ``--out`` are reused, so an interrupted comparison picks up
where it stopped. The report is ``OUT/report.md``, with ``return_vs_env_steps.png``,
``return_vs_wall_time.png`` and ``results.json`` beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from marl.comparison import Variant, pairwise_table, run_comparison, variant_table

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "simple_spread_ppo.yaml"

VARIANTS = [
    # one network for the 3 agents, a one-hot agent id appended to each observation
    Variant("shared", ("model.sharing=shared",)),
    # one parameter set per agent, run as stacked weights (model.strategy=batched)
    Variant("independent", ("model.sharing=independent",)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150_000, help="total_env_steps of every run")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--out", default="reports/compare-simple_spread-sharing", help="report folder")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    report, results = run_comparison(
        CONFIG, VARIANTS, seeds, overrides=[f"total_env_steps={args.steps}"], out=args.out,
        command=f"python examples/compare_sharing.py --steps {args.steps} --seeds {args.seeds} --out {args.out}",
    )
    print(variant_table(results))
    print()
    print(pairwise_table(results))
    print(f"\nreport: {report}")


if __name__ == "__main__":
    main()
