"""Hindsight experience replay on bit flipping: DQN with HER vs without, same budget, one run each.

Target: with HER, success rate >= 0.9 at ``n_bits = 25``; without HER at the same budget the success
rate stays near 0 (the HER paper: plain DQN fails above 13 bits). ``--bits 25,30,...`` also runs
larger sizes to find the largest one solved.

Config: ``configs/bitflip_dqn_her.yaml`` (16 env copies, episodes end at success or after n_bits
steps, reward -1 until solved, 'future' relabelling with k = 4, one hidden layer of 256, one gradient
step of batch 128 per 10 env steps); ``algo.her=false`` for the baseline, nothing else changed.
Budget: ``--steps`` env steps per run (default 200,000; about 2 minutes per run on an idle core).
Success rate = share of 100 fresh, separately seeded evaluation episodes (greedy actions) that reach
the goal, measured at the end.
Runs go to separate processes (``--workers``, default 2), one torch thread each.

    .venv/bin/python bench/bench_her_bitflip.py [--bits 25] [--steps 200000] [--seed 0] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

CONFIG = "configs/bitflip_dqn_her.yaml"
TARGET = 0.9


def run(n_bits: int, her: bool, steps: int, seed: int, out: str) -> dict:
    """Train one run (stdout to ``<run>/train.log``); return its summary plus CPU seconds."""
    from marl.api import train
    from marl.config import load_config

    run_dir = Path(out) / f"bits{n_bits}-{'her' if her else 'plain'}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(CONFIG, [f"seed={seed}", f"total_env_steps={steps}", f"env.kwargs.n_bits={n_bits}",
                               f"algo.her={str(her).lower()}", f"eval.interval={steps // 4}", f"run_dir={run_dir}",
                               "log.tensorboard=false", "log.progress=false"])
    cpu = time.process_time()
    with open(run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log):
        summary = train(cfg)
    summary["cpu_s"] = time.process_time() - cpu
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", default="25", help="comma-separated n_bits values")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true", help="skip the runs without HER")
    parser.add_argument("--out", default="runs/bench/her_bitflip")
    args = parser.parse_args()
    jobs = [(int(n), her) for n in args.bits.split(",") for her in ((True,) if args.no_baseline else (True, False))]
    start = time.time()
    from marl.run import SupervisedPool  # the runs stop (checkpointed) if this process is killed

    with SupervisedPool(args.workers) as pool:
        futures = [pool.submit(run, n, her, args.steps, args.seed, args.out) for n, her in jobs]
        summaries = [f.result() for f in futures]
    print(f"Bit flipping, DQN, {args.steps:,} env steps per run (seed {args.seed}); success over 100 greedy episodes")
    print(f"{'n_bits':>6}  {'HER':>5}  {'success':>7}  {'mean len':>8}  {'grad steps':>10}  "
          f"{'wall s':>7}  {'cpu s':>7}  "
          "eval returns during training (every steps/4)")
    solved = []
    for (n, her), s in zip(jobs, summaries):
        final = s["final_eval"]
        curve = " ".join(f"{h['ep_return']:.1f}" for h in s["eval_history"])
        print(f"{n:>6}  {'yes' if her else 'no':>5}  {final['success_rate']:>7.2f}  {final['ep_length']:>8.1f}  "
              f"{s['grad_steps']:>10,}  {s['wall_time_s']:>7.0f}  {s['cpu_s']:>7.0f}  {curve}")
        if her and final["success_rate"] >= TARGET:
            solved.append(n)
    verdict = {n: next(s["final_eval"]["success_rate"] for (m, h), s in zip(jobs, summaries) if m == n and h)
               for n, _ in jobs}
    if 25 in verdict:
        print(f"target: HER success at n_bits=25 >= {TARGET}: {verdict[25]:.2f} -> "
              f"{'PASS' if verdict[25] >= TARGET else 'FAIL'}")
    print(f"largest n_bits solved with HER (success >= {TARGET}): {max(solved) if solved else 'none'}")
    print(f"total wall time {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
