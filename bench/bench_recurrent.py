"""Recurrent PPO: a GRU against a feed-forward policy on a memory task, and the cost of recurrence.

1. **Memory** (``configs/memory_gru_ppo.yaml``, ``envs.cue_recall`` with 2 agents, 4 cues, a
   4-step delay): trains the config with ``model.recurrent=gru`` and with ``model.recurrent=none``
   (same PPO settings, budget and seeds) and prints each run's final deterministic evaluation
   team return. A feed-forward policy cannot beat chance there: ``n_agents / n_cues = 0.5``
   expected team return whatever it learns (the bound is proved in the env's docstring); the
   maximum is 2.0. Claim, stated before measuring: on every seed the GRU's final return exceeds
   the feed-forward one by at least ``MARGIN = 0.8`` (``tests/on_policy/test_recurrent_learning.py``
   checks the same claim at a smaller budget).
2. **Throughput** (``configs/simple_spread_ppo.yaml``, sync backend, one torch thread):
   env steps per second of whole training iterations (collection + update) with a GRU
   (``bptt_len`` 25, one MPE episode per chunk) and without, and their ratio.

Run from the repository root::

    .venv/bin/python -m bench.bench_recurrent --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import marl

MEMORY_CONFIG = "configs/memory_gru_ppo.yaml"
SPREAD_CONFIG = "configs/simple_spread_ppo.yaml"
MARGIN = 0.8
"""Team return by which the GRU must beat the feed-forward policy on each seed (chance is 0.5, the top 2.0)."""

QUIET = ["log.tensorboard=false", "log.progress=false", "checkpoint.interval=0", "torch_threads=1"]


def train(config: str, overrides: list[str], out: Path) -> dict:
    """Train one run (into ``out``) and return its summary."""
    run = marl.train(config, overrides=[*QUIET, *overrides, f"run_dir={out}"])
    return run.summary


def memory_runs(seeds: list[int], budget: int, root: Path) -> dict[str, list[float]]:
    """Final eval team returns per arm (``gru``, ``none``) and seed on the memory task."""
    finals: dict[str, list[float]] = {"gru": [], "none": []}
    for seed in seeds:
        for arm in finals:
            extra = [f"total_env_steps={budget}"] if budget else []
            summary = train(MEMORY_CONFIG, [f"seed={seed}", f"model.recurrent={arm}", "eval.interval=0", *extra],
                            root / f"memory-{arm}-{seed}")
            finals[arm].append(float(summary["final_eval"]["ep_return"]))
            print(f"memory seed {seed} {arm:>4}: final eval team return {finals[arm][-1]:.3f} "
                  f"({summary['env_steps']} env steps, {summary['wall_time_s']:.0f} s)", flush=True)
    return finals


def throughput(budget: int, root: Path) -> dict[str, float]:
    """Training env steps/s on simple_spread, feed-forward and GRU (sync backend, 8 copies)."""
    sps = {}
    common = ["env.backend=sync", "env.num_envs=8", f"total_env_steps={budget}", "eval.interval=0",
              "eval.episodes=1", "eval.num_envs=1"]
    for arm, extra in (("none", []), ("gru", ["model.recurrent=gru", "algo.bptt_len=25"])):
        summary = train(SPREAD_CONFIG, [*common, *extra], root / f"spread-{arm}")
        sps[arm] = float(summary["sps"])
        print(f"simple_spread {arm:>4}: {sps[arm]:.0f} env steps/s", flush=True)
    return sps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--memory-steps", type=int, default=0, help="budget per memory run (0 = the config's)")
    parser.add_argument("--spread-steps", type=int, default=16_000, help="budget per throughput run")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--parts", nargs="+", choices=["memory", "throughput"], default=["memory", "throughput"])
    args = parser.parse_args()
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        if "memory" in args.parts:
            finals = memory_runs(args.seeds, args.memory_steps, root)
            gru, ff = np.array(finals["gru"]), np.array(finals["none"])
            print("\nmemory task (cue_recall, 2 agents, 4 cues, delay 4): final eval team return "
                  "(chance 0.5 = the feed-forward bound, max 2.0)")
            print(f"{'seed':>6} {'gru':>7} {'ff':>7} {'gru-ff':>7}")
            for seed, g, f in zip(args.seeds, gru, ff):
                print(f"{seed:>6} {g:7.3f} {f:7.3f} {g - f:+7.3f}")
            held = bool(np.all(gru - ff >= MARGIN))
            print(f"claim gru - ff >= {MARGIN} on every seed: {'holds' if held else 'FAILS'}")
            result.update(memory=finals, margin=MARGIN, claim_holds=held)
        if "throughput" in args.parts:
            sps = throughput(args.spread_steps, root)
            print(f"\nsimple_spread PPO env steps/s: feed-forward {sps['none']:.0f}, gru {sps['gru']:.0f}, "
                  f"ratio gru/ff {sps['gru'] / sps['none']:.2f}")
            result.update(sps=sps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
