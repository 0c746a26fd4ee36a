"""Data-parallel DQN, SAC and TD3 (marl.distributed): two real gloo ranks on 127.0.0.1.

Oracle: two ranks, each updating on its half of a batch with the gradients averaged over ranks,
hold the parameters of one process updating on the whole batch (every loss is a mean over rows,
so the average of the halves' gradients is the whole batch's gradient). The cases are chosen
with no sampling inside the update (DQN; SAC on discrete actions, whose expectations are exact;
TD3 without target smoothing noise), so the two sides see the same numbers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.test_distributed import TORCHRUN, free_port

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
UPDATES = 4
BATCH = 32
spawned_data: dict = {}  # case -> (policy state, learner state, batches) of the module's fixture

CASES = {
    "dqn": ("configs/spread_dqn.yaml", ["algo.target_update_interval=2", "algo.tau=0.5"]),
    "sac_discrete": ("configs/pendulum_sac.yaml", [
        "env.id=mpe2.simple_spread_v3", "env.kwargs={N: 2, max_cycles: 25, continuous_actions: false}",
        "norm.obs=true"]),
    "td3": ("configs/pendulum_td3.yaml", ["algo.policy_noise=0.0", "algo.policy_delay=2",
                                          "algo.target_update_interval=2"]),
}


def _cfg(case: str, overrides=()):
    from marl.api import train_config

    path, case_overrides = CASES[case]
    return train_config(str(ROOT / path), [
        "env.backend=sync", "env.num_envs=2", "algo.learning_starts=64", f"algo.batch_size={BATCH}",
        "model.hidden=[32, 32]", "torch_threads=1", "log.tensorboard=false", "log.progress=false",
        *case_overrides, *overrides])


def _updates(case: str, policy_state, learner_state, batches, grad_sync=None) -> list[torch.Tensor]:
    """``UPDATES`` learner updates on ``batches``: every trained parameter (flat) after each."""
    from marl.env.make import env_spec
    from marl.off_policy.actor import build_actor, build_learner

    cfg = _cfg(case)
    actor = build_actor(env_spec(cfg), cfg, "cpu")
    actor.load_state_dict(policy_state)
    learner = build_learner(actor, cfg)
    learner.load_state_dict(learner_state)
    learner.grad_sync = grad_sync
    history = []
    for _ in range(UPDATES):
        learner.update(batches)
        history.append(torch.cat([p.detach().reshape(-1).clone() for p in learner.trainable()]))
    return history


def _half(batch, rank: int):
    rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    return type(batch)(*[None if x is None else (x[rows] if x.dim() else x) for x in batch])


def _worker(rank: int, port: int, data_path: str, out_dir: str) -> None:
    import torch.distributed as dist

    from marl.distributed import Ranks

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    ranks = Ranks(rank, WORLD, torch.device("cpu"))
    data = torch.load(data_path, weights_only=False)
    out = {case: _updates(case, p, lstate, {g: _half(b, rank) for g, b in batches.items()}, ranks.average_grads)
           for case, (p, lstate, batches) in data.items()}
    ranks.close(settled=True)  # meet once more, then leave (a rank leaving first can abort its peer)
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """Per case: a batch of ``BATCH`` real replay rows, the 1-process updates on it and the 2-rank results."""
    from marl.off_policy.replay import to_batch
    from marl.off_policy.trainer import OffPolicyTrainer

    tmp = tmp_path_factory.mktemp("dist_off")
    data, reference = {}, {}
    for case in CASES:
        trainer = OffPolicyTrainer(_cfg(case, [f"run_dir={tmp / case}"]))
        try:
            for _ in range(40):
                trainer.collect(1.0)
            batches = {g: to_batch(buf.sample(BATCH, trainer.rng, 1.0), trainer.actor.obs_norm.get(g), "cpu")
                       for g, buf in trainer.replay.items()}
            policy_state, learner_state = trainer.actor.state_dict(), trainer.learner.state_dict()
        finally:
            trainer.close()
        assert all(bool(b.alive.all()) for b in batches.values())  # the condition of the oracle
        data[case] = (policy_state, learner_state, batches)
        reference[case] = _updates(case, policy_state, learner_state, batches)
    spawned_data.update(data)
    path = tmp / "data.pt"
    torch.save(data, path)
    sys.path.insert(0, str(ROOT))  # the spawned ranks import this module as tests.test_distributed_off_policy
    try:
        mp.start_processes(_worker, args=(free_port(), str(path), str(tmp)), nprocs=WORLD, start_method="spawn")
    finally:
        sys.path.remove(str(ROOT))
    return reference, [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_with_half_a_batch_each_equal_one_process_on_the_whole(spawned, case):
    reference, ranks = spawned
    history = reference[case]
    assert not torch.equal(history[0], history[-1])  # the updates moved the parameters
    for step, ref in enumerate(history):
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][case][step], ref, atol=1e-6, rtol=0)
        assert torch.equal(ranks[0][case][step], ranks[1][case][step])  # bit-identical on every rank


def test_one_half_without_the_all_reduce_is_not_the_whole_batch(spawned):
    """The oracle can fail: rank 0's half alone (no averaging) moves the parameters elsewhere."""
    reference, _ = spawned
    for case, history in reference.items():
        policy_state, learner_state, batches = spawned_data[case]
        lone = _updates(case, policy_state, learner_state, {g: _half(b, 0) for g, b in batches.items()})
        assert (lone[-1] - history[-1]).abs().max() > 1e-4, case


