"""Data-parallel ranks (marl.distributed) in real processes: gloo on 127.0.0.1, two ranks.

The collectives and the learner run in processes spawned once per module
(``torch.multiprocessing``); the whole-run tests launch ``torchrun -m marl train`` as a
subprocess and are marked slow (each starts two Python processes with torch).
"""

from __future__ import annotations

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
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"
WORLD = 2
UPDATES = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The learner cases: name -> (config, overrides). Every sharing mode, both optimizers, the central critic.
CASES = {
    "shared": ("configs/simple_spread_ppo.yaml", []),
    "independent_central_per_group": (
        "configs/simple_adversary_ppo.yaml",
        ["model.sharing=independent", "model.critic=central", "algo.optimizer=per_group"]),
    # a KL target that stops some updates after their first epoch: the ranks must stop on the same (mean) KL
    "target_kl": ("configs/simple_spread_ppo.yaml", ["algo.target_kl=0.002", "algo.update_epochs=4"]),
}


def _cfg(case: str, overrides=()):
    from marl.api import train_config

    path, case_overrides = CASES[case]
    return train_config(str(ROOT / path), [
        "env.backend=sync", "env.num_envs=4", "algo.num_steps=16", "algo.num_minibatches=1", "algo.update_epochs=2",
        "norm.advantage=false", "torch_threads=1", *case_overrides, *overrides])


def _rank_rows(n_steps: int, num_envs: int, rank: int) -> torch.Tensor:
    """Rows of ``flat()`` ([T*E], row t*E + e) that rank ``rank``'s env copies fill, in that rank's own order."""
    per = num_envs // WORLD
    return torch.arange(n_steps * num_envs).view(n_steps, num_envs)[:, rank * per:(rank + 1) * per].reshape(-1)


def _ppo_updates(policy_state, batches, cfg, grad_sync=None):
    """``UPDATES`` PPO updates (one minibatch each) from ``policy_state``: the parameters after each, grad steps."""
    from marl.algos.ppo import PPOLearner
    from marl.env.make import env_spec
    from marl.on_policy.policy import ActorCriticPolicy

    policy = ActorCriticPolicy(env_spec(cfg), cfg, "cpu")
    policy.load_state_dict(policy_state)
    learner = PPOLearner(policy, cfg.algo)
    learner.grad_sync = grad_sync
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(UPDATES):
        learner.update(batches, num_minibatches=1, norm_advantage=False, generator=generator)
        history.append(torch.cat([p.detach().reshape(-1).clone() for p in policy.net.parameters()]))
    return history, learner.grad_steps


