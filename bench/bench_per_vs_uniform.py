"""Prioritized vs uniform replay for DQN on the Blind Cliffwalk, same budget, same seeds.

The task (Schaul et al. 2016, section 3.1, where prioritization is shown to help): a chain of ``n``
states (one-hot observations) and two actions. In every state one action (fixed, drawn once from
``layout_seed``) moves one step right; the other ends the episode with reward 0. Taking the right
action in the last state ends the episode with reward 1. A random policy reaches the reward once in
``2**n`` episodes, so rewarding transitions and the transitions just before them are rare in the
replay; prioritized replay revisits them while their TD errors are large and propagates the reward
back along the chain in far fewer gradient steps.

Runs: DQN (double Q, Huber, one hidden layer of 64, gamma 0.9, hard target copy every 50 gradient
steps, one gradient step of batch 32 per env step, epsilon 1 -> 0.1 over the first half) with
``algo.per=false`` and ``algo.per=true`` (alpha 0.6, beta 0.4 -> 1), nothing else changed. Budget:
``--steps`` env steps per run (default 20,000), greedy evaluation every 1,000 env steps. Solved = the
greedy policy walks the whole chain (return 1). Reported per run: env steps until first solved, and
whether solved at the end; plus the median over seeds.

    .venv/bin/python bench/bench_per_vs_uniform.py [--n 10] [--seeds 0,1,2,3,4] [--steps 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

ENV_ID = "BlindCliffwalk-v0"


class BlindCliffwalk(gymnasium.Env):
    """A chain of ``n`` states; one action moves right, the other ends the episode (see the module doc).

    Args:
        n: chain length (>= 1).
        layout_seed: seed of the per-state right action (the same layout for every episode).
    """

    def __init__(self, n: int = 10, layout_seed: int = 0) -> None:
        self.n = n
        self.right = np.random.default_rng(layout_seed).integers(0, 2, n)
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (n,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)
        self._state = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.n, np.float32)
        obs[self._state] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._state = 0
        return self._obs(), {}

    def step(self, action: int):
        if int(action) != self.right[self._state]:
            return self._obs(), 0.0, True, False, {"is_success": False}
        if self._state == self.n - 1:
            return self._obs(), 1.0, True, False, {"is_success": True}
        self._state += 1
        return self._obs(), 0.0, False, False, {"is_success": False}


def register() -> None:
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(ENV_ID, entry_point=BlindCliffwalk)


def run(n: int, per: bool, seed: int, steps: int, out: str) -> dict:
    """Train one run (stdout to ``<run>/train.log``); return its summary."""
    from marl.config import load_config
    from marl.trainer import train

    register()
    run_dir = Path(out) / f"n{n}-{'per' if per else 'uniform'}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, [
        "algo.name=dqn", f"env.id={ENV_ID}", f"env.kwargs={{n: {n}}}", "env.num_envs=1", "norm.obs=false",
        "norm.reward=false", f"seed={seed}", f"total_env_steps={steps}", "algo.lr=0.001", "algo.gamma=0.9",
        "algo.buffer_size=100000", "algo.learning_starts=500", "algo.batch_size=32", "algo.train_freq=1",
        "algo.gradient_steps=1", "algo.tau=1.0", "algo.target_update_interval=50", "algo.exploration_fraction=0.5",
        "algo.epsilon_start=1.0", "algo.epsilon_final=0.1", f"algo.per={str(per).lower()}", "model.hidden=[64]",
        "model.activation=relu", "eval.interval=1000", "eval.episodes=1", "eval.num_envs=1", f"run_dir={run_dir}",
        "log.tensorboard=false", "log.progress=false", "log.interval=1000", "checkpoint.interval=0",
    ])
    with open(run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log):
        return train(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10, help="chain length")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/bench/per_vs_uniform")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(per, s) for per in (False, True) for s in seeds]
    start = time.time()
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run, args.n, per, s, args.steps, args.out) for per, s in jobs]
        summaries = [f.result() for f in futures]
    print(f"Blind Cliffwalk n={args.n}, DQN, {args.steps:,} env steps per run; greedy eval every 1,000 env steps")
    print(f"{'replay':>8}  {'seed':>4}  {'solved at':>9}  {'solved at end':>13}  {'wall s':>7}")
    firsts: dict[str, list[float]] = {"uniform": [], "per": []}
    for (per, seed), s in zip(jobs, summaries):
        name = "per" if per else "uniform"
        first = next((h["env_steps"] for h in s["eval_history"] if h["mean_return"] >= 1.0), None)
        firsts[name].append(first if first is not None else np.inf)
        print(f"{name:>8}  {seed:>4}  {first if first else '-':>9}  {str(s['final_eval']['mean_return'] >= 1.0):>13}  "
              f"{s['wall_time_s']:>7.0f}")
    for name, values in firsts.items():
        solved = sum(np.isfinite(values))
        print(f"{name:>8}: solved {solved}/{len(values)} runs; median env steps to solve "
              f"{np.median(values):,.0f}" if solved > len(values) / 2 else f"{name:>8}: solved {solved}/{len(values)} runs")
    print(f"total wall time {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
