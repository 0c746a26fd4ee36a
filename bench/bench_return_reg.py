"""CPU cost of the Monte-Carlo return regularizer of VDN/QMIX (``algo.return_reg``) per gradient step, or (with
``--softmax-beta``) of RES's softmax target (``algo.softmax_beta``).

Fills a replay by training ``--config`` (default ``configs/spread_qmix.yaml``) for ``--fill`` env steps, then times
``TeamTrainer.train_step`` (sample, learner update) with the regularizer off and on, in interleaved rounds of
``--steps`` gradient steps (CPU time of this process, one torch thread; medians over ``--rounds``), and
:func:`marl.off_policy.team.team_episode_returns` alone on one batch of the config's size::

    python bench/bench_return_reg.py
    python bench/bench_return_reg.py --config configs/lbf_8x8_2p_2f_coop_qmix.yaml algo.standardize_rewards=false
    python bench/bench_return_reg.py --softmax-beta 1.0          # the softmax target off and on instead
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from marl.config import load_config
from marl.off_policy.team import TeamTrainer, team_episode_returns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/spread_qmix.yaml")
    p.add_argument("--fill", type=int, default=6000, help="env steps trained before timing (replay rows)")
    p.add_argument("--steps", type=int, default=100, help="gradient steps per timed round")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--lam", type=float, default=0.2, help="the regularizer's weight when on")
    p.add_argument("--softmax-beta", type=float, default=0.0,
                   help="> 0: time algo.softmax_beta 0 against this value (the config's regularizer as it is)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config, [*args.overrides, f"total_env_steps={args.fill}",
                                    f"algo.learning_starts={args.fill - 1000}", "eval.interval=0",
                                    "log.tensorboard=false", "log.progress=false", "run_dir=/tmp/bench_return_reg"])
    trainer = TeamTrainer(cfg)
    trainer.train()
    key = "softmax_beta" if args.softmax_beta > 0 else "return_reg"
    times: dict[float, list[float]] = {0.0: [], args.softmax_beta if args.softmax_beta > 0 else args.lam: []}
    for _ in range(args.rounds):
        for value in times:
            setattr(trainer.cfg.algo, key, value)
            setattr(trainer.learner.cfg, key, value)
            start = time.process_time()
            for _ in range(args.steps):
                trainer.train_step()
            times[value].append((time.process_time() - start) / args.steps)
    off, on = (statistics.median(times[k]) for k in times)
    rows = len(next(iter(trainer.replay.values())))
    indices = np.random.default_rng(0).integers(0, rows, cfg.algo.batch_size)
    start = time.process_time()
    for _ in range(500):
        team_episode_returns(trainer.replay, indices, cfg.algo.return_horizon, cfg.algo.gamma)
    alone = (time.process_time() - start) / 500
    if key == "softmax_beta":
        print(f"{args.config}: gradient step {off * 1e3:.2f} ms with the max target, {on * 1e3:.2f} ms with the "
              f"softmax target, beta {args.softmax_beta} ({on / off:.2f}x)")
        return
    print(f"{args.config}: gradient step {off * 1e3:.2f} ms without the regularizer, {on * 1e3:.2f} ms with it "
          f"({on / off:.2f}x); the batch's Monte-Carlo returns alone {alone * 1e3:.3f} ms "
          f"(B={cfg.algo.batch_size}, look-ahead {cfg.algo.return_horizon})")


if __name__ == "__main__":
    main()
