"""Env steps/s of PPO on simple_spread: RLlib (a separate environment) beside marl's ``runtime=ray``.

The same task, machine, worker count and env copies on both sides: MPE simple_spread_v3 (mpe2, N=3,
25 steps, discrete actions, local_ratio 0.5), 2 rollout workers x 8 env copies each (marl's
``bench/bench_ray.py`` setting: ``configs/simple_spread_ppo.yaml``, 16 copies, ``ray.num_workers=2``,
``ray.cpus_per_worker=1``, one torch thread), a local Ray instance of 2 CPUs, the same rollout and update
sizes (100 steps per copy = 1,600 env steps per iteration, 10 epochs of 4 minibatches, lr 7e-4, gamma
0.95, lambda 0.95, entropy 0.01, [64, 64] tanh actor and critic), evaluation and checkpoints off.

* RLlib side: ``PPO`` (the new API stack) on ``ParallelPettingZooEnv(simple_spread_v3.parallel_env(...))``,
  one shared policy (every agent maps to module ``p0``), ``num_env_runners=2``,
  ``num_envs_per_env_runner=8``, ``rollout_fragment_length=100``, ``train_batch_size_per_learner=1600``,
  ``minibatch_size=1200`` (RLlib's minibatches count the module's agent steps: 4,800 per iteration, so 4
  minibatches as marl's 400 env steps x 3 agents), the learner in the driver (``num_learners=0``).
  Differences that remain: RLlib adds no one-hot agent id to the input and normalizes no observations.
* marl side: ``marl train configs/simple_spread_ppo.yaml runtime=ray ray.num_workers=2`` in a child process
  of the main environment, ``summary.json``'s env steps over the training time without the final
  evaluation (the same measure as ``bench/bench_ray.py``).

Counter: **env steps**, one per step of one env copy (all agents acting at once count once): RLlib's
``num_env_steps_sampled_lifetime`` and marl's ``env_steps`` (not agent steps, 3x more). Time: from the
first training iteration to the last (RLlib: the ``algo.train()`` calls after ``build_algo()``; marl:
``wall_time_s`` minus the final evaluation); Ray's start and the workers' construction are not counted on
either side. Each run is its own child process with its own Ray instance; the runs alternate
(marl, RLlib, marl, ...) so that a change of the machine's load hits both; the ratio printed is the median
of the per-pair ratios RLlib / marl.

Setup (RLlib pins its own Gymnasium, so it lives in a virtualenv of its own, outside the repository and
outside marl's dependencies)::

    python3.11 -m venv ../rllib-venv
    ../rllib-venv/bin/pip install torch==2.13.0          # the torch of marl's environment
    ../rllib-venv/bin/pip install "ray[rllib]==2.60.0" pettingzoo mpe2

Run (the orchestrating process needs only the standard library; each side runs under its own Python)::

    python bench/bench_rllib.py --rllib-python ../rllib-venv/bin/python --marl-python .venv/bin/python
    python bench/bench_rllib.py --rllib-python ... --marl-python ... --steps 32000 --repeats 5
    ../rllib-venv/bin/python bench/bench_rllib.py --side rllib --steps 16000   # one RLlib run, a JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKERS, COPIES_PER_WORKER, ROLLOUT = 2, 8, 100
PHASES = ("env_runner_sampling_timer", "learner_update_timer", "synch_weights")
"""RLlib's per-iteration timers (seconds, its own smoothing) printed beside the throughput."""
SPREAD = {"N": 3, "local_ratio": 0.5, "max_cycles": 25, "continuous_actions": False}


