"""runtime=ray (marl.env.ray_env, marl.ray_runtime) on a real two-node Ray cluster on this machine.

``ray.cluster_utils.Cluster`` starts a head node and a second node (a raylet each, one CPU each) once
per session (the ``cluster`` fixture of tests/conftest.py, shared with tests/test_ray_appo.py); the tests
join it with ``ray.address=<its address>``, so every worker is a real actor
process on a real node. Workers ask for half a CPU so two fit on one node after the other is removed.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

if os.environ.get("CI"):
    import ray  # noqa: F401 - CI installs every extra: a missing one fails here, never skips
else:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e .[ray])")

from ray.cluster_utils import Cluster  # noqa: E402

from marl import checkpoint as ckpt  # noqa: E402
from marl.api import train  # noqa: E402
from marl.config import ConfigError, describe, load_config  # noqa: E402
from marl.env.make import make_adapter  # noqa: E402
from marl.env.ray_env import EnvWorker, RayVectorEnv, WorkerLost, restart_seeds  # noqa: E402
from marl.env.vector import EnvWorkerError, SyncVectorEnv  # noqa: E402
from marl.ray_runtime import remote_class  # noqa: E402
from marl.registry import algorithm  # noqa: E402
from tests.processes import running, wait_gone  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPREAD = functools.partial(make_adapter, "mpe2.simple_spread_v3", {"max_cycles": 7})
QUIET = ("log.tensorboard=false", "log.progress=false")
PPO = (str(ROOT / "configs/simple_spread_ppo.yaml"), "total_env_steps=160", "env.num_envs=4", "algo.num_steps=20",
       "algo.num_minibatches=2", "algo.update_epochs=2", "eval.interval=0", "eval.episodes=1", "eval.num_envs=1",
       "checkpoint.interval=0", "checkpoint.keep_last=0", "torch_threads=1", "update_threads=1", *QUIET)
DQN = (str(ROOT / "configs/cartpole_dqn.yaml"), "total_env_steps=240", "env.num_envs=2", "algo.learning_starts=40",
       "algo.train_freq=8", "algo.gradient_steps=2", "algo.batch_size=16", "model.hidden=[16]", "eval.interval=0",
       "eval.episodes=1", "eval.num_envs=1", "checkpoint.interval=0", "checkpoint.keep_last=0", "torch_threads=1",
       *QUIET)
ON_CLUSTER = ("runtime=ray", "ray.num_workers=2", "ray.cpus_per_worker=0.5", "ray.start_timeout_s=60")


def ray_args(cluster: Cluster) -> tuple[str, ...]:
    return (*ON_CLUSTER, f"ray.address={cluster.address}")


def policy_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the final checkpoint's policy entry (networks and normalizers), by dotted name."""
    def flat(prefix: str, node) -> dict[str, torch.Tensor]:
        if isinstance(node, dict):
            return {k: v for key, sub in node.items() for k, v in flat(f"{prefix}.{key}", sub).items()}
        return {prefix: node} if isinstance(node, torch.Tensor) else {}

    return flat("policy", ckpt.load(run_dir / "checkpoints" / "latest.pt")["policy"])


