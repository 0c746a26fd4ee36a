"""goal_reach: Gymnasium checks, sparse vectorized reward, dynamics, horizon."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import envs  # noqa: F401  (registers GoalReach-v0)
from envs import goal_reach


@pytest.mark.parametrize("kwargs", [{}, {"render_mode": "rgb_array"}, {"terminate_on_success": True}])
def test_check_env_passes_without_warnings(kwargs: dict, check_env_without_warnings) -> None:
    check_env_without_warnings(gymnasium.make("GoalReach-v0", **kwargs).unwrapped)


def test_compute_reward_vectorized_equals_per_sample() -> None:
    rng = np.random.default_rng(0)
    achieved = rng.uniform(-1, 1, (300, 2)).astype(np.float32)
    desired = (achieved + rng.normal(0.0, 0.05, (300, 2))).astype(np.float32)
    env = goal_reach.env()
    batch = env.compute_reward(achieved, desired, {})
    per_sample = np.array(
        [
            0.0 if np.hypot(*(a.astype(np.float64) - d)) <= 0.05 else -1.0
            for a, d in zip(achieved, desired, strict=True)
        ]
    )
    assert batch.shape == (300,) and batch.dtype == np.float32
    assert 50 < (per_sample == 0).sum() < 250  # both outcomes are exercised
    np.testing.assert_array_equal(batch, per_sample)
    np.testing.assert_array_equal(goal_reach.compute_reward(achieved, desired, None), per_sample)
    # the threshold is inclusive and taken from the env
    assert goal_reach.compute_reward(np.zeros(2), np.array([0.05, 0.0])) == 0.0
    assert (
        goal_reach.env(distance_threshold=0.2).compute_reward(np.zeros(2), np.array([0.15, 0.0]), {}) == 0.0
    )


def test_scripted_controller_reaches_the_goal_and_rewards_match() -> None:
    env = goal_reach.env(max_steps=50)
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        rewards = []
        for _ in range(50):
            direction = (obs["desired_goal"] - obs["achieved_goal"]) / env.max_speed
            obs, reward, terminated, truncated, info = env.step(np.clip(direction, -1, 1).astype(np.float32))
            assert reward == env.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
            assert info["is_success"] == (reward == 0.0) and not terminated
            rewards.append(reward)
        assert truncated and rewards[-1] == 0.0  # 2.83 / 0.1 < 50 steps: always in time


def test_dynamics_velocity_clipping_and_walls() -> None:
    env = goal_reach.env(max_speed=0.1)
    obs, _ = env.reset(seed=0)
    start = obs["observation"].copy()
    obs, *_ = env.step(np.array([0.5, -0.25], dtype=np.float32))
    np.testing.assert_allclose(obs["observation"], start + [0.05, -0.025], atol=1e-6)
    before = obs["observation"].copy()
    obs, *_ = env.step(np.array([10.0, -10.0], dtype=np.float32))  # clipped to [1, -1]
    np.testing.assert_allclose(obs["observation"], np.clip(before + [0.1, -0.1], -1, 1), atol=1e-6)
    for _ in range(30):
        obs, *_ = env.step(np.array([1.0, 1.0], dtype=np.float32))
    np.testing.assert_array_equal(obs["observation"], [1.0, 1.0])


def test_terminate_on_success_and_start_apart_from_goal() -> None:
    env = goal_reach.env(terminate_on_success=True)
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        assert np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"]) > 0.05
    obs, _ = env.reset(seed=3)
    terminated = False
    while not terminated:
        direction = np.clip((obs["desired_goal"] - obs["achieved_goal"]) / env.max_speed, -1, 1)
        obs, reward, terminated, truncated, info = env.step(direction.astype(np.float32))
        assert not truncated
    assert reward == 0.0 and info["is_success"]


@pytest.mark.parametrize("seed", [0, 42])
def test_same_seed_same_episode(seed: int, assert_same_gym_episodes) -> None:
    assert_same_gym_episodes(goal_reach.env, seed, n_steps=20)


def test_render_draws_point_and_goal() -> None:
    env = goal_reach.env(render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    image = env.render()
    assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
    for point, colour in ((obs["achieved_goal"], (40, 90, 220)), (obs["desired_goal"], (60, 180, 80))):
        col = int((point[0] + 1) / 2 * 128)
        row = int((1 - point[1]) / 2 * 128)
        np.testing.assert_array_equal(image[min(row, 127), min(col, 127)], colour)
    assert goal_reach.env().render() is None


def test_move_clips_the_action_then_the_position() -> None:
    position = np.array([[0.0, 0.0], [0.95, -0.95], [0.5, 0.5]], dtype=np.float32)
    action = np.array([[0.5, -0.25], [1.0, -1.0], [-3.0, 2.0]], dtype=np.float32)
    moved = goal_reach.move(position, action, 0.1)
    # by hand: 0.1 * action clipped to [-1, 1], then the square's edges
    np.testing.assert_allclose(moved, [[0.05, -0.025], [1.0, -1.0], [0.4, 0.6]], atol=1e-6)
    assert moved.dtype == np.float32


def test_render_square_draws_goal_discs_under_points() -> None:
    goals = np.array([[0.0, 0.0], [-0.5, 0.5]])
    points = np.array([[0.0, 0.0], [0.5, -0.5]])
    image = goal_reach.render_square(goals, points, 0.1, [(0, 200, 0), (0, 0, 200)], [(9, 9, 9), (200, 0, 0)])
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    # (x, y) -> pixel (row, col) = ((1 - y) * 64, (x + 1) * 64); a 0.1 threshold is a 6.4-pixel disc
    assert tuple(image[64, 64]) == (9, 9, 9)  # the first point covers its own goal
    assert tuple(image[64, 64 + 5]) == (0, 200, 0)  # the goal disc around it
    assert tuple(image[32, 32]) == (0, 0, 200)  # second goal
    assert tuple(image[96, 96]) == (200, 0, 0)  # second point
    assert tuple(image[0, 0]) == (240, 240, 240)  # background


def test_check_point_args() -> None:
    goal_reach.check_point_args(0.05, 0.1)
    for threshold, speed in ((0.0, 0.1), (0.05, -0.1)):
        with pytest.raises(ValueError, match="must be > 0"):
            goal_reach.check_point_args(threshold, speed)
