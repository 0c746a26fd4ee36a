"""cue_recall: PettingZoo API and seeding, observations and rewards by hand, the feed-forward bound."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from envs import cue_recall


def test_pettingzoo_parallel_api() -> None:
    parallel_api_test(cue_recall.parallel_env(n_agents=3), num_cycles=50)


def test_pettingzoo_parallel_seed() -> None:
    parallel_seed_test(lambda: cue_recall.parallel_env(n_agents=2, delay=2), num_cycles=30)


def test_same_seed_same_episodes(assert_same_episodes) -> None:
    assert_same_episodes(lambda: cue_recall.parallel_env(n_agents=2, n_cues=8, delay=2), 0)


def test_episode_by_hand() -> None:
    env = cue_recall.parallel_env(n_agents=2, n_cues=3, delay=2)
    obs, _ = env.reset(seed=5)
    cues = {a: int(np.argmax(o[:3])) for a, o in obs.items()}
    for a, o in obs.items():
        assert o.sum() == 1.0 and o[-1] == 0.0  # one-hot cue, no query flag
    obs, rew, term, trunc, _ = env.step({a: 0 for a in env.agents})
    assert all(not o.any() for o in obs.values())  # blank
    assert rew == {"agent_0": 0.0, "agent_1": 0.0} and not any(term.values())
    obs, rew, term, trunc, _ = env.step({a: 0 for a in env.agents})
    query = np.array([0, 0, 0, 1], np.float32)
    assert all(np.array_equal(o, query) for o in obs.values())
    answers = {"agent_0": cues["agent_0"], "agent_1": (cues["agent_1"] + 1) % 3}
    _, rew, term, trunc, infos = env.step(answers)
    assert rew == {"agent_0": 1.0, "agent_1": 0.0}
    assert all(term.values()) and not any(trunc.values()) and env.agents == []
    assert infos["agent_0"]["is_success"] and not infos["agent_1"]["is_success"]


@pytest.mark.parametrize("n_cues", [2, 4])
def test_memoryless_policy_is_at_chance(n_cues: int) -> None:
    """Any map from the current observation to an answer earns 1/n_cues per agent on average (here: the best
    fixed answer per observation, over 4000 episodes, within 4 standard errors)."""
    env = cue_recall.parallel_env(n_agents=1, n_cues=n_cues, delay=3)
    rng = np.random.default_rng(0)
    table = rng.integers(0, n_cues, size=(n_cues + 2,))  # an arbitrary memoryless policy: observation -> answer

    def key(o: np.ndarray) -> int:
        return int(np.argmax(o)) if o.any() else n_cues + 1

    total, episodes = 0.0, 4000
    obs, _ = env.reset(seed=1)
    for _ in range(episodes):
        while True:
            obs, rew, term, _, _ = env.step({"agent_0": table[key(obs["agent_0"])]})
            if term["agent_0"]:
                total += rew["agent_0"]
                obs, _ = env.reset()
                break
    p = 1 / n_cues
    assert abs(total / episodes - p) < 4 * np.sqrt(p * (1 - p) / episodes)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="delay"):
        cue_recall.parallel_env(delay=0)
    with pytest.raises(ValueError, match="n_cues"):
        cue_recall.parallel_env(n_cues=1)