# ------------------------------------------------------------------ config and connection errors
def test_keys_are_documented_and_bad_splits_are_refused():
    keys = {k for k, _, _ in describe()}
    assert {"runtime", "ray.address", "ray.num_workers", "ray.envs_per_worker", "ray.cpus_per_worker",
            "ray.max_restarts", "ray.connect_timeout_s", "ray.mode"} <= keys
    cfg = load_config(None, ["runtime=ray", "env.num_envs=8", "ray.num_workers=0", "ray.envs_per_worker=4"])
    assert cfg.env.num_envs == 8
    for overrides, match in [
        (["ray.num_workers=3"], r"ray.num_workers: env.num_envs=8 does not split evenly over 3 workers"),
        (["ray.num_workers=4", "ray.envs_per_worker=4"], r"4 x ray.envs_per_worker=4 != env.num_envs=8"),
        (["ray.mode=async"], r"ray.mode: only sync is available"),
        (["ray.cpus_per_worker=0"], r"ray.cpus_per_worker: must be > 0"),
        (["env.backend=batched"], r"env.backend: batched is one simulation"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(None, ["runtime=ray", *overrides])


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"^runtime: runtime=ray needs Ray: pip install 'marl\[ray\]'$"):
        load_config(None, ["runtime=ray"])
    load_config(None, ["runtime=local"])  # a local run does not need it


def test_unreachable_address_fails_within_the_timeout(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "marl", "train", "runtime=ray", f"ray.address=127.0.0.1:{port}",
         "ray.connect_timeout_s=2", f"run_dir={tmp_path / 'run'}", *QUIET],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("marl: error")]
    assert len(lines) == 1 and f"ray.address='127.0.0.1:{port}': cannot reach 127.0.0.1:{port}" in lines[0], proc.stderr
    assert time.monotonic() - start < 60  # interpreter + torch start included; the connect itself is immediate
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ the vector env
def test_steps_match_sync_and_errors_name_worker_and_copy(cluster):
    env = RayVectorEnv(SPREAD, 4, 2, cpus_per_worker=0.5)
    ref = SyncVectorEnv(SPREAD, 4)
    try:
        assert len(set(env.worker_nodes())) == 2  # spread over both nodes
        obs, _ = env.reset(seed=3)
        want, _ = ref.reset(seed=3)
        assert np.array_equal(obs["agent"].obs, want["agent"].obs)
        rng = np.random.default_rng(0)
        for _ in range(9):  # episodes of 7 steps: auto-resets and episode records included
            actions = {"agent": rng.integers(0, 5, (4, 3))}
            env.send(1, {"agent": actions["agent"][2:]})  # out of order: chunk 1 first
            env.send(0, {"agent": actions["agent"][:2]})
            got = [env.recv(0), env.recv(1)]
            exp = ref.step(actions)
            for k, sl in enumerate((slice(0, 2), slice(2, 4))):
                assert np.array_equal(got[k].obs["agent"].obs, exp.obs["agent"].obs[sl])
                assert np.array_equal(got[k].transition["agent"].reward, exp.transition["agent"].reward[sl])
                assert np.array_equal(got[k].transition["agent"].final_obs, exp.transition["agent"].final_obs[sl])
            assert [e.env_index for g in got for e in g.episodes] == [e.env_index for e in exp.episodes]
        got[0].obs["agent"].obs[...] = 0  # the caller owns what it gets
        snaps = env.snapshot()
        restored, _ = env.restore(snaps)
        assert np.array_equal(restored["agent"].obs, exp.obs["agent"].obs)
        bad = {"agent": np.zeros((4, 3), np.int64)}
        bad["agent"][3, 1] = 9  # outside Discrete(5): mpe2 raises in env copy 3
        with pytest.raises(EnvWorkerError, match=r"env copy 3 raised AssertionError: action is not in") as info:
            env.step(bad)
        assert info.value.env_index == 3
        assert "ray worker 1 (env copies 2..3) on node" in str(info.value)
        assert "Traceback" in info.value.worker_traceback
        pids = env.worker_pids()
    finally:
        env.close()
        ref.close()
    env.close()  # idempotent
    assert wait_gone(pids) == []


def test_killed_worker_is_rebuilt_and_its_step_is_lost(cluster):
    env = RayVectorEnv(SPREAD, 4, 2, cpus_per_worker=0.5, max_restarts=1)
    try:
        env.reset(seed=5)
        pids = env.worker_pids()
        actions = {"agent": np.ones((2, 3), np.int64)}
        env.send(0, actions)
        env.send(1, actions)
        os.kill(pids[1], signal.SIGKILL)
        first = env.recv(0)
        with pytest.warns(RuntimeWarning, match=r"ray worker 1 \(env copies 2..3\) was lost .*restart 1 of "
                                                r"ray.max_restarts=1"):
            with pytest.raises(WorkerLost) as info:
                env.recv(1)
        lost = info.value
        assert lost.workers == [1]
        # copies 0..1: where chunk 0's step left them; copies 2..3: fresh episodes from the restart seeds
        fresh, _ = SyncVectorEnv(SPREAD, 2).reset(restart_seeds(5, 1, 1, 2))
        assert np.array_equal(lost.obs["agent"].obs[:2], first.obs["agent"].obs)
        assert np.array_equal(lost.obs["agent"].obs[2:], fresh["agent"].obs)
        new_pids = env.worker_pids()
        assert new_pids[0] == pids[0] and new_pids[1] != pids[1]
        env.step({"agent": np.ones((4, 3), np.int64)})  # goes on
        os.kill(new_pids[1], signal.SIGKILL)
        with pytest.raises(EnvWorkerError, match=r"ray worker 1 \(env copies 2..3\) died 2 times "
                                                 r"\(ray.max_restarts=1\)"):
            env.step({"agent": np.ones((4, 3), np.int64)})
    finally:
        env.close()
    assert wait_gone([*pids, *new_pids]) == []


