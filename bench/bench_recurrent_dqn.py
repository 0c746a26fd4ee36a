"""Recurrent DQN (R2D2 shape): a GRU Q network against a feed-forward one on a memory task, and the cost.

**Memory** (``configs/memory_gru_dqn.yaml``, ``envs.cue_recall`` with 2 agents, 4 cues, a 4-step
delay; sequence replay of 5-step sequences = whole episodes): trains the config with
``model.recurrent=gru`` and with ``model.recurrent=none`` (same DQN settings, budget and seeds) and
prints each run's final deterministic evaluation team return and its training env steps per second.
A feed-forward Q network cannot beat chance there: ``n_agents / n_cues = 0.5`` expected team return
whatever it learns (the bound is proved in the env's docstring); the maximum is 2.0. Claim, stated
before measuring: on every seed the GRU's final return exceeds the feed-forward one by at least
``MARGIN = 0.8`` (``tests/test_recurrent_dqn.py`` checks the same claim, ``-m slow``). Throughput:
the ratio of the two arms' env steps per second of whole training (collection + one gradient step
per vector step of 8 copies), one torch thread.

Run from the repository root::

    .venv/bin/python -m bench.bench_recurrent_dqn --seeds 0 1 2
    .venv/bin/python -m bench.bench_recurrent_dqn --seeds 0 1 2 --algo qmix   # recurrent QMIX, same settings
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import marl

CONFIG = "configs/memory_gru_dqn.yaml"
MARGIN = 0.8
"""Team return by which the GRU must beat the feed-forward Q network on each seed (chance is 0.5, the top 2.0)."""

QUIET = ["log.tensorboard=false", "log.progress=false", "checkpoint.interval=0", "torch_threads=1"]


def memory_runs(seeds: list[int], budget: int, root: Path, algo: str = "dqn") -> dict[str, dict[str, list[float]]]:
    """Final eval team returns and env steps/s per arm (``gru``, ``none``) and seed (``algo``: dqn, vdn or qmix)."""
    out: dict[str, dict[str, list[float]]] = {arm: {"final": [], "sps": []} for arm in ("gru", "none")}
    for seed in seeds:
        for arm, res in out.items():
            extra = [f"total_env_steps={budget}"] if budget else []
            run = marl.train(CONFIG, overrides=[*QUIET, f"algo.name={algo}", f"seed={seed}", f"model.recurrent={arm}",
                                                "eval.interval=0",
                                                *extra, f"run_dir={root / f'{arm}-{seed}'}"])
            res["final"].append(float(run.summary["final_eval"]["ep_return"]))
            res["sps"].append(float(run.summary["sps"]))
            print(f"seed {seed} {arm:>4}: final eval team return {res['final'][-1]:.3f}, "
                  f"{res['sps'][-1]:.0f} env steps/s ({run.summary['env_steps']} env steps)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=0, help="budget per run (0 = the config's)")
    parser.add_argument("--algo", choices=["dqn", "vdn", "qmix"], default="dqn",
                        help="the config's DQN, or value decomposition on the same settings")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = memory_runs(args.seeds, args.steps, args.out or Path(tmp), args.algo)
    gru, ff = np.array(res["gru"]["final"]), np.array(res["none"]["final"])
    print(f"\n{args.algo}, memory task (cue_recall, 2 agents, 4 cues, delay 4): final eval team return "
          "(chance 0.5 = the feed-forward bound, max 2.0)")
    print(f"{'seed':>6} {'gru':>7} {'ff':>7} {'gru-ff':>7}")
    for seed, g, f in zip(args.seeds, gru, ff):
        print(f"{seed:>6} {g:7.3f} {f:7.3f} {g - f:+7.3f}")
    held = bool(np.all(gru - ff >= MARGIN))
    print(f"claim gru - ff >= {MARGIN} on every seed: {'holds' if held else 'FAILS'}")
    sps_gru, sps_ff = float(np.mean(res["gru"]["sps"])), float(np.mean(res["none"]["sps"]))
    print(f"env steps/s (mean over seeds): feed-forward {sps_ff:.0f}, gru {sps_gru:.0f}, ratio {sps_gru / sps_ff:.2f}")
    print(json.dumps({**res, "margin": MARGIN, "claim_holds": held}))


if __name__ == "__main__":
    main()
