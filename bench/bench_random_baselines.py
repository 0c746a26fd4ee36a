"""Returns of a uniformly random policy, measured with marl's own evaluator (same seeds as ``marl eval``).

The reference line for "clearly beats random" claims::

    python bench/bench_random_baselines.py --episodes 100
"""

from __future__ import annotations

import argparse
import functools

import numpy as np

from marl.config import load_config
from marl.env.make import vector_env
from marl.evaluation import evaluate, random_actions
from marl.types import ActOutput

CONFIGS = [
    "configs/simple_spread_ppo.yaml",
    "configs/simple_adversary_ppo.yaml",
    "configs/coop_gather_ppo.yaml",
    "configs/cartpole_ppo.yaml",
    "configs/pendulum_ppo.yaml",
]


class RandomPolicy:
    """Uniformly random allowed actions; the evaluator's ``act`` interface."""

    def __init__(self, spec, seed: int) -> None:
        self.spec = spec
        self.rng = np.random.default_rng(seed)

    def act(self, obs, state=None, deterministic=True, update_stats=False, with_value=False) -> ActOutput:
        return ActOutput({}, random_actions(self.spec, obs, self.rng), {}, {}, {}, {})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--configs", nargs="*", default=CONFIGS)
    args = p.parse_args()
    print(f"{'config':<40} {'team return':>12} {'± std':>8}  per group")
    for path in args.configs:
        cfg = load_config(path, ["env.backend=sync"])
        make = functools.partial(vector_env, cfg, backend="sync")
        venv = make(1)
        spec = venv.spec
        venv.close()
        r = evaluate(RandomPolicy(spec, 0), make, args.episodes, cfg.seed, num_envs=10)
        groups = ", ".join(f"{g}: {v:.2f}" for g, v in r["per_group"].items())
        extra = f"  success {r['success_rate']:.2f}" if "success_rate" in r else ""
        print(f"{path:<40} {r['ep_return']:>12.2f} {r['ep_return_std']:>8.2f}  {groups}{extra}")


if __name__ == "__main__":
    main()
