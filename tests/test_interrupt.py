"""Nothing lost to Ctrl-C / SIGTERM, and no orphan worker processes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from marl import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]


def start_training(run: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "marl", "train", "configs/simple_spread_ppo.yaml", f"run_dir={run}",
           "total_env_steps=10000000", "env.num_envs=4", "algo.num_steps=25", "algo.num_minibatches=2",
           "algo.update_epochs=1", "eval.interval=0", "log.progress=false", "log.tensorboard=false", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_progress(proc: subprocess.Popen, timeout: float = 60.0) -> list[str]:
    """Read output until two iterations have been logged."""
    lines = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if sum(" it " in x for x in lines) >= 2:
            return lines
    raise AssertionError("training did not start:\n" + "".join(lines))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_a_checkpoint_and_exits_non_zero_with_a_resume_hint(tmp_path, sig, code):
    run = tmp_path / "run"
    proc = start_training(run, "env.backend=subprocess", "env.num_workers=2")
    wait_for_progress(proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the subprocess backend should have worker processes"
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, out
    assert "Resume with: marl train" in out and f"resume={run}" in out
    state = ckpt.load(run / "checkpoints" / "latest.pt")
    assert state["counters"]["env_steps"] > 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphan workers: {alive}"


def test_second_sigint_during_shutdown_does_not_corrupt_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = start_training(run)
    wait_for_progress(proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    # 130 when the repeat is absorbed by the trainer; -2 when it lands after Python started finalizing
    # (handlers reset by the interpreter) -- in both cases after the checkpoint was written.
    assert proc.returncode in (130, -signal.SIGINT)
    ckpt.load(run / "checkpoints" / "latest.pt")  # loads: not corrupt
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_sigint_arriving_inside_the_checkpoint_write_is_absorbed(tmp_path, monkeypatch):
    """Deterministic version: the second SIGINT is raised from inside the final save."""
    from marl.config import load_config
    from marl.on_policy.trainer import OnPolicyTrainer
    from marl.run import TrainingInterrupted

    trainer = OnPolicyTrainer(load_config("configs/simple_spread_ppo.yaml", [
        f"run_dir={tmp_path / 'r'}", "total_env_steps=100000", "env.num_envs=2", "algo.num_steps=25",
        "algo.num_minibatches=2", "algo.update_epochs=1", "eval.interval=0", "log.progress=false",
        "checkpoint.interval=0",
    ]))
    real_save = ckpt.save
    calls = []

    def save_with_signal(payload, path):
        calls.append(path)
        os.kill(os.getpid(), signal.SIGINT)  # lands while writing
        return real_save(payload, path)

    original_collect = trainer.collector.collect

    def collect_then_interrupt(stop=None):
        out = original_collect(stop)
        os.kill(os.getpid(), signal.SIGINT)  # the user's first Ctrl-C
        return out

    trainer.collector.collect = collect_then_interrupt
    monkeypatch.setattr(ckpt, "save", save_with_signal)
    try:
        with pytest.raises(TrainingInterrupted) as info:
            trainer.train()
    finally:  # an interrupted trainer leaves its absorbing handlers installed (the process is meant to exit)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert info.value.code == 130
    assert len(calls) == 1
    state = ckpt.load(tmp_path / "r" / "checkpoints" / "latest.pt")
    assert state["counters"]["env_steps"] == 50


def test_no_children_after_a_normal_run_or_an_exception(tmp_path):
    from marl.config import load_config
    from marl.on_policy.trainer import OnPolicyTrainer

    me = psutil.Process(os.getpid())

    def live_children() -> set[int]:
        return {p.pid for p in me.children(recursive=True) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}

    cfg = load_config("configs/simple_spread_ppo.yaml", [
        f"run_dir={tmp_path / 'ok'}", "total_env_steps=200", "env.num_envs=4", "algo.num_steps=25",
        "algo.num_minibatches=2", "algo.update_epochs=1", "eval.episodes=1", "eval.num_envs=1", "log.progress=false",
        "env.backend=subprocess", "env.num_workers=2",
    ])
    OnPolicyTrainer(cfg).train()
    time.sleep(0.5)
    # What may stay: multiprocessing's own helpers (the forkserver and the resource tracker), never env workers.
    baseline = live_children()
    assert len(baseline) <= 2, [psutil.Process(p).cmdline() for p in baseline]
    trainer = OnPolicyTrainer(load_config("configs/simple_spread_ppo.yaml", [
        f"run_dir={tmp_path / 'bad'}", "total_env_steps=200", "env.num_envs=4", "algo.num_steps=25",
        "algo.num_minibatches=2", "log.progress=false", "env.backend=subprocess", "env.num_workers=2",
    ]))

    def boom(stop=None):
        raise RuntimeError("learner exploded")

    trainer.collector.collect = boom
    with pytest.raises(RuntimeError, match="exploded"):
        trainer.train()
    time.sleep(0.5)
    assert live_children() <= baseline


def test_sigterm_during_the_final_evaluation_stops_within_seconds_with_the_checkpoint_written(tmp_path):
    """A long final evaluation (here 2,000 CartPole episodes) does not hold a stop request back: SIGTERM ends
    it within a step, exit 143, latest.pt already holds the trained networks, and resume finishes the run."""
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "marl", "train", "configs/cartpole_ppo.yaml", f"run_dir={run}",
            "total_env_steps=512", "env.num_envs=2", "algo.num_steps=128", "eval.interval=0", "eval.episodes=2000",
            "eval.num_envs=1", "log.progress=false", "log.tensorboard=false"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    latest = run / "checkpoints" / "latest.pt"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline:  # written right before the final evaluation
        time.sleep(0.2)
    assert latest.exists(), proc.communicate(timeout=30)[0]
    time.sleep(1.0)  # well inside the evaluation (2,000 episodes take minutes)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert time.time() - sent < 15, out
    assert "Resume with: marl train resume=" in out
    state = ckpt.load(latest)
    assert state["counters"]["env_steps"] == 512
    assert not (run / "summary.json").exists()


POOL_SCRIPT = """
import os, sys, time

