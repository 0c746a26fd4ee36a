"""Asynchronous PPO (appo): V-trace batches equal PPO's with no policy lag; real runs with worker processes
log the lag, checkpoint, resume, survive a killed worker, report an env error, and leave no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from marl import checkpoint as ckpt
from marl.config import ConfigError, load_config
from marl.env.chunks import EnvWorkerError
from marl.env.make import vector_env
from marl.loop import EnvLoop
from marl.on_policy.async_trainer import AsyncPPOTrainer, vtrace_batches
from marl.on_policy.collector import RolloutCollector
from marl.on_policy.policy import ActorCriticPolicy
from marl.on_policy.workers import RolloutWorker, to_numpy
from marl.seeding import seeds_for

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "simple_spread_appo.yaml")
SMALL = ("env.num_envs=4", "env.num_workers=2", "algo.num_steps=25", "algo.num_minibatches=2",
         "algo.update_epochs=1", "eval.episodes=2", "log.progress=false")


def scalars(run: Path, tag: str) -> list[float]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


CASES = {
    "lambda 1, bootstrap at time limits": (1.0, True, []),
    "lambda 0.95, time limit terminal": (0.95, False, []),
    "central critic": (1.0, True, ["model.critic=central"]),
    "independent parameters": (1.0, True, ["model.sharing=independent"]),
    # turn-based: one seat waits every other step (alive masks, pending rewards), illegal moves masked
    "tictactoe (AEC, masks)": (1.0, True, ["env.id=pettingzoo.classic.tictactoe_v3", "env.kwargs={}",
                                           "norm.obs=false", "env.single_group=true"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_without_lag_the_vtrace_batch_is_the_ppo_batch(one_torch_thread, case):
    """One worker, its parameters equal to the learner's (lag 0): the V-trace targets are the GAE returns of a
    synchronous collector on the same env copies and actions, the advantages its GAE advantages."""
    lam, bootstrap, extra = CASES[case]
    cfg = load_config(CONFIG, ["env.num_envs=2", "env.num_workers=1", "algo.num_steps=30", f"algo.gae_lambda={lam}",
                               f"algo.bootstrap_on_truncation={bootstrap}", *extra])  # 30 steps: a 25-step limit
    env = vector_env(cfg, 2, backend="sync")
    try:
        torch.manual_seed(0)
        learner = ActorCriticPolicy(env.spec, cfg)
        reference = ActorCriticPolicy(env.spec, cfg)
        reference.load_state_dict(learner.state_dict())
        loop = EnvLoop(env)
        loop.reset(cfg.seed)
        sync = RolloutCollector(loop, reference, num_steps=30, reward_norm=cfg.norm.reward,
                                reward_clip=cfg.norm.reward_clip, gamma=cfg.algo.gamma)
        torch.manual_seed(11)
        rollout = sync.collect()
    finally:
        env.close()
    worker = RolloutWorker(cfg, 0, range(2), seeds_for(cfg.seed, 2), torch_seed=5)
    try:
        worker.set_weights(to_numpy(learner.state_dict()), version=0)
        torch.manual_seed(11)
        msg = worker.collect()
    finally:
        worker.close()
    assert msg.env_steps == 60 and msg.version == 0
    for name, buf in rollout.groups.items():
        assert (buf.truncated | buf.terminated).any()
        buf.finish(rollout.last_value[name], cfg.algo.gamma, lam, bootstrap)
    batches, stats = vtrace_batches(learner, msg, gamma=cfg.algo.gamma, lam=lam, rho_bar=1.0, c_bar=1.0,
                                    bootstrap_on_truncation=bootstrap)
    assert stats["vtrace_rho_mean"] == pytest.approx(1.0, abs=1e-5)
    for name, buf in rollout.groups.items():
        batch, alive = batches[name], buf.alive.flatten(0, 1)
        assert torch.equal(batch.obs, buf.obs.flatten(0, 1)) and torch.equal(batch.action, buf.action.flatten(0, 1))
        assert torch.equal(batch.alive, alive)
        torch.testing.assert_close(batch.ret, buf.ret.flatten(0, 1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batch.advantage, buf.advantage.flatten(0, 1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batch.log_prob[alive], buf.log_prob.flatten(0, 1)[alive], rtol=1e-5, atol=1e-5)


def test_worker_obs_moments_merge_to_the_statistics_of_all_the_data(one_torch_thread):
    """What a rollout's moments add to the learner's statistics equals what the worker's normalizer saw."""
    cfg = load_config(CONFIG, ["env.num_envs=2", "env.num_workers=1", "algo.num_steps=10"])
    worker = RolloutWorker(cfg, 0, range(2), seeds_for(cfg.seed, 2), torch_seed=1)
    try:
        learner = ActorCriticPolicy(worker.env.spec, cfg)
        worker.set_weights(to_numpy(learner.state_dict()), version=0)
        msg = worker.collect()
    finally:
        worker.close()
    (name, (mean, var, count)), = msg.obs_moments.items()
    rms = learner.obs_norm[name].rms
    rms.merge(mean, var, count)
    seen = worker.policy.obs_norm[name].rms
    assert count == 10 * 2 * 3  # steps x copies x agents
    torch.testing.assert_close(torch.from_numpy(rms.mean), torch.from_numpy(seen.mean))
    torch.testing.assert_close(torch.from_numpy(rms.var), torch.from_numpy(seen.var))