def _worker(rank: int, port: int, data_path: str, out_dir: str) -> None:
    """One rank: the learner on its rows, then each collective on known inputs; results to ``out_dir``."""
    import torch.distributed as dist

    from marl.distributed import DivergenceError, Ranks
    from marl.normalization import RunningMeanStd

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    ranks = Ranks(rank, WORLD, torch.device("cpu"))
    out: dict = {}
    # The learner: this rank's rows of one rollout, gradients averaged over ranks.
    data = torch.load(data_path, weights_only=False)
    out["params"] = {}
    for case, (policy_state, batches) in data.items():
        cfg = _cfg(case)
        rows = _rank_rows(cfg.algo.num_steps, cfg.env.num_envs, rank)
        local = {g: b.index(rows) for g, b in batches.items()}
        out["params"][case] = _ppo_updates(policy_state, local, cfg, grad_sync=ranks.average_grads)
    # Several buffers and an extra in one all-reduce.
    a, b = torch.full((3,), float(rank + 1)), torch.full((2,), 10.0 * (rank + 1))
    out["extra"] = ranks.average_grads([a, b], extra=torch.tensor([float(rank)]))
    out["packed"] = (a.clone(), b.clone())
    # Normalizer statistics: rank r's batches (one empty) merged across ranks.
    rng = np.random.default_rng(rank)
    rms = RunningMeanStd((3,))
    rms.sync = ranks.gather_moments
    for n in (5, 0 if rank == 1 else 4, 7):
        rms.update(rng.normal(rank, 1.0 + rank, size=(n, 3)))
    out["rms"] = (rms.mean, rms.var, rms.count)
    # Deferred (preemption): local updates, one merge at flush; the same batches -> the union's statistics.
    rng = np.random.default_rng(rank)
    late = RunningMeanStd((3,))
    late.sync, late.deferred = ranks.gather_moments, True
    for n in (5, 0 if rank == 1 else 4, 7):
        late.update(rng.normal(rank, 1.0 + rank, size=(n, 3)))
    out["local_count"] = late.count  # before the flush: this rank's rows only
    late.flush()
    out["rms_deferred"] = (late.mean, late.var, late.count)
    out["sum"] = ranks.sum_ints([rank + 1, 10])
    out["any"] = (ranks.any_(rank == 1), ranks.any_(False))
    # The divergence check: passes on equal tensors, names the first one perturbed on rank 1.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    ranks.check_in_sync(net.named_parameters())
    if rank == 1:
        with torch.no_grad():
            w = net[2].weight
            w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(1.0))  # one ulp
    try:
        ranks.check_in_sync(net.named_parameters())
        out["divergence"] = None
    except DivergenceError as err:
        out["divergence"] = str(err)
    ranks.close(settled=True)  # meet once more, then leave (a rank leaving first can abort its peer)
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """One rollout of 1 process with E copies, the reference updates on it, and the 2-rank results."""
    from marl.on_policy.trainer import OnPolicyTrainer

    tmp = tmp_path_factory.mktemp("dist")
    rollouts, reference = {}, {}
    for case in CASES:
        cfg = _cfg(case, [f"run_dir={tmp / case}", "log.tensorboard=false", "log.progress=false"])
        trainer = OnPolicyTrainer(cfg)
        try:
            policy_state = trainer.policy.state_dict()
            rollout = trainer.collector.collect()
            for name, buf in rollout.groups.items():
                buf.finish(rollout.last_value[name], cfg.algo.gamma, cfg.algo.gae_lambda,
                           cfg.algo.bootstrap_on_truncation)
            batches = {name: buf.flat() for name, buf in rollout.groups.items()}
            batches = {name: type(b)(*[None if x is None else x.clone() for x in b]) for name, b in batches.items()}
        finally:
            trainer.close()
        rollouts[case] = (policy_state, batches)
        reference[case] = _ppo_updates(policy_state, batches, cfg)
    data = tmp / "data.pt"
    torch.save(rollouts, data)
    sys.path.insert(0, str(ROOT))  # the spawned ranks import this module as tests.test_distributed
    try:
        mp.start_processes(_worker, args=(free_port(), str(data), str(tmp)), nprocs=WORLD, start_method="spawn")
    finally:
        sys.path.remove(str(ROOT))
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return reference, ranks


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_with_half_the_copies_each_equal_one_process(spawned, case):
    """Same rows split by env copy over 2 ranks, one minibatch per update: the parameters of 1 process, to 1e-6.

    (The condition, docs/distributed.md: one minibatch per update, advantages not standardized per rank,
    the same alive rows per rank.)"""
    reference, ranks = spawned
    history, grad_steps = reference[case]
    assert not torch.equal(history[0], history[-1])  # the updates moved the parameters
    if case == "target_kl":  # the KL target did stop updates early (else the case tests nothing more)
        assert grad_steps < UPDATES * _cfg(case).algo.update_epochs
    for r in range(WORLD):
        assert ranks[r]["params"][case][1] == grad_steps  # the same early stops on every rank
    for step, ref in enumerate(history):
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r]["params"][case][0][step], ref, atol=1e-6, rtol=0)
        assert torch.equal(ranks[0]["params"][case][0][step], ranks[1]["params"][case][0][step])  # identical


def test_one_all_reduce_averages_several_buffers_and_extras(spawned):
    _, ranks = spawned
    for out in ranks:
        a, b = out["packed"]
        torch.testing.assert_close(a, torch.full((3,), 1.5))
        torch.testing.assert_close(b, torch.full((2,), 15.0))
        torch.testing.assert_close(out["extra"], torch.tensor([0.5]))


