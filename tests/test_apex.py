"""Ape-X shaped DQN (algo.num_actors): the epsilons by hand; actors' rows land in their lanes and equal the rows of
a synchronous collection with the same actions; real runs with actor processes log the lag, checkpoint, resume,
survive a killed actor and leave no process behind on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from marl import checkpoint as ckpt
from marl.config import ConfigError, load_config
from marl.env.chunks import EnvWorkerError
from marl.off_policy.apex import ApexActor, ApexTrainer, apex_epsilon
from marl.off_policy.trainer import OffPolicyTrainer
from marl.registry import algorithm
from marl.seeding import seeds_for
from marl.types import ActOutput

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "cartpole_dqn.yaml")
SMALL = ("algo.num_actors=2", "env.num_envs=4", "model.hidden=[32]", "algo.learning_starts=200",
         "algo.batch_size=32", "algo.train_freq=16", "algo.gradient_steps=4", "algo.actor_batch=8",
         "algo.weight_sync_interval=4", "algo.target_update_interval=20", "eval.episodes=2", "log.progress=false")


def scalars(run: Path, tag: str) -> list[float]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def test_apex_epsilons_by_hand():
    # eps_i = 0.4 ** (1 + 7 i / (N - 1)), Horgan et al. 2018
    assert apex_epsilon(0, 4) == pytest.approx(0.4)
    assert apex_epsilon(1, 4) == pytest.approx(0.4 ** (1 + 7 / 3))
    assert apex_epsilon(3, 4) == pytest.approx(0.4 ** 8)
    assert apex_epsilon(0, 1) == pytest.approx(0.4)
    assert apex_epsilon(1, 2, base=0.5, alpha=1.0) == pytest.approx(0.25)


def test_trainer_selection_and_bad_input():
    cfg = load_config(CONFIG, list(SMALL))
    assert algorithm("dqn").trainer_class(cfg) is ApexTrainer
    assert algorithm("dqn").trainer_class(load_config(CONFIG)) is OffPolicyTrainer
    with pytest.raises(ConfigError, match="algo.num_actors: 3 actors must split env.num_envs=4 evenly"):
        load_config(CONFIG, [*SMALL, "algo.num_actors=3"])
    with pytest.raises(ConfigError, match="algo.weight_sync_interval"):
        load_config(CONFIG, [*SMALL, "algo.weight_sync_interval=0"])


def test_rows_from_two_actors_land_in_their_lanes_and_equal_a_synchronous_collection(tmp_path, one_torch_thread):
    """Oracle: a synchronous trainer on the same 4 copies (same reset seeds) stepped with the actors' actions and
    storing through OffPolicyTrainer.store holds bit-identical replays (n-step lanes, PER priorities) and
    observation statistics."""
    over = [*SMALL, "norm.obs=true", "algo.n_step=3", "algo.per=true", "log.tensorboard=false", "eval.interval=0"]
    cfg = load_config(CONFIG, [*over, f"run_dir={tmp_path / 'apex'}"])
    apex = ApexTrainer(cfg)
    seeds = seeds_for(cfg.seed, 4)
    actors = [ApexActor(cfg, i, range(2 * i, 2 * i + 2), seeds[2 * i:2 * i + 2], 100 + i, epsilon=0.0)
              for i in range(2)]
    batches = [[a.collect() for _ in range(5)] for a in actors]  # 40 vector steps each, random (no weights)
    for b1, b0 in zip(batches[1], batches[0], strict=True):  # the second actor's rows arrive first
        apex.store_batch(b1)
        apex.store_batch(b0)
    assert apex.env_steps == 2 * 5 * 8 * 2
    assert all(any(b.episodes for b in batches[i]) for i in range(2))  # episode ends (final obs, n-step cuts) too
    sync = OffPolicyTrainer(load_config(CONFIG, [*over, "algo.num_actors=0", f"run_dir={tmp_path / 'sync'}"]))
    actions = {g: np.concatenate([np.concatenate([b.rows[g]["action"] for b in batches[i]]) for i in range(2)], 1)
               for g in batches[0][0].rows}  # [T, 4, A]
    for t in range(40):
        def act(obs, state, t=t):
            out = ActOutput({}, {}, {}, {}, {}, {})
            for g in obs:
                sync.actor.normalize(g, obs[g].obs, obs[g].alive, True)  # what act(update_stats=True) does
                out.action[g] = torch.as_tensor(actions[g][t])
                out.env_action[g] = sync.actor.net.env_action(g, out.action[g]).cpu().numpy()
            return out
        obs, out, step = sync.loop.step(act)
        sync.store(obs, out, step, None)
    for g, buf in sync.replay.items():
        want, got = buf.state_dict(), apex.replay[g].state_dict()
        assert want.keys() == got.keys() and want["fields"].keys() == got["fields"].keys()
        for k in want:
            if k == "fields":
                for f in want[k]:
                    np.testing.assert_array_equal(got[k][f], want[k][f], err_msg=f)
            else:
                np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)
        # statistics: the same rows, merged two copies at a time in arrival order (float64 rounding apart)
        assert apex.actor.obs_norm[g].rms.count == sync.actor.obs_norm[g].rms.count
        np.testing.assert_allclose(apex.actor.obs_norm[g].rms.mean, sync.actor.obs_norm[g].rms.mean, rtol=1e-12)
        np.testing.assert_allclose(apex.actor.obs_norm[g].rms.var, sync.actor.obs_norm[g].rms.var, rtol=1e-12)
        # lanes: env copy 2 (actor 1's first copy) holds actor 1's rows, slot by slot ([L, E, A, ...])
        lanes = got["fields"]["obs"]
        np.testing.assert_array_equal(lanes[:40, 2], np.concatenate([b.rows[g]["obs"][:, 0] for b in batches[1]]))
        np.testing.assert_array_equal(lanes[:40, 1], np.concatenate([b.rows[g]["obs"][:, 1] for b in batches[0]]))
    for a in actors:
        a.close()
    apex.close()
    sync.close()


def test_two_actors_log_the_lag_checkpoint_and_resume(tmp_path, one_torch_thread):
    run = tmp_path / "run"
    common = [*SMALL, f"run_dir={run}", "log.interval=2", "eval.interval=800", "checkpoint.interval=800"]
    summary = ApexTrainer(load_config(CONFIG, [*common, "total_env_steps=800"])).train()
    assert summary["env_steps"] >= 800 and summary["grad_steps"] > 0
    lags = scalars(run, "apex/weight_lag_mean")
    assert lags and min(lags) >= 0
    assert scalars(run, "apex/epsilon_0")[-1] == pytest.approx(0.4)
    assert scalars(run, "apex/epsilon_1")[-1] == pytest.approx(0.4 ** 8)
    assert {"latest.pt", "best.pt"} <= {p.name for p in (run / "checkpoints").iterdir()}
    state = ckpt.load(run / "checkpoints" / "latest.pt")
    assert 0 <= state["apex"]["weight_version"] <= summary["grad_steps"]
    resumed = ApexTrainer(load_config(CONFIG, [*common, "total_env_steps=1200", f"resume={run}"]))
    assert resumed.env_steps == state["counters"]["env_steps"] and resumed.learner.grad_steps == summary["grad_steps"]
    summary2 = resumed.train()
    assert summary2["env_steps"] >= 1200 and summary2["grad_steps"] > summary["grad_steps"]


def test_a_killed_actor_is_replaced_and_the_run_finishes(tmp_path, one_torch_thread):
    trainer = ApexTrainer(load_config(CONFIG, [*SMALL, f"run_dir={tmp_path / 'run'}", "total_env_steps=2000",
                                               "eval.interval=0", "log.tensorboard=false"]))
    trainer.advance()
    trainer.advance()
    victim = trainer.pool.procs[0]
    os.kill(victim.pid, signal.SIGKILL)
    with pytest.warns(RuntimeWarning, match=r"apex actor 0 \(env copies 0..1\) died"):
        summary = trainer.train()
    assert summary["env_steps"] >= 2000
    assert trainer.restarts() == 1 and not victim.is_alive()
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "latest.pt")["apex"]["actor_restarts"] == 1


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
    assert len(children) >= 2
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert f"resume={run}" in out
    assert ckpt.load(run / "checkpoints" / "latest.pt")["counters"]["env_steps"] > 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphan processes: {alive}"


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_sac_and_td3_actors_explore_with_their_policy_noise(tmp_path, algo, one_torch_thread):
    over = ["algo.num_actors=2", "env.num_envs=2", "total_env_steps=480", "algo.learning_starts=160",
            "algo.batch_size=64", "algo.buffer_size=10000", "algo.actor_batch=8", "model.hidden=[16]",
            "eval.interval=0", "eval.episodes=1", "log.tensorboard=false", "log.progress=false",
            f"run_dir={tmp_path / 'run'}"]
    cfg = load_config(str(ROOT / "configs" / f"pendulum_{algo}.yaml"), over)
    trainer = algorithm(algo).trainer_class(cfg)(cfg)
    assert isinstance(trainer, ApexTrainer) and trainer.epsilons == [0.0, 0.0]
    summary = trainer.train()
    assert summary["env_steps"] >= 480 and summary["grad_steps"] > 0 and trainer.weight_version >= 0


FAULTY = '''
import gymnasium as gym
import numpy as np


class Faulty(gym.Env):
    """Raises at its 30th step."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t == 30:
            raise ValueError("the faulty env broke")
        return np.zeros(1, np.float32), 0.0, False, False, {}
'''


def test_an_env_error_names_the_actor_and_carries_the_env_traceback(tmp_path, monkeypatch, one_torch_thread):
    (tmp_path / "apex_faulty_env.py").write_text(FAULTY)
    monkeypatch.syspath_prepend(str(tmp_path))  # actor processes get this process's sys.path
    cfg = load_config(CONFIG, [*SMALL, f"run_dir={tmp_path / 'run'}", "env.id=apex_faulty_env:Faulty",
                               "total_env_steps=100000", "eval.interval=0", "log.tensorboard=false"])
    with pytest.raises(EnvWorkerError, match=r"the faulty env broke \(in apex actor [01] \(env copies .*\), env copy "
                                             r"[0-3]\)") as info:
        ApexTrainer(cfg).train()
    assert "apex_faulty_env.py" in info.value.worker_traceback