def test_one_remote_class_serves_a_driver_that_connects_again(cluster):
    """``remote_class`` wraps a class once per process; after the driver disconnects and connects again (a new
    Ray job), the same wrapper starts actors in the new job."""
    import ray

    first = remote_class(EnvWorker)
    job = ray.get_runtime_context().get_job_id()
    ray.shutdown()
    ray.init(address=cluster.address)
    assert ray.get_runtime_context().get_job_id() != job
    assert remote_class(EnvWorker) is first
    actor = first.options(num_cpus=0.5).remote(SPREAD, 0, 1)
    try:
        assert ray.get(actor.pid.remote(), timeout=60) not in (0, os.getpid())
    finally:
        ray.kill(actor)


def test_a_worker_the_cluster_cannot_place_is_an_error_not_a_hang(cluster):
    start = time.monotonic()
    with pytest.raises(EnvWorkerError, match=r"ray worker 0 \(env copies 0..1\), ray worker 1 \(env copies 2..3\) not "
                                             r"running after ray.start_timeout_s=2 s: the cluster has [0-9.]+ free "
                                             r"CPUs and each worker asks ray.cpus_per_worker=4"):
        RayVectorEnv(SPREAD, 4, 2, cpus_per_worker=4, start_timeout_s=2)
    assert time.monotonic() - start < 15


# ------------------------------------------------------------------ whole runs
def _with_config(base: tuple[str, ...], config: str) -> tuple[str, ...]:
    return (str(ROOT / "configs" / config), *base[1:])


# case -> (run settings, local-only overrides, Ray-only overrides)
IDENTICAL = {
    "ppo": (PPO, ["env.backend=sync"], ["env.overlap=false"]),
    "ppo_overlap": (PPO, ["env.backend=subprocess", "env.num_workers=2"], ["env.overlap=true"]),
    # two groups of unlike agents, independent networks, a central critic on the global state
    "ppo_groups_central": (_with_config(PPO, "simple_adversary_ppo.yaml"), ["env.backend=sync"],
                           ["env.overlap=false", "model.sharing=independent", "model.critic=central"]),
    # a turn-based (AEC) game with action masks
    "ppo_aec_masks": (_with_config(PPO, "tictactoe_ppo.yaml"), ["env.backend=sync"], ["env.overlap=false"]),
    "dqn": (DQN, ["env.backend=sync"], []),
}


@pytest.mark.parametrize("case", list(IDENTICAL))
def test_ray_run_is_bit_identical_to_local_run(cluster, tmp_path, case):
    """W=2 workers x 2 copies on the cluster == 4 copies on this machine (same seeds per copy, same order).

    Against the in-process backend (one chunk) the policy acts on all copies at once (env.overlap=false;
    off-policy collection always does). ``ppo_overlap``: with env.overlap the policy acts on one worker's
    copies while the other steps, exactly as on the subprocess backend with 2 workers."""
    base, local, remote = IDENTICAL[case]
    both = [o for o in remote if o.startswith("model.")]
    local = [*local, *both]
    train(load_config(base[0], [*base[1:], *local, f"run_dir={tmp_path / 'local'}"]))
    train(load_config(base[0], [*base[1:], *ray_args(cluster), *remote, f"run_dir={tmp_path / 'ray'}"]))
    local, remote = policy_tensors(tmp_path / "local"), policy_tensors(tmp_path / "ray")
    assert local.keys() == remote.keys() and len(local) >= 4
    for k in local:
        assert torch.equal(local[k], remote[k]), k