def test_normalizer_statistics_merge_exactly_across_ranks(spawned):
    """Every rank holds the statistics of the union of all ranks' rows (one empty batch included)."""
    from marl.normalization import RunningMeanStd

    _, ranks = spawned
    union = RunningMeanStd((3,))
    streams = [np.random.default_rng(r) for r in range(WORLD)]
    for n_by_rank in ((5, 5), (4, 0), (7, 7)):
        rows = [streams[r].normal(r, 1.0 + r, size=(n_by_rank[r], 3)) for r in range(WORLD)]
        union.update(np.concatenate(rows))
    for out in ranks:
        mean, var, count = out["rms"]
        np.testing.assert_allclose(mean, union.mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(var, union.var, rtol=1e-12)
        assert count == pytest.approx(union.count)
    np.testing.assert_array_equal(ranks[0]["rms"][0], ranks[1]["rms"][0])  # bit-identical on every rank
    np.testing.assert_array_equal(ranks[0]["rms"][1], ranks[1]["rms"][1])


def test_deferred_statistics_merge_once_at_flush(spawned):
    """Deferred normalizers (DD-PPO preemption): each rank sees only its rows until flush(), then every rank holds
    the union's statistics, bit-identical across ranks."""
    _, ranks = spawned
    assert ranks[0]["local_count"] == pytest.approx(1e-4 + 16) and ranks[1]["local_count"] == pytest.approx(1e-4 + 12)
    for out in ranks:
        mean, var, count = out["rms_deferred"]
        np.testing.assert_allclose(mean, out["rms"][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(var, out["rms"][1], rtol=1e-12)
        assert count == pytest.approx(out["rms"][2])
    np.testing.assert_array_equal(ranks[0]["rms_deferred"][0], ranks[1]["rms_deferred"][0])


def test_counters_and_stop_flag_agree(spawned):
    _, ranks = spawned
    for out in ranks:
        assert out["sum"] == [3, 20]
        assert out["any"] == (True, False)


def test_divergence_check_names_the_perturbed_tensor_and_rank(spawned):
    _, ranks = spawned
    for out in ranks:
        assert out["divergence"] is not None
        assert "'2.weight'" in out["divergence"] and "rank(s) [1]" in out["divergence"]


def _leaver(rank: int, port: int, out_dir: str) -> None:
    """A rank that meets its peer, then leaves in turn; rank 1 is slow to leave. Times to ``out_dir``."""
    import time

    import torch.distributed as dist

    from marl.distributed import leave_in_turn

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    dist.barrier()
    if rank == 1:
        time.sleep(1.0)
    start = time.monotonic()
    leave_in_turn(rank, WORLD)
    torch.save((start, time.monotonic(), dist.is_initialized()), os.path.join(out_dir, f"leave{rank}.pt"))


def test_rank_zero_leaves_the_process_group_after_the_others(tmp_path):
    """Rank 0 tears its connections down only once rank 1 has left (a rank closing while its peer still reads
    the last collective's bytes makes gloo abort the peer); both processes exit cleanly."""
    sys.path.insert(0, str(ROOT))
    try:
        mp.start_processes(_leaver, args=(free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    finally:
        sys.path.remove(str(ROOT))
    (start0, end0, init0), (start1, end1, init1) = [torch.load(tmp_path / f"leave{r}.pt") for r in range(WORLD)]
    assert not init0 and not init1
    assert end0 - start0 >= 0.8  # rank 0 waited for the slow rank 1 (which slept 1 s after the barrier)
    assert end1 - start1 < end0 - start0


def test_env_copies_split_the_seed_stream():
    from marl.distributed import Ranks
    from marl.seeding import seeds_for

    seeds = seeds_for(3, 8)
    copies = [Ranks(k, 2, torch.device("cpu")).env_copies(8) for k in range(2)]
    parts = [seeds[r.start:r.stop] for r in copies]
    assert parts[0] + parts[1] == seeds and not set(parts[0]) & set(parts[1])
    with pytest.raises(ValueError, match="multiple of the number of ranks"):
        Ranks(0, 3, torch.device("cpu")).env_copies(8)


def test_divergence_check_covers_parameters_and_normalizer_statistics(tmp_path):
    from marl.on_policy.trainer import OnPolicyTrainer

    trainer = OnPolicyTrainer(_cfg("shared", [f"run_dir={tmp_path}"]))
    try:
        names = [name for name, _ in trainer.synced_tensors()]
        params = [name for name, _ in trainer.policy.net.named_parameters()]
    finally:
        trainer.close()
    assert names[:len(params)] == params
    assert {"obs_norm.agent.mean", "obs_norm.agent.var", "obs_norm.agent.count", "reward_norm.agent.var"} <= set(names)
    assert not any(name.endswith(".ret") for name in names)  # running returns are per env copy, not shared


# --------------------------------------------------------------------------- whole runs under torchrun
RUN = ["env.backend=sync", "env.num_envs=4", "algo.num_steps=50", "algo.update_epochs=2", "eval.episodes=2",
       "eval.num_envs=1", "log.tensorboard=false", "log.progress=false", "distributed.check_interval=1"]


def torchrun(nproc: int, args: list[str], **popen) -> subprocess.Popen:
    cmd = [str(TORCHRUN), f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
           "-m", "marl", "train", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _rank_pid(torchrun_pid: int, rank: int) -> int | None:
    for pid in _children(torchrun_pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_torchrun_trains_and_resumes_with_another_rank_count(tmp_path):
    """2 ranks train (checksums compared every update), then 1 process resumes the run and finishes it."""
    from marl import checkpoint as ckpt

    run = tmp_path / "run"
    proc = torchrun(2, ["configs/simple_spread_ppo.yaml", f"run_dir={run}", "total_env_steps=400",
                        "eval.interval=200", "checkpoint.interval=200", *RUN])
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out[-3000:]
    state = ckpt.load(run / "checkpoints/latest.pt")
    assert state["counters"]["env_steps"] == 400  # both ranks' steps: 2 iterations of 50 steps x 4 copies
    assert len(state["env"]) == 4 and state["collector"]["reward_norm"]["agent"]["ret"].shape[0] == 4
    assert out.count("done:") == 1  # rank 0 alone reports
    done = subprocess.run([sys.executable, "-m", "marl", "train", f"resume={run}", "total_env_steps=600"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert ckpt.load(run / "checkpoints/latest.pt")["counters"]["env_steps"] == 600


@pytest.mark.slow
def test_killed_rank_ends_the_job_within_seconds_and_the_checkpoint_survives(tmp_path):
    """SIGKILL rank 1 mid-run: torchrun and rank 0 are gone within seconds, latest.pt loads, 2 ranks resume it."""
    from marl import checkpoint as ckpt

    run = tmp_path / "run"
    proc = torchrun(2, ["configs/simple_spread_ppo.yaml", f"run_dir={run}", "total_env_steps=1000000",
                        "eval.interval=0", "checkpoint.interval=200", *RUN])
    latest = run / "checkpoints/latest.pt"
    try:
        _wait_for(latest, proc, timeout=180)
        pid = _rank_pid(proc.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        start = time.time()
        out = proc.communicate(timeout=60)[0]
        elapsed = time.time() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert elapsed < 20, f"the job took {elapsed:.1f}s to end after a rank died\n{out[-2000:]}"
    steps = ckpt.load(latest)["counters"]["env_steps"]
    assert steps > 0 and steps % 200 == 0
    resumed = torchrun(2, [f"resume={run}", f"total_env_steps={steps + 200}"])
    out = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert ckpt.load(latest)["counters"]["env_steps"] == steps + 200


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_every_process_exits(tmp_path):
    """SIGINT to torchrun's process group (a terminal's Ctrl-C): the agreed stop writes latest.pt; no process left."""
    from marl import checkpoint as ckpt

    run = tmp_path / "run"
    proc = torchrun(2, ["configs/simple_spread_ppo.yaml", f"run_dir={run}", "total_env_steps=1000000",
                        "eval.interval=0", "checkpoint.interval=200", *RUN], start_new_session=True)
    latest = run / "checkpoints/latest.pt"
    try:
        _wait_for(latest, proc, timeout=180)
        workers = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "SIGINT: stopped at" in out, out[-3000:]
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    assert ckpt.load(latest)["counters"]["env_steps"] > 0


def test_preemption_ends_the_stragglers_rollouts_early(tmp_path):
    """DD-PPO preemption with a deterministic straggler (rank 1's env steps sleep 10 ms): once rank 0 has its
    whole rollout, rank 1 stops at >= 25% of it, so the run needs more, shorter iterations than the 10 full ones
    (40 steps x 4 copies each for 1600 env steps), and the counters still sum every step taken."""
    import json

    run = tmp_path / "run"
    proc = torchrun(2, ["configs/simple_spread_ppo.yaml", f"run_dir={run}", "env.id=tests.slow_rank_env:make",
                        "env.kwargs={N: 3, max_cycles: 25, continuous_actions: false}", "env.backend=sync",
                        "env.num_envs=4", "algo.num_steps=40", "algo.num_minibatches=4", "algo.update_epochs=1",
                        "total_env_steps=1600", "eval.interval=0", "eval.episodes=1", "eval.num_envs=1",
                        "eval.stochastic_check=false", "log.tensorboard=false", "log.progress=false",
                        "distributed.preempt_fraction=0.5", "distributed.check_interval=1", "torch_threads=1"])
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] > 10, summary["iterations"]
    # every iteration: rank 0's 40 x 2 steps plus rank 1's 10..40 x 2
    assert 1600 <= summary["env_steps"] <= 1600 + 160
    assert summary["env_steps"] % 2 == 0 and summary["env_steps"] < summary["iterations"] * 160
