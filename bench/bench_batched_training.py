"""End-to-end PPO throughput: mpe2 simple_spread through PettingZoo vs the batched simulation.

Both arms train ``configs/simple_spread_ppo.yaml`` (shared network, 10 epochs x 4 minibatches per
update, every hyperparameter equal) and differ in how the env copies are stepped:

* ``mpe2``: the shipped setting, 16 copies of mpe2's parallel env in 2 worker processes
  (``env.backend=subprocess``), overlapped with inference;
* ``batched``: ``env.backend=batched``, ``--copies`` copies (default 1,024) in one numpy simulation
  (``envs.batched_mpe``), ``algo.num_steps=25`` (one episode per copy per rollout).

Evaluation and checkpoints are off; env steps/s is measured by the run itself (``summary.json``'s
``sps``: env steps over training wall time). The arms alternate ``--repeats`` times in one process
(the machine is shared, so the ratio within a run is what counts)::

    python bench/bench_batched_training.py                       # 60k mpe2 / 400k batched env steps, 2 repeats
    python bench/bench_batched_training.py --copies 256 --repeats 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMON = ["eval.interval=0", "checkpoint.interval=0", "log.tensorboard=false", "log.progress=false",
          "eval.episodes=8", "eval.num_envs=8"]


def run(overrides: list[str]) -> dict:
    from marl.api import train
    from marl.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        return train(load_config(ROOT / "configs/simple_spread_ppo.yaml", [*COMMON, *overrides, f"run_dir={tmp}/run"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--copies", type=int, default=1024, help="env copies of the batched arm")
    p.add_argument("--mpe2-steps", type=int, default=60_000, help="env steps of the mpe2 arm")
    p.add_argument("--batched-steps", type=int, default=409_600, help="env steps of the batched arm")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    arms = {
        "mpe2": [f"total_env_steps={args.mpe2_steps}"],
        "batched": [f"total_env_steps={args.batched_steps}", "env.backend=batched", f"env.num_envs={args.copies}",
                    "algo.num_steps=25"],
    }
    sps: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.repeats):
        for name, overrides in arms.items():
            summary = run(overrides)
            sps[name].append(summary["sps"])
            print(f"repeat {r}  {name:8s} {summary['env_steps']:>9,} env steps  {summary['sps']:>10,.0f} env steps/s  "
                  f"eval {summary['final_eval']['ep_return']:.1f}", flush=True)
    ratios = np.array(sps["batched"]) / np.array(sps["mpe2"])
    print(f"\nmean env steps/s: mpe2 {np.mean(sps['mpe2']):,.0f}, batched ({args.copies} copies) "
          f"{np.mean(sps['batched']):,.0f}; ratio per repeat {', '.join(f'{x:.1f}x' for x in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
