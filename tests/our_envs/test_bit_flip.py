"""bit_flip: Gymnasium checks, HER reward convention, vectorized reward, horizon and termination."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import envs  # noqa: F401  (registers BitFlip-v0)
from envs import bit_flip


@pytest.mark.parametrize(
    "kwargs", [{}, {"render_mode": "rgb_array"}, {"n_bits": 3, "terminate_on_success": True}]
)
def test_check_env_passes_without_warnings(kwargs: dict, check_env_without_warnings) -> None:
    check_env_without_warnings(gymnasium.make("BitFlip-v0", **kwargs).unwrapped)


def test_module_factory_builds_the_env() -> None:
    env = bit_flip.env(n_bits=4)
    assert isinstance(env, bit_flip.BitFlipEnv) and env.action_space.n == 4 and env.max_steps == 4


def test_compute_reward_vectorized_equals_per_sample() -> None:
    rng = np.random.default_rng(0)
    achieved = rng.integers(0, 2, (200, 6)).astype(np.float32)
    desired = rng.integers(0, 2, (200, 6)).astype(np.float32)
    desired[::3] = achieved[::3]  # a third of the rows match exactly
    env = bit_flip.env(n_bits=6)
    batch = env.compute_reward(achieved, desired, {})
    per_sample = np.array(
        [0.0 if np.array_equal(a, d) else -1.0 for a, d in zip(achieved, desired, strict=True)]
    )
    assert batch.shape == (200,) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, per_sample)
    np.testing.assert_array_equal(bit_flip.compute_reward(achieved, desired, None), per_sample)
    # any leading shape, and single goals
    np.testing.assert_array_equal(
        env.compute_reward(achieved.reshape(20, 10, 6), desired.reshape(20, 10, 6), {}),
        per_sample.reshape(20, 10),
    )
    assert env.compute_reward(achieved[0], achieved[0], {}) == 0.0
    assert not env.compute_terminated(achieved, achieved, {}).any()
    assert (
        bit_flip.env(n_bits=6, terminate_on_success=True).compute_terminated(achieved, desired, {}).sum()
        == (per_sample == 0).sum()
    )


def test_step_flips_one_bit_and_reward_matches_compute_reward() -> None:
    env = bit_flip.env(n_bits=8)
    obs, info = env.reset(seed=0)
    assert not info["is_success"]
    assert not np.array_equal(obs["achieved_goal"], obs["desired_goal"])
    rng = np.random.default_rng(0)
    for t in range(8):
        action = int(rng.integers(8))
        new_obs, reward, terminated, truncated, info = env.step(action)
        changed = np.flatnonzero(new_obs["observation"] != obs["observation"])
        np.testing.assert_array_equal(changed, [action])
        np.testing.assert_array_equal(new_obs["observation"], new_obs["achieved_goal"])
        np.testing.assert_array_equal(new_obs["desired_goal"], obs["desired_goal"])
        assert reward == env.compute_reward(new_obs["achieved_goal"], new_obs["desired_goal"], info)
        assert info["is_success"] == (reward == 0.0)
        assert terminated is False and truncated is (t == 7)
        obs = new_obs


def solve(env: bit_flip.BitFlipEnv, obs: dict) -> list[tuple[float, bool, bool, bool]]:
    """Flip exactly the differing bits in order; ``(reward, terminated, truncated, success)`` per step."""
    out = []
    for bit in np.flatnonzero(obs["achieved_goal"] != obs["desired_goal"]):
        _, reward, terminated, truncated, info = env.step(int(bit))
        out.append((reward, terminated, truncated, info["is_success"]))
    return out


def test_fixed_horizon_without_termination_by_default() -> None:
    env = bit_flip.env(n_bits=10)
    obs, _ = env.reset(seed=4)
    steps = solve(env, obs)
    assert [s[0] for s in steps] == [-1.0] * (len(steps) - 1) + [0.0]
    assert not any(s[1] for s in steps) and steps[-1][3]
    # success does not end the episode; the horizon (n_bits steps) does
    truncated, n = False, len(steps)
    while not truncated:
        _, _, terminated, truncated, _ = env.step(0)
        n += 1
        assert not terminated
    assert n == 10


def test_terminate_on_success() -> None:
    env = bit_flip.env(n_bits=10, terminate_on_success=True)
    obs, _ = env.reset(seed=4)
    steps = solve(env, obs)
    assert steps[-1] == (0.0, True, False, True)
    assert not any(s[1] for s in steps[:-1])


def test_goal_always_differs_from_start_and_one_bit_works() -> None:
    env = bit_flip.env(n_bits=2)
    env.reset(seed=0)
    for _ in range(50):
        obs, _ = env.reset()
        assert not np.array_equal(obs["achieved_goal"], obs["desired_goal"])
    env = bit_flip.env(n_bits=1)
    obs, _ = env.reset(seed=0)
    _, reward, _, truncated, info = env.step(0)
    assert reward == 0.0 and truncated and info["is_success"]


@pytest.mark.parametrize("seed", [0, 42])
def test_same_seed_same_episode(seed: int, assert_same_gym_episodes) -> None:
    assert_same_gym_episodes(lambda: bit_flip.env(n_bits=6), seed, n_steps=6)


def test_render_shows_bits_and_goal() -> None:
    env = bit_flip.env(n_bits=5, render_mode="rgb_array")
    obs, _ = env.reset(seed=1)
    image = env.render()
    assert image.dtype == np.uint8 and image.shape == (32, 80, 3)
    centres = image[8::16, 8::16, 0]  # one pixel in the middle of every cell
    np.testing.assert_array_equal(centres, np.stack([obs["observation"], obs["desired_goal"]]) * 255)
    assert bit_flip.env().render() is None


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="n_bits"):
        bit_flip.env(n_bits=0)
    env = bit_flip.env(n_bits=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="Discrete"):
        env.step(3)
