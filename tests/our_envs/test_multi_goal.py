"""multi_goal: PettingZoo API, seeding, per-agent goals, vectorized reward, removal on success."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from envs import multi_goal


def steer(env: multi_goal.MultiGoalEnv, obs: dict) -> dict[str, np.ndarray]:
    """Scripted controller: full speed towards the own goal, stopping on it."""
    return {
        a: np.clip((obs[a]["desired_goal"] - obs[a]["achieved_goal"]) / env.max_speed, -1, 1).astype(
            np.float32
        )
        for a in env.agents
    }


@pytest.mark.parametrize("terminate_on_success", [False, True])
def test_pettingzoo_parallel_api(terminate_on_success: bool) -> None:
    parallel_api_test(
        multi_goal.parallel_env(n_agents=3, terminate_on_success=terminate_on_success), num_cycles=100
    )


def test_pettingzoo_parallel_seed() -> None:
    parallel_seed_test(lambda: multi_goal.parallel_env(n_agents=3), num_cycles=50)


@pytest.mark.parametrize("seed", [0, 42])
def test_same_seed_same_episode(seed: int, assert_same_episodes) -> None:
    assert_same_episodes(lambda: multi_goal.parallel_env(n_agents=3), seed, n_steps=60)


def test_compute_reward_module_method_and_loop_agree() -> None:
    rng = np.random.default_rng(0)
    achieved = rng.uniform(-1, 1, (64, 3, 2)).astype(np.float32)  # [B, A, 2]
    desired = (achieved + rng.normal(0.0, 0.06, (64, 3, 2))).astype(np.float32)
    loop = np.array(
        [
            [
                0.0 if np.linalg.norm(achieved[b, a].astype(np.float64) - desired[b, a]) <= 0.05 else -1.0
                for a in range(3)
            ]
            for b in range(64)
        ]
    )
    assert 0 < (loop == 0).sum() < loop.size
    env = multi_goal.parallel_env(n_agents=3)
    np.testing.assert_array_equal(multi_goal.compute_reward(achieved, desired, None), loop)
    np.testing.assert_array_equal(env.compute_reward(achieved, desired, {}), loop)
    np.testing.assert_array_equal(
        env.compute_reward(achieved.reshape(-1, 2), desired.reshape(-1, 2), {}), loop.ravel()
    )
    assert not env.compute_terminated(achieved, achieved, {}).any()


def test_observation_layout_and_step_rewards() -> None:
    env = multi_goal.parallel_env(n_agents=3)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        positions = np.stack([obs[a]["achieved_goal"] for a in env.possible_agents])
        for i, a in enumerate(env.possible_agents):
            others = np.delete(positions, i, axis=0)
            np.testing.assert_array_equal(
                obs[a]["observation"], np.concatenate([positions[i], others.ravel()])
            )
            assert obs[a] in env.observation_space(a)
        actions = {a: rng.uniform(-1, 1, 2).astype(np.float32) for a in env.agents}
        new_obs, rewards, _, _, infos = env.step(actions)
        for a in env.possible_agents:
            expected = np.clip(obs[a]["achieved_goal"] + 0.1 * actions[a], -1, 1)
            np.testing.assert_allclose(new_obs[a]["achieved_goal"], expected, atol=1e-6)
            np.testing.assert_array_equal(new_obs[a]["desired_goal"], obs[a]["desired_goal"])
            assert rewards[a] == env.compute_reward(
                new_obs[a]["achieved_goal"], new_obs[a]["desired_goal"], None
            )
            assert infos[a]["is_success"] == (rewards[a] == 0.0)
        obs = new_obs


def test_scripted_agents_all_succeed_by_the_horizon() -> None:
    env = multi_goal.parallel_env(n_agents=4, max_cycles=50)
    obs, _ = env.reset(seed=5)
    for t in range(50):
        obs, rewards, terminated, truncated, infos = env.step(steer(env, obs))
        assert not any(terminated.values()) and all(truncated.values()) == (t == 49)
    assert rewards == dict.fromkeys(env.possible_agents, 0.0)
    assert all(i["is_success"] for i in infos.values()) and env.agents == []


def test_terminate_on_success_removes_each_agent_at_its_goal() -> None:
    env = multi_goal.parallel_env(n_agents=3, terminate_on_success=True)
    obs, _ = env.reset(seed=2)
    distances = {a: np.linalg.norm(obs[a]["desired_goal"] - obs[a]["achieved_goal"]) for a in env.agents}
    finished_at = {}
    t = 0
    while env.agents:
        t += 1
        acting = list(env.agents)
        obs, rewards, terminated, _, infos = env.step(steer(env, obs))
        assert set(rewards) == set(acting)
        for a in acting:
            assert terminated[a] == (rewards[a] == 0.0) == infos[a]["is_success"]
            if terminated[a]:
                finished_at[a] = t
                assert a not in env.agents
    assert set(finished_at) == set(env.possible_agents)
    # the farthest agent needs the most steps
    order = sorted(distances, key=distances.get)
    assert finished_at[order[0]] <= finished_at[order[-1]] and len(set(finished_at.values())) > 1


def test_render_rgb_array() -> None:
    env = multi_goal.parallel_env(n_agents=2, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    image = env.render()
    assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
    for i, a in enumerate(env.possible_agents):
        x, y = obs[a]["achieved_goal"]
        np.testing.assert_array_equal(
            image[min(int((1 - y) * 64), 127), min(int((x + 1) * 64), 127)], multi_goal.AGENT_COLOURS[i]
        )
    assert multi_goal.parallel_env().render() is None
