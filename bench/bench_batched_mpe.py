"""Raw simulation speed of :mod:`envs.batched_mpe` against mpe2's parallel env stepped in a Python loop.

Both run in this process on one core (BLAS/OpenMP threads set to 1 before numpy loads), with
uniformly random actions drawn before the clock starts (a pool of 64 action sets, cycled), so
the times are the simulators' own: stepping, observations, rewards, and resets at the end of
each episode (mpe2: ``reset()`` when its agents are gone; batched: the auto-reset inside
``step``). Env steps/s counts one step of one env copy; the batched env makes ``E`` per call.
Each timing is the best of ``--repeats`` runs (the least disturbed by other load).

Run from the repository root::

    .venv/bin/python bench/bench_batched_mpe.py                        # simple_spread, E = 1, 64, 1024
    .venv/bin/python bench/bench_batched_mpe.py --scenario simple_tag --continuous
    .venv/bin/python bench/bench_batched_mpe.py --num-envs 1 16 256 4096 --seconds 2
"""

from __future__ import annotations

import os

# One core: set before numpy loads its thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import importlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from envs import batched_mpe

ACTION_POOL = 64


def random_group_actions(
    env: batched_mpe.BatchedMPE, rng: np.random.Generator
) -> list[dict[str, np.ndarray]]:
    """``ACTION_POOL`` action dicts for the batched env: ``{group: [E, A_g(, act_dim)]}``."""
    pool = []
    for _ in range(ACTION_POOL):
        actions = {}
        for g, names in env.groups.items():
            space = env.action_space(names[0])
            if env.continuous_actions:
                shape = (env.num_envs, len(names), space.shape[0])
                actions[g] = rng.random(shape, dtype=np.float32)
            else:
                actions[g] = rng.integers(0, space.n, (env.num_envs, len(names)))
        pool.append(actions)
    return pool


def time_steps(step: Callable[[int], None], min_seconds: float) -> tuple[int, float]:
    """Call ``step(k)`` for ``k = 0, 1, ...`` until ``min_seconds`` have passed; ``(calls, seconds)``."""
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(100):
            step(calls)
            calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls, elapsed


def bench_mpe2(scenario: str, continuous: bool, min_seconds: float, seed: int) -> float:
    """Env steps/s of mpe2's parallel env, one copy, stepped in a Python loop."""
    module = importlib.import_module(f"mpe2.{batched_mpe.scenario_class(scenario).mpe2_name}")
    env = module.parallel_env(continuous_actions=continuous)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    pool: list[dict[str, Any]] = []
    for _ in range(ACTION_POOL):
        actions: dict[str, Any] = {}
        for a in env.possible_agents:
            space = env.action_space(a)
            actions[a] = (
                rng.random(space.shape, dtype=np.float32) if continuous else int(rng.integers(space.n))
            )
        pool.append(actions)

    def step(k: int) -> None:
        if not env.agents:
            env.reset()
        env.step(pool[k % ACTION_POOL])

    calls, seconds = time_steps(step, min_seconds)
    return calls / seconds


def bench_batched(scenario: str, continuous: bool, num_envs: int, min_seconds: float, seed: int) -> float:
    """Env steps/s of the batched env with ``num_envs`` copies (``num_envs`` env steps per call)."""
    env = batched_mpe.make(scenario, num_envs, continuous_actions=continuous)
    env.reset(seed=seed)
    pool = random_group_actions(env, np.random.default_rng(seed))

    def step(k: int) -> None:
        env.step(pool[k % ACTION_POOL])

    calls, seconds = time_steps(step, min_seconds)
    return calls * num_envs / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="simple_spread", choices=sorted(batched_mpe.SCENARIOS))
    parser.add_argument("--continuous", action="store_true", help="continuous actions (default: discrete)")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 1024], help="batched copies E")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum seconds per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings per row; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    kind = "continuous" if args.continuous else "discrete"
    print(f"{args.scenario}, {kind} actions, one core, best of {args.repeats} x >= {args.seconds:g} s")
    mpe2_sps = max(
        bench_mpe2(args.scenario, args.continuous, args.seconds, args.seed) for _ in range(args.repeats)
    )
    print("| simulator | E | env steps/s | vs mpe2 |\n| --- | --- | --- | --- |")
    print(f"| mpe2 parallel env, Python loop | 1 | {mpe2_sps:,.0f} | 1.0x |")
    for num_envs in args.num_envs:
        sps = max(
            bench_batched(args.scenario, args.continuous, num_envs, args.seconds, args.seed)
            for _ in range(args.repeats)
        )
        print(f"| envs.batched_mpe | {num_envs} | {sps:,.0f} | {sps / mpe2_sps:,.1f}x |")


if __name__ == "__main__":
    main()
