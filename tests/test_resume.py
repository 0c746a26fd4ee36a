"""Exact resume: N steps, interrupted, resumed in a new process for M more == one run of N+M steps."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from marl import checkpoint as ckpt
from marl.config import load_config
from marl.on_policy.trainer import OnPolicyTrainer
from marl.run import TrainingInterrupted

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "total_env_steps=300", "env.num_envs=2", "algo.num_steps=25", "algo.num_minibatches=2", "algo.update_epochs=2",
    "eval.interval=100", "eval.episodes=2", "eval.num_envs=2", "log.progress=false", "checkpoint.interval=0",
]
CASES = {
    # env copies are mid-episode at the interruption (max_cycles 40, 50 steps per copy before it)
    "spread": ["configs/simple_spread_ppo.yaml", "env.kwargs={N: 3, max_cycles: 40}"],
    "pendulum": ["configs/pendulum_ppo.yaml", "algo.num_minibatches=2"],
    # the batched simulation of the same scenario (its whole state in the checkpoint), central critic on its state
    "spread_batched": ["configs/simple_spread_ppo.yaml", "env.kwargs={N: 3, max_cycles: 40}", "env.backend=batched",
                       "model.critic=central"],
    # a recurrent policy: the copies' hidden states (mid-episode at the interruption) are part of the checkpoint
    "spread_gru": ["configs/simple_spread_ppo.yaml", "env.kwargs={N: 3, max_cycles: 40}", "model.recurrent=gru",
                   "model.rnn_hidden=16", "algo.bptt_len=25"],
}


def interrupt_after(trainer: OnPolicyTrainer, iterations: int) -> None:
    """Send SIGINT to ourselves after ``iterations`` collections (the user's Ctrl-C)."""
    real = trainer.collector.collect
    count = [0]

    def collect(stop=None):
        out = real(stop)
        count[0] += 1
        if count[0] == iterations:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    trainer.collector.collect = collect


def scalars(run: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path, case):
    config, *extra = CASES[case]
    full, split = tmp_path / "full", tmp_path / "split"
    run = lambda *args: subprocess.run([sys.executable, "-m", "marl", "train", *args], cwd=ROOT,  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    done = run(config, f"run_dir={full}", *COMMON, *extra)
    assert done.returncode == 0, done.stdout + done.stderr

    trainer = OnPolicyTrainer(load_config(config, [f"run_dir={split}", *COMMON, *extra]))
    interrupt_after(trainer, 2)
    try:
        with pytest.raises(TrainingInterrupted):
            trainer.train()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert ckpt.load(split / "checkpoints" / "latest.pt")["counters"]["env_steps"] == 100
    resumed = run(config, f"resume={split}", *COMMON, *extra)  # a new process
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    a = ckpt.load(full / "checkpoints" / "latest.pt")
    b = ckpt.load(split / "checkpoints" / "latest.pt")
    assert a["counters"]["env_steps"] == b["counters"]["env_steps"] == 300
    for k, v in a["policy"]["net"].items():
        torch.testing.assert_close(b["policy"]["net"][k], v, rtol=0, atol=0, msg=f"parameter {k}")
    for name, stats in a["policy"]["obs_norm"].items():
        for k, v in stats.items():
            torch.testing.assert_close(b["policy"]["obs_norm"][name][k], v, rtol=0, atol=0)
    opt_a, opt_b = a["learner"]["optimizers"]["all"]["state"], b["learner"]["optimizers"]["all"]["state"]
    for i in opt_a:
        for k in opt_a[i]:
            torch.testing.assert_close(opt_b[i][k], opt_a[i][k], rtol=0, atol=0)
    for tag in ("train/policy_loss", "train/value_loss", "train/entropy"):
        la, lb = scalars(full, tag), scalars(split, tag)
        assert la.keys() == lb.keys() and len(la) == 6
        assert all(la[s] == lb[s] for s in la), (tag, la, lb)


def test_resume_without_a_config_file_takes_the_runs_own_config(tmp_path):
    """``marl train resume=RUN_DIR`` (the README's form) continues a run made from any config, not the default."""
    from marl.cli import main

    run = tmp_path / "cartpole"
    tiny = ["total_env_steps=512", "env.num_envs=2", "algo.num_steps=128", "eval.interval=0", "log.progress=false",
            "log.tensorboard=false", "eval.episodes=1"]
    assert main(["train", "configs/cartpole_ppo.yaml", f"run_dir={run}", *tiny]) == 0
    assert main(["train", f"resume={run}", "total_env_steps=1024"]) == 0
    state = ckpt.load(run / "checkpoints" / "latest.pt")
    assert state["config"]["env"]["id"] == "CartPole-v1" and state["counters"]["env_steps"] == 1024
    # A config file given with resume= is still checked against the checkpoint's.
    assert main(["train", "configs/simple_spread_ppo.yaml", f"resume={run}", "total_env_steps=2048"]) == 2
