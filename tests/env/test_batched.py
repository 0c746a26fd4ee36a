"""The batched backend (marl/env/batched.py): a batched simulation behind the vector-env interface."""

import numpy as np
import pytest

from marl.config import ConfigError, load_config
from marl.env.batched import BatchedVectorEnv, batched_factory
from marl.env.make import env_factory, env_spec, probe_spec, vector_env

SPREAD = "configs/simple_spread_ppo.yaml"


@pytest.mark.parametrize("env_id, kwargs", [("mpe2.simple_spread_v3", {"N": 3}), ("mpe2.simple_adversary_v3", {}),
                                            ("mpe2.simple_speaker_listener_v4", {"continuous_actions": True})])
def test_spec_equals_the_mpe2_adapters(env_id, kwargs):
    """Same groups, agents, spaces and (central critic) state shape as the mpe2 env through the adapters."""
    for critic in ("local", "central"):
        overrides = [f"env.id={env_id}", f"env.kwargs={kwargs}".replace("'", ""), f"model.critic={critic}"]
        mpe2 = probe_spec(env_factory(load_config(SPREAD, overrides)))
        batched = env_spec(load_config(SPREAD, [*overrides, "env.backend=batched"]))
        assert batched.agents == mpe2.agents and batched.state_shape == mpe2.state_shape
        assert [(g.name, g.agents, g.obs_space, g.action_space) for g in batched.groups] == \
            [(g.name, g.agents, g.obs_space, g.action_space) for g in mpe2.groups]


def test_steps_episodes_and_truncation_follow_the_simulation():
    """Rewards add up to the episode returns, every copy truncates at max_cycles with its real final observation
    (final_obs) and the global state of it (final_state), and the next observation is a fresh start."""
    cfg = load_config(SPREAD, ["env.backend=batched", "env.kwargs={N: 2, max_cycles: 5}", "model.critic=central"])
    env = vector_env(cfg, 3)
    obs, state = env.reset(7)
    rng = np.random.default_rng(0)
    totals = np.zeros((3, 2))
    for t in range(5):
        step = env.step({"agent": rng.integers(0, 5, (3, 2))})
        tr = step.transition["agent"]
        totals += tr.reward
        assert step.obs["agent"].alive.all() and not tr.terminated.any()
        if t < 4:
            assert not tr.truncated.any() and not step.episodes and not tr.final_obs.any()
    assert tr.truncated.all() and len(step.episodes) == 3
    for ep in step.episodes:
        assert ep.length == 5 and ep.info["truncated"] == 1.0
        np.testing.assert_allclose([ep.returns["agent_0"], ep.returns["agent_1"]], totals[ep.env_index], rtol=1e-6)
    assert not np.array_equal(tr.final_obs, step.obs["agent"].obs)  # the fresh start differs from the end
    np.testing.assert_array_equal(step.final_state, tr.final_obs.reshape(3, -1))  # state = every agent's obs
    np.testing.assert_array_equal(step.state, step.obs["agent"].obs.reshape(3, -1))


def test_snapshot_and_restore_continue_exactly():
    cfg = load_config(SPREAD, ["env.backend=batched", "env.kwargs={N: 3, max_cycles: 7}"])
    a, b = vector_env(cfg, 4), vector_env(cfg, 4)
    a.reset(1)
    rng = np.random.default_rng(1)
    actions = [{"agent": rng.integers(0, 5, (4, 3))} for _ in range(20)]
    for act in actions[:10]:
        a.step(act)
    obs, _ = b.restore(a.snapshot())
    np.testing.assert_array_equal(obs["agent"].obs, a.env.observe()["agent"])
    for act in actions[10:]:
        sa, sb = a.step(act), b.step(act)
        np.testing.assert_array_equal(sa.obs["agent"].obs, sb.obs["agent"].obs)
        np.testing.assert_array_equal(sa.transition["agent"].reward, sb.transition["agent"].reward)
        assert [(e.env_index, e.returns, e.length) for e in sa.episodes] == \
            [(e.env_index, e.returns, e.length) for e in sb.episodes]


@pytest.mark.parametrize("overrides, key", [
    (["env.id=CartPole-v1", "env.kwargs={}"], "env.id"),
    (["env.frame_stack=2"], "env.frame_stack"),
    (["env.groups={all: [agent_0, agent_1, agent_2]}"], "env.groups"),
])
def test_what_the_batched_backend_cannot_do_is_a_named_error(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        env_spec(load_config(SPREAD, ["env.backend=batched", *overrides]))


def test_batched_factory_refuses_rendering():
    with pytest.raises(ValueError, match="render_mode"):
        batched_factory("mpe2.simple_spread_v3", {"render_mode": "rgb_array"})


def test_a_batched_run_trains_evaluates_and_off_policy_too(tmp_path):
    from marl.api import train

    common = ["env.backend=batched", "env.num_envs=8", "log.progress=false", "log.tensorboard=false",
              "eval.episodes=4", "eval.num_envs=4", "checkpoint.interval=0"]
    ppo = train(load_config(SPREAD, [*common, "total_env_steps=1600", "algo.num_steps=100", "algo.num_minibatches=2",
                                     "eval.interval=800", f"run_dir={tmp_path / 'ppo'}"]))
    assert ppo["env_steps"] == 1600 and ppo["final_eval"]["episodes"] == 4 and len(ppo["eval_history"]) == 2
    dqn = train(load_config("configs/spread_dqn.yaml", [*common, "total_env_steps=800", "algo.learning_starts=200",
                                                        "algo.batch_size=32", "eval.interval=0",
                                                        f"run_dir={tmp_path / 'dqn'}"]))
    assert dqn["env_steps"] == 800 and np.isfinite(dqn["final_eval"]["ep_return"])
    assert isinstance(vector_env(load_config(SPREAD, common), 2), BatchedVectorEnv)