def rllib_run(steps: int, seed: int) -> dict:
    """Train RLlib PPO for ``steps`` env steps (whole iterations) in this process; its counters and time."""
    import ray
    import torch
    from mpe2 import simple_spread_v3
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.tune.registry import register_env

    torch.set_num_threads(1)  # marl's torch_threads=1: the learner runs in this process
    register_env("simple_spread", lambda _: ParallelPettingZooEnv(simple_spread_v3.parallel_env(**SPREAD)))
    batch = WORKERS * COPIES_PER_WORKER * ROLLOUT
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        config = (
            PPOConfig()
            .environment("simple_spread")
            .env_runners(num_env_runners=WORKERS, num_envs_per_env_runner=COPIES_PER_WORKER,
                         rollout_fragment_length=ROLLOUT, num_cpus_per_env_runner=1)
            .multi_agent(policies={"p0"}, policy_mapping_fn=lambda agent_id, *args, **kwargs: "p0")
            .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={"p0": RLModuleSpec(
                model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"})}))
            .training(train_batch_size_per_learner=batch, minibatch_size=batch * SPREAD["N"] // 4, num_epochs=10,
                      lr=7e-4, gamma=0.95, lambda_=0.95, entropy_coeff=0.01)
            .debugging(seed=seed)
        )
        algo = config.build_algo()
        try:
            env_steps, iterations, start = 0, 0, time.perf_counter()
            timers: dict[str, list[float]] = {k: [] for k in PHASES}
            while env_steps < steps:
                result = algo.train()
                env_steps = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
                iterations += 1
                for k in PHASES:
                    timers[k].append(float(result.get("timers", {}).get(k, float("nan"))))
            wall = time.perf_counter() - start
            runners = result["env_runners"]
            return {"env_steps": env_steps, "wall_s": wall, "sps": env_steps / wall, "iterations": iterations,
                    "agent_steps": int(sum(runners["num_agent_steps_sampled_lifetime"].values())),
                    "ep_return": float(runners.get("episode_return_mean", float("nan"))),
                    **{f"{k}_s": statistics.median(v) for k, v in timers.items()}}
        finally:
            algo.stop()
    finally:
        ray.shutdown()


def marl_run(python: str, steps: int, seed: int, run_dir: Path) -> dict:
    """Train marl's PPO with ``runtime=ray`` in a child process of ``python``; the same measure as bench_ray."""
    cmd = [python, "-m", "marl", "train", "configs/simple_spread_ppo.yaml", f"run_dir={run_dir}", f"seed={seed}",
           f"total_env_steps={steps}", "runtime=ray", f"ray.num_workers={WORKERS}", "ray.cpus_per_worker=1",
           f"env.num_envs={WORKERS * COPIES_PER_WORKER}", f"algo.num_steps={ROLLOUT}", "torch_threads=1",
           "eval.interval=0", "eval.episodes=1", "eval.num_envs=1", "checkpoint.interval=0", "checkpoint.keep_last=0",
           "log.tensorboard=false", "log.progress=false"]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path}  # this checkout's marl
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    s = json.loads((run_dir / "summary.json").read_text())
    wall = s["wall_time_s"] - sum(e.get("eval_time_s", 0.0) for e in s["eval_history"])
    return {"env_steps": s["env_steps"], "wall_s": wall, "sps": s["env_steps"] / wall, "iterations": s["iterations"],
            "agent_steps": s["agent_steps"]}


def rllib_child(python: str, steps: int, seed: int) -> dict:
    """:func:`rllib_run` in a child process of ``python`` (the RLlib environment)."""
    cmd = [python, str(Path(__file__).resolve()), "--side", "rllib", "--steps", str(steps), "--seed", str(seed)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=16000, help="env steps per run (whole iterations of 1,600)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rllib-python", default=sys.executable, help="Python of the RLlib environment")
    p.add_argument("--marl-python", default=sys.executable, help="Python of marl's environment")
    p.add_argument("--side", choices=["rllib"], help="run one RLlib measurement in this process; print a JSON line")
    a = p.parse_args()
    if a.side == "rllib":
        print(json.dumps(rllib_run(a.steps, a.seed)), flush=True)
        return
    print(f"before: {uptime()}", flush=True)
    sps: dict[str, list[float]] = {"marl": [], "rllib": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            m = marl_run(a.marl_python, a.steps, a.seed, Path(tmp) / f"marl-{r}")
            sps["marl"].append(m["sps"])
            print(f"repeat {r}: marl  {m['sps']:6.0f} env steps/s ({m['env_steps']} env steps, {m['wall_s']:.1f} s)",
                  flush=True)
            x = rllib_child(a.rllib_python, a.steps, a.seed)
            sps["rllib"].append(x["sps"])
            print(f"repeat {r}: rllib {x['sps']:6.0f} env steps/s ({x['env_steps']} env steps, {x['wall_s']:.1f} s, "
                  f"{x['agent_steps']} agent steps; per iteration, RLlib's timers: sampling "
                  f"{x['env_runner_sampling_timer_s']:.2f} s, learner update {x['learner_update_timer_s']:.2f} s, "
                  f"weights {x['synch_weights_s']:.3f} s)", flush=True)
    print(f"after:  {uptime()}")
    ratios = [b / m for m, b in zip(sps["marl"], sps["rllib"], strict=True)]
    print(f"\n| PPO, {WORKERS} Ray workers x {COPIES_PER_WORKER} copies | env steps/s, median of {a.repeats} | runs |")
    print("| --- | --- | --- |")
    for name, values in sps.items():
        print(f"| {name} | {statistics.median(values):.0f} | {' / '.join(f'{v:.0f}' for v in values)} |")
    print(f"\nRLlib / marl: median of per-repeat ratios {statistics.median(ratios):.2f} "
          f"({' / '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
