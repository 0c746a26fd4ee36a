"""VDN vs QMIX vs independent DQN on MPE simple_spread, and QMIX's update cost per sample vs VDN.

Learning: ``configs/spread_vdn.yaml``, ``configs/spread_qmix.yaml`` and ``configs/spread_dqn.yaml``
(same agents: one shared [128, 128] Q network with one-hot ids, gamma 0.95, epsilon 1 -> 0.05 over the
first 20% of training), each for ``--steps`` env steps per seed (default 40,000: a short budget, the
shipped configs train 500,000), then evaluated greedily on ``--episodes`` fresh episodes (default 50).
Overrides shared by the three: ``learning_starts`` 2,000 and the replay capacity 40,000 rows
(``--learning-starts``). The env runs on the batched backend (``--backend``, default ``batched``; the
simulation of every copy as arrays). Seeds run in separate processes (``--workers``, default 2), one torch
thread each. Prints, per algorithm, the final eval team return per seed and the mean, plus the random
policy's -81.8 (``bench_random_baselines.py``) for reference.

Update cost: one :class:`ValueDecompositionLearner` step (forward, backward, Adam, targets) of VDN and of
QMIX (embed 32, two-layer hypernetworks of width 64, state of 54 features) on the same random spread-shaped
team batches (3 agents, 18 features, 5 actions), ``--batch`` rows, ``--repeats`` rounds of 200 steps each,
interleaved; prints microseconds of CPU per sample (row) and the ratio QMIX / VDN (median of rounds).

    .venv/bin/python bench/bench_value_decomposition.py [--seeds 0,1] [--steps 40000] [--workers 2]
    .venv/bin/python bench/bench_value_decomposition.py --update-only [--batch 128] [--repeats 5]
    .venv/bin/python bench/bench_value_decomposition.py --learning-only --algos qmix --override algo.state=obs
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

CONFIGS = {"vdn": "configs/spread_vdn.yaml", "qmix": "configs/spread_qmix.yaml", "dqn": "configs/spread_dqn.yaml"}
RANDOM_RETURN = -81.84


def run_one(algo: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one (algorithm, seed) (stdout to ``<run>/train.log``); return its summary plus CPU seconds."""
    import torch

    from marl.api import train
    from marl.config import load_config

    torch.set_num_threads(1)
    run_dir = Path(args.out) / f"{algo}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(CONFIGS[algo], [
        f"seed={seed}", f"total_env_steps={args.steps}", "eval.interval=0", f"eval.episodes={args.episodes}",
        f"algo.learning_starts={args.learning_starts}", f"algo.buffer_size={args.steps}",
        f"env.backend={args.backend}", f"run_dir={run_dir}", "log.tensorboard=false", "log.progress=false",
        "checkpoint.interval=0", *args.override])
    cpu = time.process_time()
    with open(run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log):
        summary = train(cfg)
    summary["cpu_s"] = time.process_time() - cpu
    return summary


def learning(args: argparse.Namespace) -> None:
    seeds = [int(s) for s in args.seeds.split(",")]
    algos = args.algos.split(",")
    jobs = [(a, s) for a in algos for s in seeds]
    start = time.time()
    from marl.run import SupervisedPool  # the runs stop (checkpointed) if this process is killed

    with SupervisedPool(args.workers) as pool:
        summaries = list(pool.map(run_one, [a for a, _ in jobs], [s for _, s in jobs], [args] * len(jobs)))
    print(f"MPE simple_spread (N=3, 25 steps), {args.steps:,} env steps per seed, final greedy eval on "
          f"{args.episodes} episodes; random policy {RANDOM_RETURN}")
    print(f"{'algo':>5}  {'final eval per seed':>28}  {'mean':>7}  {'wall s':>7}  {'cpu s':>7}  {'grad steps':>10}")
    for algo in algos:
        rows = [s for (a, _), s in zip(jobs, summaries) if a == algo]
        returns = [r["final_eval"]["ep_return"] for r in rows]
        print(f"{algo:>5}  {' / '.join(f'{x:.1f}' for x in returns):>28}  {statistics.mean(returns):>7.1f}  "
              f"{statistics.mean(r['wall_time_s'] for r in rows):>7.0f}  "
              f"{statistics.mean(r['cpu_s'] for r in rows):>7.0f}  {rows[0]['grad_steps']:>10}")
    print(f"total wall time {time.time() - start:.0f}s")


def update_cost(args: argparse.Namespace) -> None:
    import gymnasium
    import numpy as np
    import torch

    from marl.algos.dqn import QPolicyNet
    from marl.algos.value_decomposition import GroupRows, TeamBatch, ValueDecompositionLearner
    from marl.config import ModelConfig, QMIXConfig, VDNConfig
    from marl.nets.mixers import QMixer, VDNMixer
    from marl.types import EnvSpec, GroupSpec

    torch.set_num_threads(1)
    torch.manual_seed(0)
    agents = ("agent_0", "agent_1", "agent_2")
    spec = EnvSpec(agents, (GroupSpec("agent", agents, gymnasium.spaces.Box(-np.inf, np.inf, (18,), np.float32),
                                      gymnasium.spaces.Discrete(5)),), state_shape=(54,))
    model = ModelConfig(hidden=[128, 128], activation="relu")
    learners = {"vdn": ValueDecompositionLearner(QPolicyNet(spec, model, False), VDNMixer(), VDNConfig()),
                "qmix": ValueDecompositionLearner(QPolicyNet(spec, model, False), QMixer(3, 54), QMIXConfig())}
    b = args.batch
    rows = GroupRows(torch.randn(b, 3, 18), torch.randint(0, 5, (b, 3)), torch.randn(b, 3), torch.randn(b, 3, 18),
                     torch.zeros(b, 3, dtype=torch.bool), torch.ones(b, 3, dtype=torch.bool),
                     torch.ones(b, 3, dtype=torch.bool))
    batch = TeamBatch({"agent": rows}, torch.full((b,), 0.95), torch.ones(b), torch.randn(b, 54), torch.randn(b, 54))
    steps = 200
    per_sample: dict[str, list[float]] = {k: [] for k in learners}
    for _ in range(args.repeats):
        for name, learner in learners.items():
            for _ in range(10):  # warm-up
                learner.update(batch)
            cpu = time.process_time()
            for _ in range(steps):
                learner.update(batch)
            per_sample[name].append((time.process_time() - cpu) / (steps * b) * 1e6)
    vdn, qmix = statistics.median(per_sample["vdn"]), statistics.median(per_sample["qmix"])
    print(f"update cost, batch {b} rows of 3 agents, [128, 128] agents, {args.repeats} rounds of {steps} steps "
          "(median, CPU time)")
    print(f"VDN  {vdn:.2f} us/sample  (rounds: {', '.join(f'{x:.2f}' for x in per_sample['vdn'])})")
    print(f"QMIX {qmix:.2f} us/sample  (rounds: {', '.join(f'{x:.2f}' for x in per_sample['qmix'])})")
    print(f"ratio QMIX / VDN: {qmix / vdn:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--algos", default="vdn,qmix,dqn")
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--learning-starts", type=int, default=2_000)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--backend", default="batched")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/bench/value_decomposition")
    parser.add_argument("--override", nargs="*", default=[], help="key=value overrides for every run")
    parser.add_argument("--update-only", action="store_true", help="only the update cost")
    parser.add_argument("--learning-only", action="store_true", help="skip the update cost")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.learning_only:
        update_cost(args)
    if not args.update_only:
        learning(args)


if __name__ == "__main__":
    main()
