"""appo on runtime=ray (marl.on_policy.ray_workers) on a real two-node Ray cluster on this machine.

The cluster of tests/test_ray.py (the ``cluster`` fixture of tests/conftest.py: a head node and a second node,
one CPU each, started once per session; actors at half a CPU). This module's faulty env is written into the
folder that is on the path of the cluster's processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

if os.environ.get("CI"):
    import ray  # noqa: F401 - CI installs every extra: a missing one fails here, never skips
else:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e .[ray])")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from marl import checkpoint as ckpt  # noqa: E402
from marl.config import ConfigError, load_config  # noqa: E402
from marl.env.chunks import EnvWorkerError  # noqa: E402
from marl.env.make import vector_env  # noqa: E402
from marl.on_policy.async_trainer import AsyncPPOTrainer, vtrace_batches  # noqa: E402
from marl.on_policy.policy import ActorCriticPolicy  # noqa: E402
from marl.on_policy.ray_workers import RayWorkerPool  # noqa: E402
from marl.on_policy.workers import RolloutWorker, to_numpy  # noqa: E402
from marl.seeding import seeds_for  # noqa: E402
from tests.processes import running, wait_gone  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "simple_spread_appo.yaml")
SMALL = ("env.num_envs=4", "algo.num_steps=20", "algo.num_minibatches=2", "algo.update_epochs=1",
         "eval.interval=0", "eval.episodes=1", "eval.num_envs=1", "log.progress=false", "torch_threads=1",
         "update_threads=1")
ON_CLUSTER = ("runtime=ray", "ray.num_workers=2", "ray.cpus_per_worker=0.5", "ray.start_timeout_s=60")

FAULTY = '''
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class Faulty(ParallelEnv):
    """One agent; raises at its 30th step."""

    metadata = {"name": "faulty_v0"}
    possible_agents = ["agent_0"]

    def observation_space(self, agent):
        return spaces.Box(-1, 1, (1,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {"agent_0": np.zeros(1, np.float32)}, {"agent_0": {}}

    def step(self, actions):
        self.t += 1
        if self.t == 30:
            raise ValueError("the faulty env broke")
        return ({"agent_0": np.zeros(1, np.float32)}, {"agent_0": 0.0}, {"agent_0": False}, {"agent_0": False},
                {"agent_0": {}})
'''


@pytest.fixture(scope="module")
def env_folder(ray_env_folder) -> Path:
    """The cluster's env folder (tests/conftest.py), holding ``ray_appo_faulty_env.py``."""
    (ray_env_folder / "ray_appo_faulty_env.py").write_text(textwrap.dedent(FAULTY))
    return ray_env_folder


def ray_args(cluster: Cluster) -> tuple[str, ...]:
    return (*ON_CLUSTER, f"ray.address={cluster.address}")