from marl.run import StopSignals, SupervisedPool, TrainingInterrupted


def job(path, index):  # a training run's stop: the signal absorbed, the run ends, TrainingInterrupted raised
    with open(path, "a") as f:
        f.write(f"start {index} {os.getpid()}\\n")
    with StopSignals() as stop:
        deadline = time.monotonic() + 60
        while stop.signum is None and time.monotonic() < deadline:
            time.sleep(0.05)
    with open(path, "a") as f:
        f.write(f"end {index} {stop.signum}\\n")
    if stop.signum is not None:
        raise TrainingInterrupted(128 + stop.signum)


if __name__ == "__main__":
    with SupervisedPool(1, sys.argv[2]) as pool:
        for future in [pool.submit(job, sys.argv[1], i) for i in range(2)]:
            future.result()
"""


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_supervised_pool_worker_stops_when_its_owner_is_killed_alone(tmp_path, start):
    """SupervisedPool (the bench scripts' seed pools): SIGKILL to the owner alone reaches the busy worker as SIGTERM;
    its run stops as a training run does (signal absorbed, TrainingInterrupted) and the worker exits instead of
    starting the queued second job."""
    from tests.processes import wait_gone

    script, log = tmp_path / "pool.py", tmp_path / "jobs.txt"
    script.write_text(POOL_SCRIPT)
    owner = subprocess.Popen([sys.executable, str(script), str(log), start], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not log.is_file() or not log.read_text().endswith("\n"):
            assert owner.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        worker = int(log.read_text().split()[2])
        owner.kill()
        owner.wait(10)
        assert wait_gone([worker], 15.0) == []
        assert log.read_text().splitlines() == [f"start 0 {worker}", f"end 0 {int(signal.SIGTERM)}"]
    finally:
        if owner.poll() is None:
            owner.kill()
