"""VMAS scenarios through the batched backend (marl/env/vmas.py); the real vmas package, no mock."""

import os

import numpy as np
import pytest

if os.environ.get("CI"):
    import vmas  # noqa: F401 - CI installs every extra: a missing one fails here, never skips
else:
    pytest.importorskip("vmas", reason="the vmas extra is not installed (pip install -e .[vmas])")

from marl.config import ConfigError, load_config  # noqa: E402
from marl.env.make import env_spec, vector_env  # noqa: E402

SPREAD = "configs/simple_spread_ppo.yaml"
NAV = ["env.backend=batched", "env.id=vmas:navigation", "env.kwargs={n_agents: 2, max_steps: 4}"]


def test_spec_groups_and_spaces_come_from_vmas():
    spec = env_spec(load_config(SPREAD, [*NAV, "model.critic=central"]))
    assert spec.agents == ("agent_0", "agent_1") and [g.name for g in spec.groups] == ["agent"]
    group = spec.groups[0]
    assert group.action_space.n == 9 and group.obs_space.shape == (18,)
    assert spec.state_shape == (36,)


def test_episodes_truncate_at_max_steps_with_their_final_observation():
    env = vector_env(load_config(SPREAD, NAV), 3)
    env.reset(0)
    rng = np.random.default_rng(0)
    total = np.zeros((3, 2))
    for t in range(4):
        step = env.step({"agent": rng.integers(0, 9, (3, 2))})
        tr = step.transition["agent"]
        total += tr.reward
    assert tr.truncated.all() and not tr.terminated.any() and len(step.episodes) == 3
    for ep in step.episodes:
        assert ep.length == 4
        np.testing.assert_allclose([ep.returns["agent_0"], ep.returns["agent_1"]], total[ep.env_index], rtol=1e-5)
    # the copies were reset: the next observation is a fresh start, the final one is kept apart
    assert not np.allclose(step.obs["agent"].obs, tr.final_obs)


def test_vmas_ids_need_the_batched_backend():
    with pytest.raises(ConfigError, match="env.backend=batched"):
        env_spec(load_config(SPREAD, ["env.id=vmas:navigation", "env.kwargs={}"]))


def test_a_vmas_run_trains_and_resumes_with_a_warning(tmp_path):
    from marl.api import train

    common = [*NAV, "env.num_envs=8", "algo.num_steps=20", "algo.num_minibatches=2", "log.progress=false",
              "log.tensorboard=false", "eval.episodes=2", "eval.num_envs=2", "eval.interval=0", f"run_dir={tmp_path}"]
    first = train(load_config(SPREAD, [*common, "total_env_steps=320"]))
    assert first["env_steps"] == 320 and np.isfinite(first["final_eval"]["ep_return"])
    with pytest.warns(UserWarning, match="restarts its env copies"):
        second = train(load_config(SPREAD, [*common, "total_env_steps=640", f"resume={tmp_path}"]))
    assert second["env_steps"] == 640


def test_a_scenario_without_a_time_limit_gets_one():
    """VMAS navigation never ends an episode by itself: without env.kwargs.max_steps evaluation would never end."""
    from marl.env.vmas import DEFAULT_MAX_STEPS

    cfg = load_config(SPREAD, ["env.backend=batched", "env.id=vmas:navigation", "env.kwargs={n_agents: 2}"])
    env = vector_env(cfg, 2)
    env.reset(0)
    lengths = []
    for _ in range(DEFAULT_MAX_STEPS):
        lengths += [e.length for e in env.step({"agent": np.zeros((2, 2), np.int64)}).episodes]
    assert lengths == [DEFAULT_MAX_STEPS, DEFAULT_MAX_STEPS]


TORCH = ["env.backend=batched", "env.id=vmas:simple_spread", "env.kwargs={n_agents: 3, max_steps: 5}", "env.num_envs=6",
         "algo.num_steps=12", "algo.num_minibatches=2", "algo.update_epochs=2", "log.progress=false",
         "log.tensorboard=false", "eval.interval=0", "eval.episodes=2", "eval.num_envs=2"]


def _trainer(tmp_path, name, extra=()):
    from marl.on_policy.trainer import OnPolicyTrainer

    return OnPolicyTrainer(load_config(SPREAD, [*TORCH, *extra, f"run_dir={tmp_path / name}"]))


