"""masked_cartpole: Gymnasium checks, the kept entries, CartPole's own dynamics and episode ends."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import envs  # noqa: F401  (registers MaskedCartPole-v0)
from envs import masked_cartpole


def test_check_env_passes_without_warnings(check_env_without_warnings) -> None:
    check_env_without_warnings(gymnasium.make("MaskedCartPole-v0", render_mode="rgb_array").unwrapped)


def test_observation_is_positions_of_the_same_cartpole_episode() -> None:
    masked = masked_cartpole.env()
    full = gymnasium.make("CartPole-v1")
    assert masked.observation_space.shape == (2,) and masked.observation_space.dtype == np.float32
    np.testing.assert_allclose(masked.observation_space.high, [4.8, 12 * 2 * np.pi / 360 * 2], rtol=1e-6)
    obs, _ = masked.reset(seed=3)
    ref, _ = full.reset(seed=3)
    np.testing.assert_array_equal(obs, ref[[0, 2]])
    rng = np.random.default_rng(0)
    for _ in range(200):
        action = int(rng.integers(2))
        obs, reward, term, trunc, _ = masked.step(action)
        ref, ref_reward, ref_term, ref_trunc, _ = full.step(action)
        np.testing.assert_array_equal(obs, ref[[0, 2]])
        assert (reward, term, trunc) == (ref_reward, ref_term, ref_trunc)
        if term or trunc:
            break
    assert term and not trunc  # random pushes drop the pole well before 200 steps


def test_time_limit_truncates() -> None:
    env = masked_cartpole.env(max_episode_steps=3)
    env.reset(seed=0)
    ends = [env.step(i % 2)[2:4] for i in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]


def test_render_and_bad_arguments() -> None:
    env = masked_cartpole.env(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (400, 600, 3)
    with pytest.raises(ValueError, match="max_episode_steps"):
        masked_cartpole.env(max_episode_steps=0)
    with pytest.raises(ValueError, match="render_mode"):
        masked_cartpole.env(render_mode="human")
