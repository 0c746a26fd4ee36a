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
