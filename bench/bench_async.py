"""Asynchronous PPO (appo, V-trace) against synchronous PPO on simple_spread: same env steps, several seeds.

Both use the shipped configs (``configs/simple_spread_ppo.yaml``: 16 copies on 2 subprocess workers,
overlapped, 100-step rollouts; ``configs/simple_spread_appo.yaml``: the same 16 copies on 2 appo workers,
200-step rollouts of 8 copies) with the same updates: 1,600 rows in 4 minibatches of 400, 10 epochs.
Per seed the two run one after the other; intermediate evaluations and checkpoints are off, the final
evaluation has ``--episodes`` episodes. Printed per seed and on
average: the final eval return and ``summary.json``'s env steps/s, then the ratios appo / PPO. The load
average before and after is printed too: on a shared machine it moves the throughput more than anything::

    python bench/bench_async.py                                  # 5 seeds x 400k env steps
    python bench/bench_async.py --seeds 0 1 2 --steps 100000     # what fits on a busy 2-core machine
    python bench/bench_async.py --seeds 0 algo.max_lag=4         # extra overrides (both runs)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"ppo": "configs/simple_spread_ppo.yaml", "appo": "configs/simple_spread_appo.yaml"}


def train(algo: str, seed: int, steps: int, episodes: int, run_dir: Path, overrides: list[str]) -> dict:
    """One run; its summary.json."""
    cmd = [sys.executable, "-m", "marl", "train", CONFIGS[algo], f"run_dir={run_dir}", f"seed={seed}",
           f"total_env_steps={steps}", "eval.interval=0", f"eval.episodes={episodes}", "checkpoint.interval=0",
           "log.tensorboard=false", "log.progress=false", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=400_000, help="env steps per run")
    p.add_argument("--episodes", type=int, default=50, help="episodes of the final evaluation")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for both runs")
    a = p.parse_args()
    print(f"load before: {uptime()}", flush=True)
    rows: dict[str, list[tuple[float, float]]] = {"ppo": [], "appo": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            for algo in ("ppo", "appo"):
                s = train(algo, seed, a.steps, a.episodes, Path(tmp) / f"{algo}{seed}", a.overrides)
                rows[algo].append((s["final_eval"]["ep_return"], s["sps"]))
            (rp, sp), (ra, sa) = rows["ppo"][-1], rows["appo"][-1]
            print(f"seed {seed}: ppo eval {rp:7.2f} at {sp:5.0f} env steps/s | appo eval {ra:7.2f} at {sa:5.0f} "
                  f"env steps/s", flush=True)
    print(f"load after:  {uptime()}")
    ret = {k: statistics.mean(r for r, _ in v) for k, v in rows.items()}
    sps = {k: statistics.mean(s for _, s in v) for k, v in rows.items()}
    print(f"mean over {len(a.seeds)} seeds at {a.steps:,} env steps: ppo eval {ret['ppo']:.2f}, {sps['ppo']:.0f} "
          f"env steps/s | appo eval {ret['appo']:.2f}, {sps['appo']:.0f} env steps/s")
    # Returns are negative on simple_spread: appo / ppo > 1 means appo's return is lower (worse).
    print(f"ratios appo / ppo: eval return {ret['appo'] / ret['ppo']:.3f} (difference {ret['appo'] - ret['ppo']:+.2f}),"
          f" env steps/s {sps['appo'] / sps['ppo']:.2f}")


if __name__ == "__main__":
    main()