def test_the_vmas_ppo_path_stays_torch_without_a_numpy_conversion(tmp_path, monkeypatch):
    """Observations, rewards, flags and actions go from VMAS to the networks and back as tensors: any tensor ->
    numpy conversion (``Tensor.numpy``, ``np.asarray(tensor)`` through ``__array__``) during a rollout fails."""
    import torch

    trainer = _trainer(tmp_path, "torch", ["model.critic=central"])  # the central critic reads the env's state too
    assert trainer.env.tensors and trainer.collector.tensors
    obs = trainer.loop.obs["agent"]
    assert isinstance(obs.obs, torch.Tensor) and obs.obs.dtype == torch.float32 and isinstance(trainer.loop.state,
                                                                                               torch.Tensor)
    calls = []

    def forbidden(self, *args, **kwargs):
        calls.append(tuple(self.shape))
        raise AssertionError(f"numpy conversion of a tensor {tuple(self.shape)} on the torch-native path")

    sent = []
    step = trainer.env.env.step
    monkeypatch.setattr(trainer.env.env, "step", lambda actions: sent.append(actions["agent"]) or step(actions))
    monkeypatch.setattr(torch.Tensor, "numpy", forbidden)
    monkeypatch.setattr(torch.Tensor, "__array__", forbidden)
    rollout = trainer.collector.collect()
    monkeypatch.undo()
    assert not calls and len(sent) == 12
    assert all(isinstance(a, torch.Tensor) and a.dtype == torch.int64 and a.shape == (6, 3) for a in sent)
    assert rollout.env_steps == 72 and len(rollout.episodes) == 12  # 5-step episodes of 6 copies in 12 steps
    buf = rollout.groups["agent"]
    assert buf.truncated.sum() == 2 * 6 * 3 and torch.equal(buf.action[:12], torch.stack(sent))


def test_the_torch_path_equals_the_numpy_path_on_a_fixed_seed(tmp_path, monkeypatch):
    """The same run with VMAS stepped through numpy (the path of every other env): the same rollout, the same
    update."""
    import torch

    import marl.on_policy.trainer as trainer_module

    results = {}
    for name in ("torch", "numpy"):
        if name == "numpy":
            monkeypatch.setattr(trainer_module, "torch_native", lambda *a, **k: False)
        trainer = _trainer(tmp_path, name)
        assert trainer.env.tensors == (name == "torch")
        rollout = trainer.collector.collect()
        buf = rollout.groups["agent"]
        buf.finish(rollout.last_value["agent"], 0.95, 0.95, False)
        trainer.learner.update({"agent": buf.flat()}, num_minibatches=2, norm_advantage=True,
                               generator=trainer.generator)
        results[name] = ({k: getattr(buf, k).clone() for k in ("obs", "action", "log_prob", "value", "reward",
                                                               "terminated", "truncated", "final_value", "advantage")},
                         [(e.env_index, e.length, e.returns["agent_1"]) for e in rollout.episodes],
                         [p.detach().clone() for p in trainer.policy.net.parameters()])
    (a, ep_a, net_a), (b, ep_b, net_b) = results["torch"], results["numpy"]
    assert torch.equal(a["action"], b["action"]) and torch.equal(a["truncated"], b["truncated"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6, msg=k)
    assert [e[:2] for e in ep_a] == [e[:2] for e in ep_b]
    np.testing.assert_allclose([e[2] for e in ep_a], [e[2] for e in ep_b], rtol=1e-6)
    for p, q in zip(net_a, net_b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ended", [[False] * 4, [True, False, True, False], [True] * 4])
def test_reset_ended_restarts_exactly_the_copies_that_ended(ended):
    """None ended: the observations unchanged; some: those copies start afresh, the others keep state and
    observations; all: one vectorized reset. Either way the result is what VMAS now observes."""
    import torch

    from marl.env.vmas import make, reset_ended

    env = make("simple_spread", 4, tensors=True, n_agents=3, max_steps=50)
    env.reset(0)
    for _ in range(3):
        out = env.step({"agent": torch.randint(0, 5, (4, 3))})
    before = [o.clone() for o in env._obs]
    positions = env.env.agents[0].state.pos.clone()
    done = torch.tensor(ended)
    obs = reset_ended(env.env, done, before)
    observed = env.env.get_from_scenario(get_observations=True, get_rewards=False, get_infos=False, get_dones=False)[0]
    for o, now, old in zip(obs, observed, before):
        torch.testing.assert_close(o, now)
        torch.testing.assert_close(o[~done], old[~done])  # the copies that did not end are untouched
    assert env.env.steps.tolist() == [0.0 if e else 3.0 for e in ended]
    moved = (env.env.agents[0].state.pos != positions).any(-1)
    assert moved.tolist() == ended and out.done_envs.sum() == 0