def test_weights_handed_over_within_a_rollout_act_from_the_next_step(one_torch_thread):
    """The behaviour log-probabilities stored are those of the parameters that acted at each step, and each
    step's version travels with the rollout (V-trace then corrects each step for its own lag)."""
    cfg = load_config(CONFIG, ["env.num_envs=2", "env.num_workers=1", "algo.num_steps=10", "norm.obs=false"])
    torch.manual_seed(0)
    worker = RolloutWorker(cfg, 0, range(2), seeds_for(cfg.seed, 2), torch_seed=1)
    try:
        old, new = ActorCriticPolicy(worker.env.spec, cfg), ActorCriticPolicy(worker.env.spec, cfg)
        calls = []

        def poll():
            calls.append(1)
            return (to_numpy(new.state_dict()), 7) if len(calls) == 4 else None

        worker.set_weights(to_numpy(old.state_dict()), version=6)
        worker.policy.poll = poll
        msg = worker.collect()
    finally:
        worker.close()
    assert msg.step_versions.tolist() == [6, 6, 6] + [7] * 7 and msg.version == 6
    (name, f), = msg.groups.items()
    obs, action = torch.from_numpy(f["obs"]), torch.from_numpy(f["action"])
    for policy, steps in ((old, slice(0, 3)), (new, slice(3, 10))):
        with torch.no_grad():
            expected = policy.net[name].dist(obs[steps]).log_prob(action[steps])
        torch.testing.assert_close(torch.from_numpy(f["log_prob"][steps]), expected, rtol=1e-5, atol=1e-5)


def test_bad_worker_split_is_a_config_error():
    with pytest.raises(ConfigError, match="env.num_workers"):
        load_config(CONFIG, ["env.num_envs=5", "env.num_workers=2"])
    with pytest.raises(ConfigError, match="algo.rho_bar"):
        load_config(CONFIG, ["algo.rho_bar=0.5", "algo.c_bar=1.0"])
    with pytest.raises(ConfigError, match="env.backend"):
        load_config(CONFIG, ["env.backend=batched"])
    with pytest.raises(ConfigError, match="model.recurrent: appo's workers carry no hidden states"):
        load_config(CONFIG, ["model.recurrent=gru"])
    assert load_config(CONFIG, ["runtime=ray"]).runtime == "ray"  # actors on Ray: tests/test_ray_appo.py