def test_ppo_discards_the_rollout_of_a_killed_worker(cluster, make_config, recwarn):
    cfg = make_config(*PPO, *ray_args(cluster), "total_env_steps=100000")
    trainer = algorithm("ppo").trainer_class()(cfg)
    try:
        T, E, W = cfg.algo.num_steps, cfg.env.num_envs, 2
        rms = trainer.policy.obs_norm["agent"].rms
        count = rms.count
        trainer.advance()
        rows_per_rollout = rms.count - count  # observation rows folded into the normalizer by one rollout
        pids = trainer.env.worker_pids()
        sends = []
        send = trainer.env.send

        def send_and_kill(chunk, actions):  # SIGKILL worker 1 in the middle of the next rollout (its 10th send)
            sends.append(chunk)
            if len(sends) == 10:
                os.kill(pids[1], signal.SIGKILL)
            send(chunk, actions)

        trainer.env.send = send_and_kill
        count = rms.count
        trainer.advance()
        assert len(sends) > W * T  # a partial rollout, then a whole one
        assert trainer.env_steps == 2 * T * E and trainer.iteration == 2  # one whole rollout was used, not a bit more
        # the partial rollout left no trace in the normalizer statistics
        assert rms.count - count == pytest.approx(rows_per_rollout, abs=1e-6)
        assert any("ray worker 1 (env copies 2..3) was lost" in str(w.message) for w in recwarn)
        new_pids = trainer.env.worker_pids()
        assert new_pids[0] == pids[0] and new_pids[1] != pids[1]
        del trainer.env.send
        os.kill(new_pids[0], signal.SIGKILL)  # between rollouts: found at the first recv of the next one
        trainer.advance()
        assert trainer.env_steps == 3 * T * E
    finally:
        trainer.close()
    assert wait_gone([*pids, *new_pids]) == []


def test_recurrent_ppo_restarts_the_hidden_state_of_a_rebuilt_worker_only(cluster, make_config, recwarn):
    """A GRU policy: the rollout collected again after a loss starts from the hidden states of the moment of
    the loss for the surviving copies (mid-episode: not zero) and from zero for the rebuilt worker's copies."""
    cfg = make_config(*PPO, *ray_args(cluster), "total_env_steps=100000", "model.recurrent=gru", "algo.bptt_len=0")
    trainer = algorithm("ppo").trainer_class()(cfg)
    try:
        pids = trainer.env.worker_pids()
        sends = []
        send = trainer.env.send

        def send_and_kill(chunk, actions):  # SIGKILL worker 1 at its 6th step of the rollout
            sends.append(chunk)
            if len(sends) == 12:
                os.kill(pids[1], signal.SIGKILL)
            send(chunk, actions)

        trainer.env.send = send_and_kill
        rollout = trainer.collect_whole()
        start = rollout.groups["agent"].hidden[0]  # [E, A, S]: the state the kept rollout started from
        assert start[2:].abs().max() == 0  # worker 1's copies were rebuilt: a fresh start
        assert start[:2].abs().min(dim=-1).values.gt(0).all()  # worker 0's copies go on mid-episode
    finally:
        del trainer.env.send
        trainer.close()


def test_dqn_drops_the_lost_step_and_goes_on(cluster, make_config, recwarn):
    cfg = make_config(*DQN, *ray_args(cluster), "total_env_steps=100000")
    trainer = algorithm("dqn").trainer_class()(cfg)
    try:
        for _ in range(3):
            trainer.advance()
        pids = trainer.env.worker_pids()
        os.kill(pids[1], signal.SIGKILL)
        for _ in range(3):
            trainer.advance()
        rows = len(next(iter(trainer.replay.values())))
        assert trainer.env_steps == 5 * 2 and rows == 5 * 2  # the lost vector step counted and stored nowhere
        # both copies' rows before the lost step end their trajectories there (a time limit in the replay)
        truncated = next(iter(trainer.replay.values())).storage.field("truncated")  # [L, E, A]
        assert truncated[2].all() and not truncated[:2].any() and not truncated[3:5].any()
        assert any("ray worker 1 (env copies 1..1) was lost" in str(w.message) for w in recwarn)
    finally:
        trainer.close()


