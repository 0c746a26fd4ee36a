"""Train PPO on a PettingZoo env (MPE simple_spread, 3 agents) from Python.

Shows ``marl.train`` with a YAML config plus overrides (``a__b=`` keywords are the dotted key
``a.b``), the :class:`marl.Run` it returns, and ``marl.evaluate`` on the finished run::

    python examples/train_pettingzoo.py                    # 100k env steps
    python examples/train_pettingzoo.py --steps 3200       # a quick look

The same run from the command line: ``marl train configs/simple_spread_ppo.yaml total_env_steps=100000``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import marl

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "simple_spread_ppo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000, help="total_env_steps")
    parser.add_argument("--out", default="runs/examples/train_pettingzoo", help="run directory")
    args = parser.parse_args()
    run = marl.train(
        CONFIG,
        total_env_steps=args.steps,
        run_dir=args.out,
        seed=1,
        env__backend="sync",  # "subprocess" steps the 16 env copies in worker processes
        eval__episodes=5,
        overrides={"algo.lr": 7e-4, "model.sharing": "shared"},  # the same convention, as a mapping
    )
    print(f"run directory: {run.run_dir}")
    print(f"{run.summary['env_steps']:,} env steps at {run.summary['sps']:.0f} env steps/s; "
          f"final eval team return {run.final_return:.2f}")
    result = marl.evaluate(run, episodes=10)  # fresh, separately seeded envs, frozen statistics
    print(f"10-episode evaluation: {result['ep_return']:.2f} ± {result['ep_return_std']:.2f}; "
          f"per agent {result['per_agent']}")


if __name__ == "__main__":
    main()
