"""Env steps/s of PPO on the batched simple_spread with the networks on the GPU vs on the CPU, same run config.

The batched MPE steps ``E`` copies as numpy arrays in the learner's process; with ``device=cuda`` the
observations go to the GPU for every act and every update. The throughput is ``summary.json``'s ``sps``
(training wall time, one short final evaluation included). Run on a machine with a CUDA device::

    python bench/bench_cuda.py                        # E = 256 and 2048, 200k env steps each
    python bench/bench_cuda.py --num-envs 4096 --steps 400000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(device: str, num_envs: int, steps: int, run_dir: Path) -> float:
    cmd = [sys.executable, "-m", "marl", "train", "configs/simple_spread_ppo.yaml", f"run_dir={run_dir}",
           f"device={device}", f"total_env_steps={steps}", f"env.num_envs={num_envs}", "env.backend=batched",
           "algo.num_steps=25", "eval.interval=0", "eval.episodes=10", "eval.num_envs=10", "checkpoint.interval=0",
           "eval.stochastic_check=false", "log.tensorboard=false", "log.progress=false"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return float(summary["sps"]), float(summary["final_eval"]["ep_return"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-envs", type=int, nargs="+", default=[256, 2048])
    p.add_argument("--steps", type=int, default=200_000)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for e in a.num_envs:
            (cpu, cpu_ret), (gpu, gpu_ret) = (run(d, e, a.steps, Path(tmp) / f"{d}{e}") for d in ("cpu", "cuda"))
            print(f"E={e}: cpu {cpu:,.0f} env steps/s (eval {cpu_ret:.1f}), cuda {gpu:,.0f} env steps/s "
                  f"(eval {gpu_ret:.1f}); cuda / cpu = {gpu / cpu:.2f}", flush=True)


if __name__ == "__main__":
    main()
