"""Checkpoint writes survive SIGKILL; rotation keeps the last K and the best."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import torch

from marl import checkpoint as ckpt
from marl.cli import main

WRITER = textwrap.dedent("""
    import sys, torch
    from marl import checkpoint as ckpt
    path = sys.argv[1]
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        ckpt.save({"i": i, "w": torch.full((4_000_000,), float(i))}, path)   # 16 MB per write
""")


def test_sigkill_during_writes_leaves_a_loadable_previous_checkpoint(tmp_path):
    path = tmp_path / "latest.pt"
    ckpt.save({"i": 0, "w": torch.zeros(4_000_000)}, path)
    for delay in (0.15, 0.4, 0.9):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        state = ckpt.load(path)  # never a torn file
        assert torch.all(state["w"] == float(state["i"]))
    ckpt.clean_stale(tmp_path)  # what a killed writer leaves behind is removed at the next start
    assert not list(tmp_path.glob(".*.tmp"))


def test_rotation_keeps_the_last_k_numbered_checkpoints_and_the_best(tmp_path):
    run = tmp_path / "r"
    assert main(["train", f"run_dir={run}", "total_env_steps=1000", "env.num_envs=2", "algo.num_steps=25",
                 "algo.num_minibatches=2", "algo.update_epochs=1", "eval.interval=250", "eval.episodes=1",
                 "eval.num_envs=1", "checkpoint.interval=100", "checkpoint.keep_last=2", "log.progress=false",
                 "env.backend=sync"]) == 0
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.pt", "latest.pt", "step_1000.pt", "step_900.pt"], names
    summary = json.loads((run / "summary.json").read_text())
    best = ckpt.load(run / "checkpoints" / "best.pt")
    assert best["best_eval"]["ep_return"] == summary["best_eval"]["ep_return"]
