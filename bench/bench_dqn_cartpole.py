"""DQN on CartPole-v1: target = best deterministic eval >= 475 within 100k env steps, 3 of 3 seeds.

Config: ``configs/cartpole_dqn.yaml`` (rl-zoo3's tuned DQN: 0.5 gradient steps per env step, batch 64,
[256, 256] ReLU). Budget: ``--steps`` env steps per seed (default 100,000, the target's), evaluated
every ``--eval-interval`` env steps (default 5,000) on 10 fresh, separately seeded episodes with
greedy actions. Seeds run in separate processes (``--workers``, default 2 = the cores of the machine),
one torch thread each. Prints one row per seed (best eval, env steps when 475 was first reached,
final eval, wall and CPU seconds) and the verdict.

    .venv/bin/python bench/bench_dqn_cartpole.py [--seeds 0,1,2] [--steps 100000] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

CONFIG = "configs/cartpole_dqn.yaml"
TARGET = 475.0


def run_seed(seed: int, steps: int, eval_interval: int, out: str) -> dict:
    """Train one seed (stdout to ``<run>/train.log``); return its summary plus CPU seconds."""
    from marl.api import train
    from marl.config import load_config

    run_dir = Path(out) / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(CONFIG, [f"seed={seed}", f"total_env_steps={steps}", f"eval.interval={eval_interval}",
                               f"run_dir={run_dir}", "log.tensorboard=false", "log.progress=false"])
    cpu = time.process_time()
    with open(run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log):
        summary = train(cfg)
    summary["cpu_s"] = time.process_time() - cpu
    return summary


def first_reach(history: list[dict], threshold: float) -> int | None:
    """Env steps of the first evaluation at or above ``threshold`` (``None`` if never)."""
    return next((h["env_steps"] for h in history if h["ep_return"] >= threshold), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--eval-interval", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/bench/dqn_cartpole")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.time()
    from marl.run import SupervisedPool  # the runs stop (checkpointed) if this process is killed

    with SupervisedPool(args.workers) as pool:
        summaries = list(pool.map(run_seed, seeds, [args.steps] * len(seeds), [args.eval_interval] * len(seeds),
                                  [args.out] * len(seeds)))
    print(f"DQN CartPole-v1, {args.steps:,} env steps per seed, "
          f"eval every {args.eval_interval:,} (10 episodes, greedy)")
    print(f"{'seed':>4}  {'best eval':>9}  {'>=475 at':>9}  {'final eval':>10}  {'wall s':>7}  {'cpu s':>7}")
    passed = 0
    for seed, s in zip(seeds, summaries):
        reach = first_reach(s["eval_history"], TARGET)
        passed += s["best_eval"]["ep_return"] >= TARGET
        print(f"{seed:>4}  {s['best_eval']['ep_return']:>9.1f}  {reach if reach else '-':>9}  "
              f"{s['final_eval']['ep_return']:>10.1f}  {s['wall_time_s']:>7.0f}  {s['cpu_s']:>7.0f}")
    verdict = "PASS" if passed == len(seeds) else "FAIL"
    print(f"target: best eval >= {TARGET:.0f} within {args.steps:,} env steps: "
          f"{passed}/{len(seeds)} seeds -> {verdict}")
    print(f"total wall time {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
