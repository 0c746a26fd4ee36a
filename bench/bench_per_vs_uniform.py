"""Prioritized vs uniform replay for DQN on the Blind Cliffwalk: same data, same budget, same seeds.

The task (Schaul et al. 2016, section 3.1, where prioritization is shown to help): a chain of ``n``
states (one-hot observations) and two actions. In every state one action (fixed, drawn once from
``layout_seed``) moves one step right; the other ends the episode with reward 0. Taking the right
action in the last state ends the episode with reward 1. True values: ``Q(s_k, right) =
gamma ** (n - 1 - k)``, ``Q(s_k, wrong) = 0``. A random policy reaches the reward once in ``2**n``
episodes, so the rewarding transition and those just before it are rare in the replay: uniform
replay seldom samples them, prioritized replay revisits them while their TD errors are large.

Setup: the behaviour is fixed, as in the paper (uniformly random actions, the same stream for both
runs of a seed, so both replays receive identical data), and DQN trains online from the first full
batch on: one env step, one gradient step of batch 32. Every 25 steps we measure how far the Q network
is from the true values: the mean squared error over all ``2n`` state-action pairs. DQN: double Q,
Huber, one hidden layer of 64, gamma 0.9, lr 1e-3, hard target copy every 50 gradient steps;
``algo.per`` false / true (alpha 0.6, beta 0.4 -> 1 over the run), nothing else changed. Reported per
run: the env step of the first reward, the env steps until the MSE first falls below ``--tol``
(default 1e-3), the same counted from the first reward (what the replay controls), and the final
MSE; then the medians over seeds. Budget ``--steps`` env steps per run
(default 10,000); about a minute per run on a shared 2-core machine.

    .venv/bin/python bench/bench_per_vs_uniform.py [--n 10] [--seeds 0,1,2,3,4] [--steps 10000] [--workers 2]
"""

from __future__ import annotations

import argparse
import time
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


def true_q(env: BlindCliffwalk, gamma: float) -> np.ndarray:
    """``[n, 2]`` true action values of the chain."""
    q = np.zeros((env.n, 2))
    for k in range(env.n):
        q[k, env.right[k]] = gamma ** (env.n - 1 - k)
    return q


def run(n: int, per: bool, seed: int, steps: int, tol: float, out: str) -> dict:
    """Random behaviour, one gradient step per env step; return when the Q error fell below ``tol``."""
    import torch

    from marl.config import load_config
    from marl.off_policy import OffPolicyTrainer

    register()
    gamma, batch = 0.9, 32
    run_dir = Path(out) / f"n{n}-{'per' if per else 'uniform'}-seed{seed}"
    cfg = load_config(None, [
        "algo.name=dqn", f"env.id={ENV_ID}", f"env.kwargs={{n: {n}}}", "env.num_envs=1", "norm.obs=false",
        "norm.reward=false", f"seed={seed}", f"total_env_steps={steps}", "algo.lr=0.001", f"algo.gamma={gamma}",
        f"algo.buffer_size={steps}", "algo.learning_starts=0", f"algo.batch_size={batch}", "algo.tau=1.0",
        "algo.target_update_interval=50", f"algo.per={str(per).lower()}", "model.hidden=[64]",
        "model.activation=relu", f"run_dir={run_dir}", "log.tensorboard=false", "log.progress=false",
    ])
    trainer = OffPolicyTrainer(cfg)
    target = true_q(BlindCliffwalk(n), gamma)
    inputs = torch.eye(n).view(n, 1, n)
    curve: list[tuple[int, float]] = []
    first_reward = None
    start = time.time()
    try:
        for step in range(1, steps + 1):
            episodes = trainer.collect(epsilon=1.0)
            if first_reward is None and any(e.returns["agent_0"] > 0 for e in episodes):
                first_reward = step
            if step < batch:
                continue
            trainer.train_step()
            if step % 25 == 0:
                with torch.no_grad():
                    q = trainer.actor.net["agent"](inputs).squeeze(1).numpy()
                curve.append((step, float(np.mean((q - target) ** 2))))
    finally:
        trainer.close()
    first = next((g for g, mse in curve if mse < tol), None)
    return {"first": first, "first_reward": first_reward, "final_mse": curve[-1][1], "wall_s": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10, help="chain length")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--tol", type=float, default=1e-3, help="Q mean squared error counted as learned")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/bench/per_vs_uniform")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(per, s) for s in seeds for per in (False, True)]
    start = time.time()
    from marl.run import SupervisedPool  # the runs stop (checkpointed) if this process is killed

    with SupervisedPool(args.workers) as pool:
        futures = [pool.submit(run, args.n, per, s, args.steps, args.tol, args.out) for per, s in jobs]
        results = [f.result() for f in futures]
    print(f"Blind Cliffwalk n={args.n}: DQN, {args.steps:,} env steps of random behaviour, one gradient step each")
    print(f"{'replay':>8}  {'seed':>4}  {'1st reward':>10}  {f'MSE<{args.tol:g} at':>14}  {'after 1st reward':>16}  "
          f"{'final MSE':>10}  {'wall s':>7}")
    firsts: dict[str, list[float]] = {"uniform": [], "per": []}
    lags: dict[str, list[float]] = {"uniform": [], "per": []}
    finals: dict[str, list[float]] = {"uniform": [], "per": []}
    for (per, seed), r in zip(jobs, results):
        name = "per" if per else "uniform"
        firsts[name].append(np.inf if r["first"] is None else r["first"])
        lag = np.inf if r["first"] is None or r["first_reward"] is None else r["first"] - r["first_reward"]
        lags[name].append(lag)
        finals[name].append(r["final_mse"])
        print(f"{name:>8}  {seed:>4}  {r['first_reward'] or '-':>10}  {r['first'] if r['first'] else '-':>14}  "
              f"{lag:>16,.0f}  {r['final_mse']:>10.2e}  {r['wall_s']:>7.0f}")
    for name in firsts:
        solved = int(np.sum(np.isfinite(firsts[name])))
        print(f"{name:>8}: learned in {solved}/{len(seeds)} runs; median env steps to MSE < {args.tol:g}: "
              f"{np.median(firsts[name]):,.0f} ({np.median(lags[name]):,.0f} after the first reward); "
              f"median final MSE {np.median(finals[name]):.2e}")
    print(f"total wall time {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