def _run(nproc: int, args: list[str], timeout: float = 240) -> str:
    cmd = [str(TORCHRUN), f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
           "-m", "marl", "train", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_torchrun_dqn_trains_in_sync_counts_every_rank_and_resumes(tmp_path):
    """2 ranks of DQN (parameters and normalizers compared at every training phase): the counters sum both
    ranks' steps, rank 0 alone reports; a plain process resumes the run and finishes it."""
    from marl import checkpoint as ckpt

    run = tmp_path / "run"
    common = ["env.backend=sync", "env.num_envs=4", "algo.learning_starts=100", "algo.batch_size=32",
              "algo.train_freq=8", "model.hidden=[32]", "eval.episodes=1", "eval.num_envs=1", "eval.interval=0",
              "log.tensorboard=false", "log.progress=false", "log.interval=5", "distributed.check_interval=3",
              "distributed.sync_interval=7", "torch_threads=1"]
    out = _run(2, ["configs/spread_dqn.yaml", f"run_dir={run}", "total_env_steps=400", *common])
    assert out.count("done:") == 1, out[-2000:]
    state = ckpt.load(run / "checkpoints/latest.pt")
    assert state["counters"]["env_steps"] == 400  # 100 vector steps of 2 copies on each of 2 ranks
    assert state["counters"]["agent_steps"] == 400 * 3  # every agent of both ranks' copies
    assert state["counters"]["episodes"] == 4 * 4  # 100 steps per copy, 25 per episode (summed at the end)
    # (400 - 100 warm-up env steps) / train_freq 8 = 37 training phases (plus the one at the boundary)
    assert state["learner"]["grad_steps"] in (37, 38)
    assert len(state["env"]) == 4
    done = subprocess.run([sys.executable, "-m", "marl", "train", f"resume={run}", "total_env_steps=480"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert ckpt.load(run / "checkpoints/latest.pt")["counters"]["env_steps"] == 480


def test_save_replay_is_refused_under_torchrun(tmp_path):
    cmd = [str(TORCHRUN), "--nproc-per-node=2", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
           "-m", "marl", "train", "configs/spread_dqn.yaml", f"run_dir={tmp_path / 'r'}", "env.num_envs=2",
           "algo.save_replay=true", "log.progress=false"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert "algo.save_replay: not available under torchrun" in done.stdout + done.stderr


@pytest.mark.slow
def test_sigterm_at_one_rank_stops_both_at_the_next_sync_step(tmp_path):
    """SIGTERM to rank 1 alone: both ranks stop at the next ``distributed.sync_interval`` vector step (the only
    steps where they agree), write one checkpoint whose counters are exact, and every process exits."""
    from marl import checkpoint as ckpt
    from tests.test_distributed import _rank_pid, _wait_for, torchrun

    run = tmp_path / "run"
    proc = torchrun(2, ["configs/spread_dqn.yaml", f"run_dir={run}", "total_env_steps=10000000", "env.backend=sync",
                        "env.num_envs=4", "algo.learning_starts=100", "algo.batch_size=32", "model.hidden=[32]",
                        "eval.interval=0", "checkpoint.interval=400", "log.tensorboard=false", "log.progress=false",
                        "distributed.sync_interval=7", "torch_threads=1"])
    latest = run / "checkpoints/latest.pt"
    try:
        _wait_for(latest, proc, timeout=180)
        pid = _rank_pid(proc.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "SIGTERM: stopped at" in out, out[-3000:]
    counters = ckpt.load(latest)["counters"]
    assert counters["env_steps"] % (7 * 4) == 0  # a sync step: 7 vector steps of 4 copies (both ranks)
    assert counters["agent_steps"] == 3 * counters["env_steps"]
    assert counters["episodes"] == 4 * (counters["env_steps"] // 4 // 25)  # 4 copies, 25 steps per episode
