"""A stop signal sent to the whole process group, as schedulers send it, loses nothing.

``timeout``, Slurm's ``scancel``, ``kill -TERM -PGID`` and systemd signal every process of the job,
the env workers and multiprocessing's forkserver included (Ctrl-C does the same with SIGINT). The
workers leave the signal to the main process, which finishes its step, writes ``latest.pt``,
closes them and exits with ``128 + signal``; a worker whose main process is gone exits by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from marl import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_ITERATION = 100  # env.num_envs x algo.num_steps below


class Training:
    """``marl train`` (tiny simple_spread PPO, 2 env worker processes) in a session of its own.

    Its own session makes it the leader of a new process group, as a batch job is: ``pgid == pid``.
    Output is read by a thread, so waiting for it has a deadline.
    """

    def __init__(self, run: Path, *overrides: str, config: str = "configs/simple_spread_ppo.yaml"):
        cmd = [sys.executable, "-m", "marl", "train", config, f"run_dir={run}", "env.backend=subprocess",
               "env.num_workers=2", "env.num_envs=4", "algo.num_steps=25", "algo.num_minibatches=2",
               "algo.update_epochs=1", "eval.interval=0", "eval.episodes=2", "log.progress=false",
               "log.tensorboard=false", *overrides]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.pgid = self.proc.pid
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_iterations(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(" it " in line for line in self.lines) < n:
            assert self.proc.poll() is None, f"training exited with {self.proc.returncode}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {n} iterations in {timeout} s:\n{self.output}"
            time.sleep(0.05)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.pgid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5.0)
        return code


def group_processes(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of process group ``pgid``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return found


def assert_group_gone(pgid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := group_processes(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, "left behind: " + "; ".join(" ".join(p.cmdline())[:120] for p in left)


@pytest.fixture
def killed_on_failure():
    """Runs started by a test; any group still alive at the end is killed (a failed test leaves nothing)."""
    runs: list[Training] = []
    yield runs
    for run in runs:
        for proc in group_processes(run.pgid):
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_group_writes_a_checkpoint_then_resumes(tmp_path, killed_on_failure, sig):
    run = tmp_path / "run"
    training = Training(run, "total_env_steps=10000000")
    killed_on_failure.append(training)
    training.wait_for_iterations(1)
    members = group_processes(training.pgid)
    assert len(members) >= 4, "main, 2 env workers and multiprocessing's helpers should share the group"

    os.killpg(training.pgid, sig)

    assert training.wait() == 128 + sig, training.output
    assert "Resume with: marl train" in training.output
    state = ckpt.load(run / "checkpoints" / "latest.pt")
    env_steps = state["counters"]["env_steps"]
    assert env_steps >= STEPS_PER_ITERATION and env_steps % STEPS_PER_ITERATION == 0  # whole iterations
    assert_group_gone(training.pgid)

    if sig == signal.SIGTERM:  # the checkpoint is a usable one: the run goes on from it
        budget = env_steps + 2 * STEPS_PER_ITERATION
        resumed = Training(run, f"resume={run}", f"total_env_steps={budget}", config=str(run / "config.yaml"))
        killed_on_failure.append(resumed)
        assert resumed.wait(60.0) == 0, resumed.output
        assert ckpt.load(run / "checkpoints" / "latest.pt")["counters"]["env_steps"] == budget
        assert_group_gone(resumed.pgid)


def test_workers_exit_when_the_main_process_is_killed(tmp_path, killed_on_failure):
    """SIGKILL to the main process alone: its workers see EOF on their pipes and exit (no orphans)."""
    training = Training(tmp_path / "run", "total_env_steps=10000000")
    killed_on_failure.append(training)
    training.wait_for_iterations(1)
    os.kill(training.proc.pid, signal.SIGKILL)
    assert training.wait() == -signal.SIGKILL
    assert_group_gone(training.pgid)


SURVIVE_SCRIPT = """
import functools, os, signal, time
import numpy as np, psutil
from marl.env.make import make_adapter
from marl.env.vector import SubprocVectorEnv

me = psutil.Process()
with SubprocVectorEnv(functools.partial(make_adapter, "mpe2.simple_spread_v3", {}), 4, num_workers=2) as env:
    env.reset(seed=0)
    others = me.children(recursive=True)  # env workers, the forkserver, the resource tracker
    workers = [p for p in others if p.ppid() != me.pid]
    assert len(workers) == 2, others
    for sig in (signal.SIGTERM, signal.SIGINT):
        for p in others:
            p.send_signal(sig)
    time.sleep(0.5)
    dead = [p for p in others if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE]
    assert not dead, dead
    for _ in range(30):
        env.step({"agent": np.zeros((4, 3), np.int64)})
_, alive = psutil.wait_procs(workers, timeout=5)  # closed: SIGTERM did not make them deaf to close
assert not alive, alive
print("survived")
"""


def test_workers_and_the_forkserver_survive_stop_signals_and_exit_cleanly():
    """In a fresh interpreter (this one may already run a forkserver started without the signals blocked).

    A dead forkserver would make every worker look dead (exit code 255) to ``Process.is_alive``.
    """
    out = subprocess.run([sys.executable, "-c", SURVIVE_SCRIPT], cwd=ROOT, capture_output=True, text=True, check=False,
                         timeout=60)
    assert out.returncode == 0 and "survived" in out.stdout, out.stdout + out.stderr


UNCLOSED_SCRIPT = """
import functools, tempfile
tempfile.TemporaryDirectory()  # its weakref.finalize hooks atexit before multiprocessing.util does
from marl.env.make import make_adapter
from marl.env.vector import SubprocVectorEnv
env = SubprocVectorEnv(functools.partial(make_adapter, "mpe2.simple_spread_v3", {}), 2, num_workers=2)
env.reset(seed=0)
print("exiting with the env open")
"""


def test_an_env_left_open_does_not_hang_interpreter_exit():
    """multiprocessing's exit handler terminate()s daemon workers (SIGTERM, which they now ignore) and joins
    them without a timeout; the pool must be closed before it runs, whatever order atexit hooks were added."""
    out = subprocess.run([sys.executable, "-c", UNCLOSED_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                         check=False, timeout=60)
    assert out.returncode == 0 and "exiting" in out.stdout, out.stdout + out.stderr
