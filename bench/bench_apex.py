"""Ape-X DQN (2 actor processes) vs DQN on CartPole-v1 (or ``--config``) at equal env steps: eval return, env steps/s.

Both start from ``configs/cartpole_dqn.yaml`` (same replay ratio: 128 gradient steps per 256 env steps,
same networks and learning rate). DQN runs as configured (one env copy, epsilon 1 -> 0.04 over 16%
of training); Ape-X runs ``algo.num_actors=2`` with ``env.num_envs=2`` (one copy per actor, actor
epsilons 0.4 and 0.4 ** 8 after ``learning_starts``, weights sent every ``--sync`` gradient steps).
Each seed of each variant runs to ``--steps`` env steps, evaluated every ``--eval-interval`` env
steps on 10 greedy episodes; one process at a time, one torch thread for the learner. Prints one row
per run (final and best eval return, env steps/s, wall seconds) and the means per variant.

    .venv/bin/python bench/bench_apex.py [--seeds 0,1] [--steps 30000] [--eval-interval 5000] [--sync 50]
    .venv/bin/python bench/bench_apex.py --config configs/spread_dqn.yaml --steps 100000 --eval-interval 25000

With ``--config`` both variants keep the config's ``env.num_envs`` (Ape-X splits them over its 2 actors) and
its evaluation episodes; everything else is the config's.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

CONFIG = "configs/cartpole_dqn.yaml"


def run(variant: str, seed: int, steps: int, eval_interval: int, sync: int, out: str, config: str = CONFIG) -> dict:
    """Train one variant for one seed (stdout to ``<run>/train.log``); return its summary."""
    from marl.api import train
    from marl.config import load_config

    run_dir = Path(out) / f"{variant}_seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    over = [f"seed={seed}", f"total_env_steps={steps}", f"eval.interval={eval_interval}", f"run_dir={run_dir}",
            "log.tensorboard=false", "log.progress=false", "torch_threads=1"]
    if variant == "apex":
        over += ["algo.num_actors=2", f"algo.weight_sync_interval={sync}"] + (["env.num_envs=2"] if config == CONFIG
                                                                              else [])
    cfg = load_config(config, over)
    with open(run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log):
        return train(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--eval-interval", type=int, default=5_000)
    parser.add_argument("--sync", type=int, default=50)
    parser.add_argument("--out", default="runs/bench/apex_cartpole")
    parser.add_argument("--config", default=CONFIG, help="the DQN config both variants start from")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, list[dict]] = {"dqn": [], "apex": []}
    print(f"{args.config}, {args.steps:,} env steps per run, eval every {args.eval_interval:,} (greedy)")
    print(f"{'variant':8} {'seed':>4} {'final':>8} {'best':>8} {'env steps/s':>12} {'wall s':>8}")
    for seed in seeds:
        for variant in rows:
            start = time.time()
            s = run(variant, seed, args.steps, args.eval_interval, args.sync, args.out, args.config)
            r = {"final": s["final_eval"]["ep_return"], "best": s["best_eval"]["ep_return"], "sps": s["sps"],
                 "wall": time.time() - start}
            rows[variant].append(r)
            print(f"{variant:8} {seed:>4} {r['final']:>8.1f} {r['best']:>8.1f} {r['sps']:>12.0f} {r['wall']:>8.0f}",
                  flush=True)
    for variant, rs in rows.items():
        n = len(rs)
        final, best, sps = (sum(r[k] for r in rs) / n for k in ("final", "best", "sps"))
        print(f"mean {variant:4}: final {final:.1f}, best {best:.1f}, {sps:.0f} env steps/s")


if __name__ == "__main__":
    main()