def actor_processes() -> set[int]:
    """Running RolloutActor processes below this process (the cluster's raylets are its children)."""
    parents: dict[int, int] = {}
    titles: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                titles[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])

    def below(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return {p for p, t in titles.items() if t.startswith("ray::RolloutActor") and below(p) and running(p)}


def scalars(run: Path, tag: str) -> list[float]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def test_appo_on_ray_is_accepted_and_bad_splits_are_refused():
    cfg = load_config(CONFIG, ["runtime=ray", "ray.num_workers=4", "env.num_workers=3"])  # env.num_workers unused
    assert cfg.runtime == "ray" and cfg.algo.name == "appo"
    for overrides, match in [
        (["ray.num_workers=3"], r"ray.num_workers: env.num_envs=16 does not split evenly over 3 workers"),
        (["ray.num_workers=8", "algo.num_steps=3"], r"algo.num_minibatches: a worker's rollout has .* = 6 rows"),
        (["model.recurrent=gru"], r"model.recurrent: appo's workers carry no hidden states"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(CONFIG, ["runtime=ray", *overrides])


def test_one_actor_without_lag_gives_the_local_worker_rollout_and_vtrace_batch(cluster, one_torch_thread):
    """One actor: it takes the learner's weights before each rollout, so every step acts with the newest
    version (lag 0), and its rollouts are those of a RolloutWorker in this process with the same env seeds,
    sampling seed and weights, bit for bit; so are the V-trace batches."""
    cfg = load_config(CONFIG, [*SMALL, *ray_args(cluster), "ray.num_workers=1", "env.num_envs=2"])
    env = vector_env(cfg, 1, backend="sync")
    spec = env.spec
    env.close()
    torch.manual_seed(0)
    learner = ActorCriticPolicy(spec, cfg)

    def seeds(w: int, generation: int) -> list[int]:
        return seeds_for(cfg.seed, 2)

    pool = RayWorkerPool(cfg, 1, seeds, timeout=60)
    torch_seed = int(np.random.SeedSequence([cfg.seed, 0, 0]).generate_state(1)[0])
    local = RolloutWorker(cfg, 0, range(2), seeds(0, 0), torch_seed)
    try:
        pool.latest = (to_numpy(learner.state_dict()), 0)
        pool.start()
        for version in range(2):
            msg = pool.next_rollout()
            local.set_weights(to_numpy(learner.state_dict()), version)
            want = local.collect()
            assert msg.step_versions.tolist() == [version] * 20 and msg.env_steps == 40
            for g, fields in want.groups.items():
                assert fields.keys() == msg.groups[g].keys()
                for k, v in fields.items():
                    assert np.array_equal(v, msg.groups[g][k]), k
            got, stats = vtrace_batches(learner, msg, gamma=0.95, lam=0.95, rho_bar=1.0, c_bar=1.0)
            ref, _ = vtrace_batches(learner, want, gamma=0.95, lam=0.95, rho_bar=1.0, c_bar=1.0)
            assert stats["vtrace_rho_mean"] == pytest.approx(1.0, abs=1e-6)  # learner == behaviour policy
            for g in ref:
                for a, b in zip(got[g], ref[g], strict=True):
                    assert (a is None and b is None) or torch.equal(a, b)
            with torch.no_grad():  # the learner moves on: the next rollout acts with version 1
                for p in learner.net.parameters():
                    p.add_(0.01)
            pool.broadcast(to_numpy(learner.state_dict()), version + 1)
        pids = pool.pids()
    finally:
        pool.close()
        local.close()
    assert wait_gone(pids) == []


def test_run_logs_lag_survives_a_killed_actor_checkpoints_resumes_and_leaves_no_actor(cluster, tmp_path,
                                                                                         one_torch_thread):
    run = tmp_path / "run"
    common = [*SMALL, *ray_args(cluster), f"run_dir={run}", "log.interval=1", "checkpoint.interval=240",
              "checkpoint.keep_last=2"]
    trainer = AsyncPPOTrainer(load_config(CONFIG, [*common, "total_env_steps=480"]))
    try:
        trainer.advance()
        trainer.advance()
        pids = trainer.pool.pids()
        assert len(set(ray.get([a.node_id.remote() for a in trainer.pool.actors]))) == 2  # one per node
        os.kill(pids[1], signal.SIGKILL)
        with pytest.warns(RuntimeWarning, match=r"appo ray worker 1 \(env copies 2..3\) was lost .*restart 1 of "
                                                r"ray.max_restarts=3"):
            while trainer.restarts() == 0:  # the lost rollout is discarded: it adds no env steps
                trainer.advance()
        seen = actor_processes()
        assert len(seen) == 2 and pids[0] in seen and pids[1] not in seen  # the rebuilt actor replaced worker 1
        manual = trainer.iteration  # rollouts taken by advance() above: their rows are not logged
        manual_steps = trainer.env_steps  # how many rollouts came before the death was seen depends on the load
        summary = trainer.train()
    finally:
        trainer.close()
    assert summary["env_steps"] == 480 and trainer.restarts() == 1
    assert wait_gone(pids) == []
    assert wait_gone(seen) == [] and actor_processes() == set()  # every actor killed at the end, rebuilt one too
    lags = scalars(run, "async/policy_lag_mean")  # one per iteration train() drove
    assert len(lags) == summary["iterations"] - manual and min(lags) >= 0
    assert max(scalars(run, "async/policy_lag_max")) >= 1  # two actors: one collects while the other's rollout trains
    expected = {"latest.pt", "step_480.pt", *(["step_240.pt"] if manual_steps < 240 else [])}
    assert {p.name for p in (run / "checkpoints").iterdir()} >= expected
    state = ckpt.load(run / "checkpoints" / "latest.pt")
    assert state["async"]["worker_restarts"] == 1
    assert state["async"]["version"] == summary["iterations"] - state["async"]["dropped_rollouts"]
    resumed = AsyncPPOTrainer(load_config(CONFIG, [*common, "total_env_steps=640", f"resume={run}"]))
    assert resumed.version == state["async"]["version"] and resumed.env_steps == 480
    summary = resumed.train()
    assert summary["env_steps"] == 640
    assert ckpt.load(run / "checkpoints" / "latest.pt")["async"]["version"] > state["async"]["version"]


def test_env_error_names_worker_and_copy(cluster, env_folder, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.syspath_prepend(str(env_folder))  # the learner builds a one-copy env for the spec
    cfg = load_config(CONFIG, [*SMALL, *ray_args(cluster), f"run_dir={tmp_path / 'run'}", "log.tensorboard=false",
                               "env.id=ray_appo_faulty_env:Faulty", "env.kwargs={}", "norm.obs=false",
                               "total_env_steps=100000"])
    trainer = AsyncPPOTrainer(cfg)
    with pytest.raises(EnvWorkerError, match=r"the faulty env broke \(in appo ray worker [01] \(env copies .*\) on "
                                             r"node \w+, env copy [0-3]\)") as info:
        trainer.train()
    assert "ray_appo_faulty_env.py" in info.value.worker_traceback and "raise ValueError" in info.value.worker_traceback
    worker = int(re.search(r"appo ray worker (\d)", str(info.value)).group(1))
    assert info.value.env_index == 2 * worker  # every copy breaks at step 30: the worker's first copy, run-wide index
    assert trainer.pool.actors == [None, None]  # closed: every actor killed


def test_max_restarts_bounds_the_rebuilds(cluster, tmp_path, one_torch_thread):
    cfg = load_config(CONFIG, [*SMALL, *ray_args(cluster), f"run_dir={tmp_path / 'run'}", "log.tensorboard=false",
                               "ray.max_restarts=0", "total_env_steps=100000"])
    trainer = AsyncPPOTrainer(cfg)
    try:
        trainer.advance()
        pids = trainer.pool.pids()
        os.kill(pids[0], signal.SIGKILL)
        with pytest.raises(EnvWorkerError, match=r"appo ray worker 0 \(env copies 0..1\) died 1 times "
                                                 r"\(ray.max_restarts=0\)"):
            for _ in range(10):
                trainer.advance()
    finally:
        trainer.close()
    assert wait_gone(pids) == []


def test_sigterm_saves_and_leaves_no_process(tmp_path):
    """``marl train`` on a local Ray instance started for the run: SIGTERM writes the checkpoint, stops every
    actor and the instance (ray.init's own SIGTERM handler must not pre-empt the run's)."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "marl", "train", CONFIG, *SMALL, "runtime=ray", "ray.num_workers=2",
                             "ray.cpus_per_worker=0.5", "total_env_steps=10000000", "log.tensorboard=false",
                             "log.progress=true", f"run_dir={run}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: set[int] = set()
    deadline = time.monotonic() + 90
    while not (run / "config.yaml").exists() or not any("RolloutActor" in title(p) for p in seen):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        seen |= descendants(proc.pid)
        time.sleep(0.2)
    lines: list[str] = []  # then the first rollouts (a progress line per iteration)
    while not any(" it " in x for x in lines) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    assert any(" it " in x for x in lines), "".join(lines)
    seen |= descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    out = "".join(lines) + out
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert f"Resume with: marl train resume={run}" in out
    assert ckpt.load(run / "checkpoints" / "latest.pt")["counters"]["env_steps"] > 0
    assert wait_gone(seen) == [], [title(p) for p in seen if running(p)]


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def test_an_actor_that_dies_before_it_is_built_is_refused_in_one_line(cluster, one_torch_thread, monkeypatch):
    """An actor that dies before its build call runs (killed at spawn here) stops the start with one line naming
    the worker, not Ray's exception."""
    cfg = load_config(CONFIG, [*SMALL, *ray_args(cluster), "ray.num_workers=1", "env.num_envs=2"])
    spawn = RayWorkerPool._spawn

    def spawn_killed(self, w):
        ref = spawn(self, w)
        ray.kill(self.actors[w], no_restart=True)  # dead before its build call runs
        return ref

    monkeypatch.setattr(RayWorkerPool, "_spawn", spawn_killed)
    pool = RayWorkerPool(cfg, 1, lambda w, g: seeds_for(cfg.seed, 2), timeout=60)
    with pytest.raises(EnvWorkerError, match=r"^appo ray worker 0 \(env copies 0..1\) died before it was built: "):
        pool.start()
