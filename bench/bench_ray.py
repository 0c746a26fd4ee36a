"""Env steps/s of PPO on simple_spread: Ray rollout workers (``runtime=ray``) against the subprocess backend.

Both runs use the shipped config (``configs/simple_spread_ppo.yaml``: 16 copies, T=100, overlap on)
with the same number of workers (2 Ray actors vs 2 worker processes), one torch thread, evaluation
and periodic checkpoints off. Throughput is env steps over the training wall time minus the final
evaluation (``summary.json``), so process start-up, the Ray instance (started once, before the
runs) and the actors' start are not counted. The runs alternate (subprocess, Ray, subprocess, ...)
so that a change of load hits both; the load average before and after is printed::

    python bench/bench_ray.py                          # 2 workers, 16 copies, 16000 env steps, 3 repeats
    python bench/bench_ray.py --repeats 5 --steps 32000
    python bench/bench_ray.py --workers 4 algo.update_epochs=4   # extra overrides for both runs
    python bench/bench_ray.py --rates                  # also the inputs of the scaling estimate (below)

``--rates`` measures what docs/distributed.md's scaling estimate for N machines needs: the env
steps/s one Ray worker delivers (8 copies, random actions, round trip to this process included)
and the learner's rate: env steps/s of policy inference (16 copies per call) plus the PPO update
(one rollout of T=100 x 16 copies, 10 epochs), with the envs taken out.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_sps(overrides: list[str], run_dir: Path) -> float:
    """Train in this process; env steps per second of training (the final evaluation excluded)."""
    from marl.api import train
    from marl.config import load_config

    cfg = load_config(ROOT / "configs/simple_spread_ppo.yaml", [
        f"run_dir={run_dir}", "torch_threads=1", "eval.interval=0", "eval.episodes=1", "eval.num_envs=1",
        "checkpoint.interval=0", "checkpoint.keep_last=0", "log.tensorboard=false", "log.progress=false",
        *overrides])
    summary = train(cfg)
    evals = sum(e.get("eval_time_s", 0.0) for e in summary["eval_history"])
    return summary["env_steps"] / (summary["wall_time_s"] - evals)


def worker_rate(copies: int = 8, steps: int = 400) -> float:
    """Env steps/s of one Ray worker stepping ``copies`` simple_spread copies (random actions)."""
    import numpy as np

    from marl.config import load_config
    from marl.env.make import env_factory
    from marl.env.ray_env import RayVectorEnv

    cfg = load_config(ROOT / "configs/simple_spread_ppo.yaml", [])
    env = RayVectorEnv(env_factory(cfg), copies, 1)
    try:
        env.reset(0)
        rng = np.random.default_rng(0)
        actions = [{"agent": rng.integers(0, 5, (copies, 3))} for _ in range(steps)]
        env.step(actions[0])
        start = time.perf_counter()
        for a in actions:
            env.step(a)
        return copies * steps / (time.perf_counter() - start)
    finally:
        env.close()


def learner_rate(run_dir: Path) -> tuple[float, float]:
    """(inference env steps/s, update env steps/s) of the shipped PPO config: 16 copies, T=100, one thread."""
    from marl.config import load_config
    from marl.registry import algorithm

    cfg = load_config(ROOT / "configs/simple_spread_ppo.yaml", [
        f"run_dir={run_dir}", "env.backend=sync", "torch_threads=1", "update_threads=1", "log.tensorboard=false",
        "log.progress=false"])
    trainer = algorithm("ppo").trainer_class()(cfg)
    try:
        trainer.advance()  # warm-up: statistics and allocations
        obs, state = trainer.loop.unit_inputs(0)
        start = time.perf_counter()
        for _ in range(200):
            trainer.policy.act(obs, state, update_stats=True)
        infer = cfg.env.num_envs * 200 / (time.perf_counter() - start)
        start = time.perf_counter()
        rollout = trainer.collector.collect()
        collect = time.perf_counter() - start
        start = time.perf_counter()
        trainer.advance()
        update = max(time.perf_counter() - start - collect, 1e-9)  # the iteration without its collection
        return infer, rollout.env_steps / update
    finally:
        trainer.close()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=16000, help="env steps per run")
    p.add_argument("--workers", type=int, default=2, help="Ray actors, and worker processes of the subprocess run")
    p.add_argument("--repeats", type=int, default=3, help="runs of each backend (alternating)")
    p.add_argument("--rates", action="store_true", help="also measure one worker's and the learner's rates")
    p.add_argument("overrides", nargs="*", help="key=value overrides for both runs")
    args = p.parse_args()
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=max(args.workers, 2), include_dashboard=False, logging_level="WARNING")
    print(f"local Ray instance started in {time.perf_counter() - start:.1f} s (not counted)")
    common = [f"total_env_steps={args.steps}", *args.overrides]
    variants = {
        "subprocess": ["env.backend=subprocess", f"env.num_workers={args.workers}"],
        "ray": ["runtime=ray", f"ray.num_workers={args.workers}", "ray.cpus_per_worker=1"],
    }
    sps: dict[str, list[float]] = {k: [] for k in variants}
    print(f"before: {uptime()}")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, extra in variants.items():
                value = train_sps([*common, *extra], Path(tmp) / f"{name}-{r}")
                sps[name].append(value)
                print(f"repeat {r}: {name:<10} {value:8.0f} env steps/s", flush=True)
        if args.rates:
            w = worker_rate()
            infer, update = learner_rate(Path(tmp) / "rates")
            learner = 1 / (1 / infer + 1 / update)
            print(f"\none Ray worker, 8 copies: {w:.0f} env steps/s; learner: inference {infer:.0f}, update "
                  f"{update:.0f}, together {learner:.0f} env steps/s (about {learner / w:.1f} workers' worth)")
    print(f"after:  {uptime()}")
    ray.shutdown()
    ratios = [a / b for a, b in zip(sps["ray"], sps["subprocess"], strict=True)]
    print(f"\n| backend ({args.workers} workers) | env steps/s, median of {args.repeats} | runs |")
    print("| --- | --- | --- |")
    for name, values in sps.items():
        print(f"| {name} | {statistics.median(values):.0f} | {' / '.join(f'{v:.0f}' for v in values)} |")
    print(f"\nRay / subprocess: median of per-repeat ratios {statistics.median(ratios):.2f} "
          f"({' / '.join(f'{x:.2f}' for x in ratios)}); target >= 0.8")


if __name__ == "__main__":
    main()
