"""SAC and TD3 on Pendulum-v1: target = eval mean return >= -200 within 20k env steps, 3 of 3 seeds each.

Configs: ``configs/pendulum_sac.yaml`` and ``configs/pendulum_td3.yaml`` (one gradient step per env step,
batch 256). Budget: ``--steps`` env steps per run (default 20,000, the target's), evaluated every
``--eval-interval`` env steps (default 2,000) on 10 fresh, separately seeded episodes with deterministic
actions. The verdict uses the evaluation at the end of the budget (stricter than the best one, which is
printed too). Runs (algorithm x seed) go to separate processes (``--workers``, default 2), one torch
thread each; on a shared 2-core machine expect about 5-10 minutes per run.

    .venv/bin/python bench/bench_sac_pendulum.py [--algos sac,td3] [--seeds 0,1,2] [--steps 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

CONFIGS = {"sac": "configs/pendulum_sac.yaml", "td3": "configs/pendulum_td3.yaml"}
TARGET = -200.0


def run(algo: str, seed: int, steps: int, eval_interval: int, out: str) -> dict:
    """Train one (algorithm, seed) (stdout to ``<run>/train.log``); return its summary plus CPU seconds."""
    from marl.api import train
    from marl.config import load_config

    run_dir = Path(out) / f"{algo}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(CONFIGS[algo], [f"seed={seed}", f"total_env_steps={steps}", f"eval.interval={eval_interval}",
                                      f"run_dir={run_dir}", "log.tensorboard=false", "log.progress=false"])
    cpu = time.process_time()
    with open(run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log):
        summary = train(cfg)
    summary["cpu_s"] = time.process_time() - cpu
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default="sac,td3")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--eval-interval", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/bench/pendulum")
    args = parser.parse_args()
    jobs = [(a, int(s)) for a in args.algos.split(",") for s in args.seeds.split(",")]
    start = time.time()
    from marl.run import SupervisedPool  # the runs stop (checkpointed) if this process is killed

    with SupervisedPool(args.workers) as pool:
        futures = [pool.submit(run, a, s, args.steps, args.eval_interval, args.out) for a, s in jobs]
        summaries = [f.result() for f in futures]
    print(f"Pendulum-v1, {args.steps:,} env steps per run, "
          f"eval every {args.eval_interval:,} (10 episodes, deterministic)")
    print(f"{'algo':>4}  {'seed':>4}  {'final eval':>10}  {'best eval':>9}  {'>=-200 at':>9}  "
          f"{'wall s':>7}  {'cpu s':>7}")
    passed: dict[str, int] = {}
    for (algo, seed), s in zip(jobs, summaries):
        final = s["final_eval"]["ep_return"]
        reach = next((h["env_steps"] for h in s["eval_history"] if h["ep_return"] >= TARGET), None)
        passed[algo] = passed.get(algo, 0) + (final >= TARGET)
        print(f"{algo:>4}  {seed:>4}  {final:>10.1f}  {s['best_eval']['ep_return']:>9.1f}  "
              f"{reach if reach else '-':>9}  "
              f"{s['wall_time_s']:>7.0f}  {s['cpu_s']:>7.0f}")
    for algo, n in passed.items():
        total = sum(a == algo for a, _ in jobs)
        print(f"target {algo}: eval at {args.steps:,} env steps >= {TARGET:.0f}: {n}/{total} seeds -> "
              f"{'PASS' if n == total else 'FAIL'}")
    print(f"total wall time {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
