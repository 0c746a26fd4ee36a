"""End-to-end PPO throughput: mpe2 simple_spread through PettingZoo vs the batched simulations.

Every arm trains ``configs/simple_spread_ppo.yaml`` under one set of update hyperparameters
(``--configs``, every arm the same) and differs only in how the env copies are stepped:

* ``mpe2``: the shipped setting, 16 copies of mpe2's parallel env in 2 worker processes
  (``env.backend=subprocess``, ``algo.num_steps=100``), overlapped with inference;
* ``batched``: ``env.backend=batched``, ``--copies`` copies (default 1,024) in one numpy simulation
  (``envs.batched_mpe``, faithful to mpe2), ``algo.num_steps=25`` (one episode per copy per rollout);
* ``vmas``: VMAS's own simple_spread (``env.id=vmas:simple_spread``, 3 agents, 25 steps, discrete
  actions; torch tensors end to end), ``--copies`` copies, ``algo.num_steps=25``.

Update hyperparameters (:data:`CONFIGS`):

* ``shipped``: the shipped config's PPO, 10 epochs x 4 minibatches, lr 7e-4, local critic (one
  network for actor and critic, :class:`marl.nets.twin.TwinMLP`);
* ``mappo``: EPyMARL's MAPPO for MPE (``src/config/algs/mappo.yaml``: 4 epochs over the whole batch,
  i.e. 1 minibatch, lr 5e-4) with the central critic (``model.critic=central``); EPyMARL's GRU,
  n-step returns and target critic are not reproduced, so the update costs what the feed-forward
  version of those settings costs.

Evaluation and checkpoints are off; env steps/s is measured by the run itself (``summary.json``'s
``sps``: env steps over training wall time, the final evaluation excluded); each arm's env steps per
CPU second of the main process are printed too (on a loaded machine wall time stretches, the mpe2
arm's most: each of its steps waits on its worker processes. A step cannot take less wall time than
its main process's CPU time, so mpe2's figure roughly bounds its idle speed from above, and the batched arms'
ratio to it is close to a lower bound of the idle ratio; the workers' CPU is not counted). The arms alternate
``--repeats`` times in one process (the machine is shared, so the ratio within a run is what counts)::

    python bench/bench_batched_training.py                        # shipped and mappo, 3 arms, 1 repeat
    python bench/bench_batched_training.py --configs mappo --arms mpe2 batched --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMON = ["eval.interval=0", "checkpoint.interval=0", "log.tensorboard=false", "log.progress=false",
          "eval.episodes=8", "eval.num_envs=8"]

CONFIGS = {
    "shipped": [],
    "mappo": ["algo.update_epochs=4", "algo.num_minibatches=1", "algo.lr=0.0005", "model.critic=central"],
}
"""Update hyperparameters shared by every arm: name -> overrides of ``configs/simple_spread_ppo.yaml``."""


def arms(copies: int, mpe2_steps: int, batched_steps: int) -> dict[str, list[str]]:
    """Env settings of each arm: name -> overrides."""
    return {
        "mpe2": [f"total_env_steps={mpe2_steps}"],
        "batched": [f"total_env_steps={batched_steps}", "env.backend=batched", f"env.num_envs={copies}",
                    "algo.num_steps=25"],
        "vmas": [f"total_env_steps={batched_steps}", "env.backend=batched", "env.id=vmas:simple_spread",
                 "env.kwargs={n_agents: 3, max_steps: 25, continuous_actions: false}", f"env.num_envs={copies}",
                 "algo.num_steps=25"],
    }


def run(overrides: list[str]) -> tuple[dict, float]:
    """Train one arm; its summary and the CPU seconds this (main) process spent in it."""
    from marl.api import train
    from marl.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs/simple_spread_ppo.yaml", [*COMMON, *overrides, f"run_dir={tmp}/run"])
        cpu = time.process_time()
        summary = train(cfg)
        return summary, time.process_time() - cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--copies", type=int, default=1024, help="env copies of the batched arms")
    p.add_argument("--mpe2-steps", type=int, default=60_000, help="env steps of the mpe2 arm")
    p.add_argument("--batched-steps", type=int, default=409_600, help="env steps of each batched arm")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--arms", nargs="+", default=["mpe2", "batched", "vmas"], choices=["mpe2", "batched", "vmas"])
    args = p.parse_args()
    settings = {k: v for k, v in arms(args.copies, args.mpe2_steps, args.batched_steps).items() if k in args.arms}
    sps: dict[tuple[str, str], list[float]] = {(c, a): [] for c in args.configs for a in settings}
    per_cpu: dict[tuple[str, str], list[float]] = {(c, a): [] for c in args.configs for a in settings}
    loads = [os.getloadavg()[0]]
    for r in range(args.repeats):
        for c in args.configs:
            for name, overrides in settings.items():
                summary, cpu = run([*CONFIGS[c], *overrides])
                sps[(c, name)].append(summary["sps"])
                per_cpu[(c, name)].append(summary["env_steps"] / cpu)
                loads.append(os.getloadavg()[0])
                print(f"repeat {r}  {c:8s} {name:8s} {summary['env_steps']:>9,} env steps  {summary['sps']:>10,.0f} "
                      f"env steps/s  {per_cpu[(c, name)][-1]:>8,.0f} per CPU s of the main process  "
                      f"eval {summary['final_eval']['ep_return']:.1f}  load {loads[-1]:.1f}", flush=True)
    print(f"\nload average (1 min) during the run: {min(loads):.1f}-{max(loads):.1f}; {args.copies} batched copies")
    print("| config | " + " | ".join(f"{a} env steps/s" for a in settings) +
          "".join(f" | {a} / mpe2" for a in settings if a != "mpe2" and "mpe2" in settings) + " | >= 10x |")
    n_ratios = len(settings) - 1 if "mpe2" in settings else 0
    print("| --- " * (len(settings) + n_ratios + 2) + "|")
    for c in args.configs:
        means = {a: float(np.mean(sps[(c, a)])) for a in settings}
        ratios = {a: np.array(sps[(c, a)]) / np.array(sps[(c, "mpe2")]) for a in settings
                  if a != "mpe2" and "mpe2" in settings}
        cells = [f"{means[a]:,.0f}" for a in settings]
        cells += [", ".join(f"{x:.1f}x" for x in ratios[a]) for a in ratios]
        met = ", ".join(f"{a}: {'yes' if ratios[a].mean() >= 10 else 'no'}" for a in ratios)
        print(f"| {c} | " + " | ".join(cells) + f" | {met or 'n/a'} |")
    if "mpe2" in settings:  # less sensitive to the load than wall time (the mpe2 arm's workers not counted)
        print("\nenv steps per CPU second of the main process (a loaded machine stretches wall time, above all the "
              "mpe2 arm's, whose steps wait on its workers):")
        for c in args.configs:
            base = float(np.mean(per_cpu[(c, "mpe2")]))
            print(f"  {c}: " + ", ".join(f"{a} {np.mean(per_cpu[(c, a)]):,.0f}"
                                          + (f" ({np.mean(per_cpu[(c, a)]) / base:.1f}x)" if a != "mpe2" else "")
                                          for a in settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