def test_two_workers_log_the_lag_checkpoint_and_resume(tmp_path, one_torch_thread):
    run = tmp_path / "run"
    common = [*SMALL, f"run_dir={run}", "log.interval=1", "eval.interval=300", "checkpoint.interval=300",
              "checkpoint.keep_last=2"]
    summary = AsyncPPOTrainer(load_config(CONFIG, [*common, "total_env_steps=600"])).train()
    assert summary["env_steps"] == 600 and summary["iterations"] == 12  # rollouts of 25 steps x 2 copies
    lags = scalars(run, "async/policy_lag_mean")
    assert len(lags) == 12 and min(lags) >= 0 and max(scalars(run, "async/policy_lag_max")) >= 1
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"latest.pt", "best.pt", "step_600.pt"}
    state = ckpt.load(run / "checkpoints" / "latest.pt")
    assert state["async"]["version"] == 12 - state["async"]["dropped_rollouts"]
    assert len(state["collector"]["workers"]) == 2 and all(w["reward_norm"] for w in state["collector"]["workers"])
    resumed = AsyncPPOTrainer(load_config(CONFIG, [*common, "total_env_steps=900", f"resume={run}"]))
    assert resumed.version == state["async"]["version"] and resumed.env_steps == 600
    summary = resumed.train()
    assert summary["env_steps"] == 900 and summary["iterations"] == 18
    assert ckpt.load(run / "checkpoints" / "latest.pt")["async"]["version"] > state["async"]["version"]


def test_a_killed_worker_is_replaced_and_the_run_finishes(tmp_path, one_torch_thread):
    trainer = AsyncPPOTrainer(load_config(CONFIG, [*SMALL, f"run_dir={tmp_path / 'run'}", "total_env_steps=600",
                                                   "eval.interval=0", "log.tensorboard=false"]))
    trainer.advance()
    trainer.advance()
    victim = trainer.pool.procs[0]
    os.kill(victim.pid, signal.SIGKILL)
    with pytest.warns(RuntimeWarning, match=r"worker 0 \(env copies 0..1\) died"):
        summary = trainer.train()
    assert summary["env_steps"] >= 600
    assert trainer.restarts() == 1
    assert not victim.is_alive()
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "latest.pt")["async"]["worker_restarts"] == 1


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


def test_an_env_error_names_the_worker_and_carries_the_env_traceback(tmp_path, monkeypatch, one_torch_thread):
    (tmp_path / "appo_faulty_env.py").write_text(textwrap.dedent(FAULTY))
    monkeypatch.syspath_prepend(str(tmp_path))  # worker processes get this process's sys.path
    cfg = load_config(CONFIG, [*SMALL, f"run_dir={tmp_path / 'run'}", "env.id=appo_faulty_env:Faulty", "env.kwargs={}",
                               "total_env_steps=100000", "eval.interval=0", "log.tensorboard=false"])
    with pytest.raises(EnvWorkerError, match=r"the faulty env broke \(in appo worker [01] \(env copies .*\), env copy "
                                             r"[0-3]\)") as info:
        AsyncPPOTrainer(cfg).train()
    assert "appo_faulty_env.py" in info.value.worker_traceback and "raise ValueError" in info.value.worker_traceback


def test_sigint_writes_the_checkpoint_and_leaves_no_process(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "marl", "train", CONFIG, *SMALL, f"run_dir={run}",
                             "total_env_steps=10000000", "eval.interval=0", "log.tensorboard=false",
                             "log.progress=true"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.time() + 60
    while sum(" it " in x for x in lines) < 2 and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    assert sum(" it " in x for x in lines) >= 2, "".join(lines)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert sum("marl-appo" in " ".join(c.cmdline()) or c.name().startswith("python") for c in children) >= 2
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert f"resume={run}" in out
    assert ckpt.load(run / "checkpoints" / "latest.pt")["counters"]["env_steps"] > 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphan processes: {alive}"
