"""Env steps/s of simple_spread PPO with ``update_threads`` = 1 and = auto's value, quiet and with a busy neighbour.

``update_threads: -1`` (auto) gives the PPO update one torch thread per env worker process: the
workers wait during the update, so their cores are idle then -- unless another process is using
them. This runs ``configs/simple_spread_ppo.yaml`` (subprocess backend, ``--workers`` workers, eval
only at the end) for each thread count, interleaved (A B A B ...), in two conditions: ``quiet``, and
``busy`` with one Python busy loop running beside it (no CPU affinity set; started and killed here)::

    python bench/bench_update_threads.py                          # ~10-15 min on 2 cores
    python bench/bench_update_threads.py --env-steps 20000 --repeats 1   # a quick look

Each run is a fresh ``marl train`` process; env steps/s is its ``summary.json`` ``sps`` (env steps
over the training wall time, final 1-episode eval included). The 1-minute load average before each
run is printed too: on a shared machine the other tenants' load is part of the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
BUSY_LOOP = "while True: pass"


class Result(NamedTuple):
    condition: str
    threads: int
    repeat: int
    sps: float
    wall_s: float
    load_before: float


def train(run_dir: Path, env_steps: int, workers: int, threads: int, seed: int) -> dict:
    """One ``marl train`` run; its ``summary.json``."""
    cmd = [sys.executable, "-m", "marl", "train", "configs/simple_spread_ppo.yaml", f"run_dir={run_dir}",
           f"total_env_steps={env_steps}", "env.backend=subprocess", f"env.num_workers={workers}",
           f"update_threads={threads}", f"seed={seed}", "eval.interval=0", "eval.episodes=1", "eval.num_envs=1",
           "checkpoint.interval=0", "log.progress=false", "log.tensorboard=false"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"marl train failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return json.loads((run_dir / "summary.json").read_text())


def run_condition(condition: str, args: argparse.Namespace, root: Path) -> list[Result]:
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if condition == "busy" else None
    results = []
    try:
        if busy is not None:
            time.sleep(1.0)  # let it reach full speed
        for repeat in range(args.repeats):
            for threads in args.threads:  # interleaved: A B A B ..., so drift in the machine's load hits both
                load = os.getloadavg()[0]
                start = time.perf_counter()
                summary = train(root / f"{condition}-{threads}-{repeat}", args.env_steps, args.workers, threads,
                                args.seed)
                r = Result(condition, threads, repeat, summary["sps"], time.perf_counter() - start, load)
                results.append(r)
                print(f"{condition:<6} update_threads={threads}  repeat {repeat}  {r.sps:7.0f} env steps/s  "
                      f"(process {r.wall_s:5.1f} s, load before {load:.2f})", flush=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return results


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def report(results: list[Result], threads: list[int]) -> None:
    base = threads[0]
    print(f"\nenv steps/s per condition (mean of repeats); ratio = update_threads=t / update_threads={base}, "
          "per interleaved pair, then their geometric mean")
    for condition in dict.fromkeys(r.condition for r in results):
        rows = [r for r in results if r.condition == condition]
        by_threads = {t: [r.sps for r in rows if r.threads == t] for t in threads}
        means = "  ".join(f"t={t}: {sum(v) / len(v):6.0f}" for t, v in by_threads.items())
        print(f"{condition:<6} {means}")
        for t in threads[1:]:
            ratios = [b / a for a, b in zip(by_threads[base], by_threads[t], strict=True)]
            listed = ", ".join(f"{x:.2f}" for x in ratios)
            print(f"{'':<6} t={t} / t={base}: {listed}  -> {geometric_mean(ratios):.2f}x")


def main() -> None:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-steps", type=int, default=100_000, help="training budget of each run")
    p.add_argument("--workers", type=int, default=2, help="env worker processes")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="update_threads values, first = the baseline (default: 1 and auto's value)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each thread count")
    p.add_argument("--conditions", nargs="+", choices=("quiet", "busy"), default=["quiet", "busy"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads is None:
        auto = max(1, min(args.workers, cpus, 4))  # update_threads() with update_threads=-1 and workers > 0
        args.threads = [1, auto] if auto != 1 else [1, 2]
    print(f"{cpus} CPUs, affinity {len(os.sched_getaffinity(0))}; simple_spread PPO, {args.workers} workers, "
          f"{args.env_steps:,} env steps per run; update_threads {args.threads}; {args.repeats} repeats", flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench_update_threads-") as root:
        for condition in args.conditions:
            results += run_condition(condition, args, Path(root))
    report(results, args.threads)


if __name__ == "__main__":
    main()
