"""Env steps/s of PPO on simple_spread (or any config: ``--config``): 2 torchrun ranks against 1 process.

Both train ``env.num_envs`` copies in total (the 2-rank run: half on each rank), sync backend,
one torch thread per process, evaluation and periodic checkpoints off; the throughput is
``summary.json``'s ``sps`` (env steps of all ranks over the training wall time, which ends with
one short final evaluation), so process start-up and the rendezvous are not counted. The load
average (``uptime``) before and after is printed with the numbers: on a shared machine it moves
the result more than anything else::

    python bench/bench_distributed.py                   # 2 ranks vs 1, 8 copies, 8000 env steps each
    python bench/bench_distributed.py --steps 16000 --num-envs 16 --repeats 2
    python bench/bench_distributed.py norm.obs=false norm.reward=false   # extra overrides for both runs
    python bench/bench_distributed.py --config configs/spread_dqn.yaml algo.learning_starts=1000   # DQN
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(ranks: int, steps: int, num_envs: int, run_dir: Path, overrides: list[str],
        config: str = "configs/simple_spread_ppo.yaml") -> float:
    """Train once with ``ranks`` processes; return env steps/s from summary.json."""
    ppo = ["algo.num_steps=100"] if "ppo" in Path(config).stem else []
    args = ["train", config, f"run_dir={run_dir}", f"total_env_steps={steps}",
            f"env.num_envs={num_envs}", "env.backend=sync", *ppo, "torch_threads=1",
            "eval.interval=0", "eval.episodes=1", "eval.num_envs=1", "checkpoint.interval=0",
            "log.tensorboard=false", "log.progress=false", *overrides]
    if ranks == 1:
        cmd = [sys.executable, "-m", "marl", *args]
    else:
        cmd = [str(TORCHRUN), f"--nproc-per-node={ranks}", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
               "-m", "marl", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return float(json.loads((run_dir / "summary.json").read_text())["sps"])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8000, help="env steps per run (all ranks)")
    p.add_argument("--num-envs", type=int, default=8, help="env copies in total (split over the ranks)")
    p.add_argument("--ranks", type=int, default=2, help="ranks of the distributed run")
    p.add_argument("--repeats", type=int, default=1, help="alternating 1-process / N-rank pairs; the best of each")
    p.add_argument("--config", default="configs/simple_spread_ppo.yaml", help="the run config of both runs")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for both runs")
    a = p.parse_args()
    print(f"load before: {uptime()}")
    one, many = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats):
            one.append(run(1, a.steps, a.num_envs, Path(tmp) / f"one{i}", a.overrides, a.config))
            many.append(run(a.ranks, a.steps, a.num_envs, Path(tmp) / f"many{i}", a.overrides, a.config))
            print(f"pair {i}: 1 process {one[-1]:.0f} env steps/s, {a.ranks} ranks {many[-1]:.0f} env steps/s")
    print(f"load after:  {uptime()}")
    print(f"best: 1 process {max(one):.0f}, {a.ranks} ranks {max(many):.0f} env steps/s; "
          f"ratio {a.ranks} ranks / 1 = {max(many) / max(one):.2f}")


if __name__ == "__main__":
    main()