def test_recurrent_dqn_ends_its_sequences_and_states_at_a_lost_step(cluster, make_config, recwarn):
    cfg = make_config(*DQN, *ray_args(cluster), "total_env_steps=100000", "model.recurrent=gru",
                      "model.rnn_hidden=8", "algo.seq_len=8", "algo.burn_in=2", "algo.batch_size=4")
    trainer = algorithm("dqn").trainer_class(cfg)(cfg)
    try:
        for _ in range(3):
            trainer.advance()
        buf = trainer.replay["agent"]
        assert len(buf) == 0 and buf.count.tolist() == [3, 3] and (trainer.hidden["agent"] != 0).any()
        os.kill(trainer.env.worker_pids()[1], signal.SIGKILL)
        trainer.advance()
        # the copies' pending 3-step sequences are stored as they stand; acting and sequences restart fresh
        assert len(buf) == 2 and buf.fields["valid"][:2].sum(1).tolist() == [3, 3]
        assert not buf.fields["ended"][:2].any() and buf.count.tolist() == [0, 0] and buf.fresh.all()
        assert (trainer.hidden["agent"] == 0).all()
        trainer.advance()
        assert buf.count.tolist() == [1, 1] and (trainer.hidden["agent"] != 0).any()
        assert any("ray worker 1 (env copies 1..1) was lost" in str(w.message) for w in recwarn)
    finally:
        trainer.close()


def _marl_train(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "marl", "train", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _env_workers(root_pid: int) -> set[int]:
    """Pids of EnvWorker actor processes below ``root_pid`` (raylet -> worker)."""
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
            if pid == root_pid:
                return True
        return False

    return {p for p, t in titles.items() if t.startswith("ray::EnvWorker") and below(p)}


def test_stop_signal_saves_kills_every_worker_and_resumes(cluster, tmp_path):
    """SIGTERM (SIGINT takes the same path: marl.run.StopSignals)."""
    signum = signal.SIGTERM
    run = tmp_path / "run"
    proc = _marl_train(*PPO, *ray_args(cluster), "total_env_steps=1000000", f"run_dir={run}")
    deadline = time.monotonic() + 90
    workers: set[int] = set()
    while time.monotonic() < deadline and (len(workers) < 2 or not (run / "config.yaml").exists()):
        time.sleep(0.2)
        workers = _env_workers(os.getpid())
        assert proc.poll() is None, proc.stdout.read()
    time.sleep(1.0)  # a few iterations
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, out
    assert f"Resume with: marl train resume={run}" in out
    assert wait_gone(workers) == []
    assert _env_workers(os.getpid()) == set()
    steps = ckpt.load(run / "checkpoints" / "latest.pt")["counters"]["env_steps"]
    assert steps > 0 and steps % 80 == 0
    proc = _marl_train(f"resume={run}", f"total_env_steps={steps + 80}", "ray.num_workers=1")  # copies regrouped
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert ckpt.load(run / "checkpoints" / "latest.pt")["counters"]["env_steps"] == steps + 80


def test_local_instance_is_started_and_shut_down(tmp_path):
    """ray.address="" (the default): this run starts its own Ray instance, with Ray's default token
    authentication (the test process's RAY_AUTH_MODE left out), and leaves no process behind."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    proc = _marl_train(*PPO, "runtime=ray", "ray.num_workers=2", f"run_dir={tmp_path / 'run'}",
                       start_new_session=True, env=env)
    seen: set[int] = set()
    while proc.poll() is None:
        seen |= _descendants(proc.pid)
        time.sleep(0.2)
    out = proc.stdout.read()
    assert proc.returncode == 0, out
    assert (tmp_path / "run" / "summary.json").exists()
    assert len(seen) >= 3, seen  # the Ray instance's processes (gcs, raylet, workers ...) were there
    assert wait_gone(seen) == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in seen if running(p)]


def _descendants(root: int) -> set[int]:
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


def test_removed_node_leaves_the_run_going(cluster, make_config, recwarn):
    """The ``cluster`` fixture adds the removed node back before the next test that uses it."""
    cfg = make_config(*PPO, *ray_args(cluster), "total_env_steps=100000")
    trainer = algorithm("ppo").trainer_class()(cfg)
    try:
        trainer.advance()
        head = cluster.head_node.node_id
        nodes = trainer.env.worker_nodes()
        other = next(n for n in cluster.list_all_nodes() if n.node_id != head)
        assert other.node_id in nodes
        cluster.remove_node(other)
        trainer.advance()
        trainer.advance()
        assert trainer.env_steps == 3 * 80
        assert set(trainer.env.worker_nodes()) == {head}
        assert any("was lost" in str(w.message) for w in recwarn)
    finally:
        trainer.close()
