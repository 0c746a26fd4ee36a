"""envs._common: argument checks, the parallel-env plumbing and the goal-env helpers."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from envs import _common


class TwoSpacesEnv(_common.IndexedParallelEnv):
    """The smallest subclass: three agents, one shared observation space, own action spaces."""

    def __init__(self) -> None:
        obs = gymnasium.spaces.Box(0.0, 1.0, (2,), np.float32)
        super().__init__(3, [obs] * 3, [gymnasium.spaces.Discrete(4) for _ in range(3)])


# ---------------------------------------------------------------------- argument checks
def test_check_render_mode() -> None:
    _common.check_render_mode(None)
    _common.check_render_mode("rgb_array")
    with pytest.raises(ValueError, match="render_mode='human': only None and 'rgb_array'"):
        _common.check_render_mode("human")


def test_check_n_agents_bounds_are_inclusive() -> None:
    for n in (1, 4, 6):
        _common.check_n_agents(n, 6)
    for n in (0, 7, -1):
        with pytest.raises(ValueError, match=rf"n_agents={n} must be in \[1, 6\]"):
            _common.check_n_agents(n, 6)


def test_parallel_metadata() -> None:
    assert _common.parallel_metadata("x_v0", render_fps=7) == {
        "name": "x_v0",
        "render_modes": ["rgb_array"],
        "render_fps": 7,
        "is_parallelizable": True,
    }


def test_discrete_action() -> None:
    value = _common.discrete_action(np.int64(3), "agent_1", 4)
    assert value == 3 and type(value) is int
    for bad in (-1, 4):
        with pytest.raises(ValueError, match=rf"action {bad} of 'agent_1' is outside Discrete\(4\)"):
            _common.discrete_action(bad, "agent_1", 4)


# ---------------------------------------------------------------------- parallel envs
def test_agents_and_spaces() -> None:
    env = TwoSpacesEnv()
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"] and env.agents == []
    assert env.observation_space("agent_0") is env.observation_space("agent_2")
    assert env.action_space("agent_0") is not env.action_space("agent_1")
    # own action spaces: seeding one agent's sampler leaves another's draws unchanged
    env.action_space("agent_1").seed(5)
    first = [env.action_space("agent_1").sample() for _ in range(8)]
    env.action_space("agent_1").seed(5)
    env.action_space("agent_0").seed(0)
    assert [env.action_space("agent_1").sample() for _ in range(8)] == first
    with pytest.raises(ValueError, match="one observation and one action space per agent"):
        _common.IndexedParallelEnv(2, [env.observation_space("agent_0")], [])


def test_reseed_replaces_the_generator_only_for_a_seed() -> None:
    env = TwoSpacesEnv()
    env._reseed(3)
    draws = env.np_random.random(4)
    kept = env.np_random
    env._reseed(None)
    assert env.np_random is kept
    env._reseed(3)
    np.testing.assert_array_equal(env.np_random.random(4), draws)
    np.testing.assert_array_equal(draws, np.random.default_rng(3).random(4))


def test_live_actions_in_order_and_lazy_on_a_missing_one() -> None:
    env = TwoSpacesEnv()
    with pytest.raises(RuntimeError, match="call reset"):
        env._require_running()
    env.agents = list(env.possible_agents)
    env._require_running()
    actions = {"agent_2": 1, "agent_0": 3}
    assert list(env._live_actions(actions, [0, 2])) == [(0, "agent_0", 3), (2, "agent_2", 1)]
    seen = []
    with pytest.raises(ValueError, match="no action for live agent 'agent_1'"):
        for i, _, _ in env._live_actions(actions, [0, 1, 2]):
            seen.append(i)
    assert seen == [0]  # the agents before the missing one were handed out


def test_agents_where_keeps_agent_order() -> None:
    env = TwoSpacesEnv()
    assert env._agents_where(np.array([True, False, True])) == ["agent_0", "agent_2"]
    assert env._agents_where(np.zeros(3, dtype=bool)) == []


# ---------------------------------------------------------------------- goal envs
def test_goal_space_and_obs() -> None:
    observation = gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)
    goal = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    space = _common.goal_space(observation, goal)
    assert set(space.spaces) == {"observation", "achieved_goal", "desired_goal"}
    assert space["observation"] is observation
    assert space["achieved_goal"] is goal and space["desired_goal"] is goal
    position = np.array([0.5, -0.5], dtype=np.float32)
    target = np.array([0.0, 0.25], dtype=np.float32)
    obs = _common.goal_obs(np.concatenate([position, target]), position, target)
    assert obs in space
    position[:] = 9.0  # the env moves on; the observation it returned must not
    np.testing.assert_array_equal(obs["achieved_goal"], [0.5, -0.5])
    assert obs["achieved_goal"].dtype == np.float32


def test_success_terminated_truth_table() -> None:
    rewards = np.array([[0.0, -1.0], [-1.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(_common.success_terminated(rewards, True), [[True, False], [False, True]])
    np.testing.assert_array_equal(_common.success_terminated(rewards, False), np.zeros((2, 2), dtype=bool))
    assert _common.success_terminated(np.float32(0.0), True)


@pytest.mark.parametrize(
    ("success", "steps", "terminate_on_success", "expected"),
    [
        (False, 3, True, (False, False)),  # neither
        (True, 3, True, (True, False)),  # success ends it
        (True, 3, False, (False, False)),  # success does not end it
        (False, 5, True, (False, True)),  # time limit
        (True, 5, True, (True, False)),  # success at the time limit: terminated, not truncated
        (True, 6, False, (False, True)),  # past the limit
    ],
)
def test_end_flags(success: bool, steps: int, terminate_on_success: bool, expected: tuple) -> None:
    flags = _common.end_flags(success, steps, 5, terminate_on_success)
    assert flags == expected and all(type(f) is bool for f in flags)


def test_pale_goes_halfway_to_white() -> None:
    assert _common.pale((40, 90, 220)) == (147, 172, 237)
    assert _common.pale((0, 255, 1)) == (127, 255, 128)
