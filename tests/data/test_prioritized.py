"""Prioritized replay: priorities, IS weights by hand, beta schedule, sampling distribution."""

import numpy as np
import pytest

from marl.data.prioritized import PrioritizedReplayBuffer, importance_weights, per_beta_at, td_priority
from marl.data.replay import ReplayBuffer


def schema(n_agents=2):
    return {
        "obs": ((n_agents, 2), np.float32),
        "next_obs": ((n_agents, 2), np.float32),
        "action": ((n_agents,), np.int64),
        "reward": ((n_agents,), np.float32),
        "terminated": ((n_agents,), np.bool_),
        "truncated": ((n_agents,), np.bool_),
        "alive": ((n_agents,), np.bool_),
        "next_alive": ((n_agents,), np.bool_),
    }


def rows(n, n_agents=2, alive=None):
    out = {name: np.zeros((n, *shape), dtype) for name, (shape, dtype) in schema(n_agents).items()}
    out["alive"] = np.ones((n, n_agents), bool) if alive is None else np.asarray(alive)
    return out


def test_per_beta_schedule_is_linear_from_beta0_to_one():
    assert per_beta_at(0.0, 0.4) == 0.4
    assert per_beta_at(0.5, 0.4) == pytest.approx(0.7)
    assert per_beta_at(1.0, 0.4) == 1.0
    assert per_beta_at(1.7, 0.4) == 1.0 and per_beta_at(-0.2, 0.4) == 0.4
    betas = [per_beta_at(p, 0.2) for p in np.linspace(0, 1, 11)]
    assert np.allclose(np.diff(betas), 0.08)


def test_new_rows_enter_at_the_max_priority():
    buffer = PrioritizedReplayBuffer(schema(), capacity=8, n_envs=2, per_alpha=0.5, per_eps=1e-6)
    first = buffer.add(rows(2))
    assert buffer.priorities(first).tolist() == [1.0, 1.0]  # nothing seen yet: 1
    buffer.update_priorities(first, np.array([8.0, 0.25]))
    expected_max = (8.0 + 1e-6) ** 0.5
    assert buffer.priorities(first) == pytest.approx([expected_max, (0.25 + 1e-6) ** 0.5])
    second = buffer.add(rows(2))
    assert buffer.priorities(second) == pytest.approx([expected_max, expected_max])
    buffer.update_priorities(second, np.array([0.0, 0.0]))
    third = buffer.add(rows(2))  # the max is the largest ever assigned, not the current one
    assert buffer.priorities(third) == pytest.approx([expected_max, expected_max])
    assert np.all(buffer.priorities(np.arange(6, 8)) == 0.0)  # unwritten rows: never drawn


def test_importance_weights_match_the_formula_by_hand():
    rng = np.random.default_rng(0)
    buffer = PrioritizedReplayBuffer(schema(), capacity=10, n_envs=2, per_alpha=0.7)
    for _ in range(3):
        buffer.add(rows(2))  # 6 of 10 rows stored
    stored = np.arange(6)
    td = np.array([0.1, 2.0, 0.5, 3.0, 0.05, 1.0])
    buffer.update_priorities(stored, td)
    p = (np.abs(td) + 1e-6) ** 0.7
    assert buffer.priorities(stored) == pytest.approx(p)
    beta = 0.6
    sample = buffer.sample(64, rng, beta=beta)
    n = 6
    prob = p / p.sum()
    w_all = (n * prob) ** -beta
    expected = w_all[sample.indices] / w_all.max()  # max over the whole buffer
    np.testing.assert_allclose(sample.weights, expected, rtol=1e-6)
    assert sample.weights.dtype == np.float32 and sample.weights.max() <= 1.0
    assert importance_weights(p[:2], p.min(), 1.0) == pytest.approx(p.min() / p[:2])


def test_td_priority_formula():
    assert td_priority(np.array([-2.0, 0.0]), 0.5, 0.25) == pytest.approx([1.5, 0.5])


def stratified_frequencies(buffer, rng, draws=120_000, batch=256):
    counts = np.zeros(buffer.capacity)
    for _ in range(draws // batch):
        counts += np.bincount(buffer.sample(batch, rng).indices, minlength=buffer.capacity)
    return counts / counts.sum()


def test_sampling_frequencies_follow_priorities_and_their_updates():
    rng = np.random.default_rng(1)
    buffer = PrioritizedReplayBuffer(schema(), capacity=12, n_envs=3, per_alpha=1.0, per_eps=1e-9)
    for _ in range(3):
        buffer.add(rows(3))  # 9 rows, 3 unwritten
    freq = stratified_frequencies(buffer, rng)
    assert np.all(freq[9:] == 0.0)
    np.testing.assert_allclose(freq[:9], 1 / 9, rtol=0.05)  # all at the same (max) priority
    td = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 30.0])
    buffer.update_priorities(np.arange(9), td)
    freq = stratified_frequencies(buffer, rng)
    np.testing.assert_allclose(freq[:9], td / td.sum(), rtol=0.05)
    buffer.update_priorities([8], [1.0])  # the favourite is demoted
    freq = stratified_frequencies(buffer, rng)
    td[8] = 1.0
    np.testing.assert_allclose(freq[:9], td / td.sum(), rtol=0.05)


def test_stratified_sampling_draws_one_per_segment():
    rng = np.random.default_rng(2)
    buffer = PrioritizedReplayBuffer(schema(), capacity=64, n_envs=1)
    for _ in range(64):
        buffer.add(rows(1))
    sample = buffer.sample(64, rng)  # equal priorities, 64 segments over 64 rows: each row once
    assert sorted(sample.indices.tolist()) == list(range(64))


def test_per_agent_td_errors_are_averaged_over_alive_agents():
    buffer = PrioritizedReplayBuffer(schema(n_agents=3), capacity=4, n_envs=2, per_alpha=1.0, per_eps=1e-6)
    idx = buffer.add(rows(2, n_agents=3, alive=[[True, True, False], [False, True, False]]))
    buffer.update_priorities(idx, np.array([[1.0, -3.0, 50.0], [9.0, 0.5, 9.0]]))
    assert buffer.priorities(idx) == pytest.approx([2.0 + 1e-6, 0.5 + 1e-6])


def test_repeated_indices_in_an_update_last_one_wins():
    buffer = PrioritizedReplayBuffer(schema(), capacity=4, n_envs=1, per_alpha=1.0, per_eps=1e-6)
    for _ in range(4):
        buffer.add(rows(1))
    buffer.update_priorities(np.array([2, 2, 1]), np.array([5.0, 7.0, 3.0]))
    assert buffer.priorities([1, 2]) == pytest.approx([3.0 + 1e-6, 7.0 + 1e-6])
    assert buffer.prioritized_sampler.tree.total == pytest.approx(1.0 + 1.0 + 10.0 + 2e-6)


def test_nstep_targets_work_with_prioritized_sampling():
    rng = np.random.default_rng(3)
    buffer = PrioritizedReplayBuffer(schema(n_agents=1), capacity=6, n_envs=1, n_step=3, gamma=0.5)
    for step in range(6):
        row = rows(1, n_agents=1)
        row["reward"] = np.array([[float(step)]], np.float32)
        buffer.add(row)
    sample = buffer.sample(32, rng)
    t = sample.indices
    expected = np.where(t <= 3, t + 0.5 * (t + 1) + 0.25 * (t + 2), np.where(t == 4, 4 + 0.5 * 5, 5.0))
    np.testing.assert_allclose(sample.reward_n[:, 0], expected)


def test_uniform_buffer_ignores_priority_updates():
    buffer = ReplayBuffer(schema(), capacity=4, n_envs=2)
    idx = buffer.add(rows(2))
    buffer.update_priorities(idx, np.array([1.0, 2.0]))  # a no-op, so trainers can call it always
    assert np.all(buffer.sample(8, np.random.default_rng(0)).weights == 1.0)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="per_alpha"):
        PrioritizedReplayBuffer(schema(), capacity=4, n_envs=1, per_alpha=1.5)
    with pytest.raises(ValueError, match="per_eps"):
        PrioritizedReplayBuffer(schema(), capacity=4, n_envs=1, per_eps=0.0)
    buffer = PrioritizedReplayBuffer(schema(), capacity=4, n_envs=1)
    buffer.add(rows(1))
    with pytest.raises(ValueError, match="beta"):
        buffer.sample(2, np.random.default_rng(0), beta=2.0)
    with pytest.raises(ValueError, match="one TD error per index"):
        buffer.update_priorities([0, 0], np.ones(3))


def filled_buffer(seed=0, capacity=24, n_envs=3):
    """A prioritized buffer with rows written, sampled and re-prioritized."""
    rng = np.random.default_rng(seed)
    buffer = PrioritizedReplayBuffer(
        schema(), capacity=capacity, n_envs=n_envs, n_step=2, gamma=0.9, per_alpha=0.7
    )
    for step in range(6):
        row = rows(n_envs)
        row["obs"][:] = step
        row["reward"][:] = rng.standard_normal((n_envs, 2))
        buffer.add(row)
    sample = buffer.sample(8, rng, beta=0.5)
    buffer.update_priorities(sample.indices, rng.exponential(2.0, 8))
    return buffer


def assert_same_draws(a, b, seed, beta=0.6):
    sa = a.sample(32, np.random.default_rng(seed), beta=beta)
    sb = b.sample(32, np.random.default_rng(seed), beta=beta)
    np.testing.assert_array_equal(sa.indices, sb.indices)
    np.testing.assert_array_equal(sa.weights, sb.weights)
    np.testing.assert_array_equal(sa.reward_n, sb.reward_n)
    return sa


def test_state_round_trip_draws_the_same_rows_and_continues_alike():
    a = filled_buffer()
    state = a.state_dict()
    assert state["priorities"].shape == (24,) and state["priorities"].dtype == np.float64
    assert state["max_priority"] == a.prioritized_sampler.max_priority > 1.0
    b = PrioritizedReplayBuffer(schema(), capacity=24, n_envs=3, n_step=2, gamma=0.9, per_alpha=0.7)
    b.load_state_dict(state)
    np.testing.assert_array_equal(b.priorities(np.arange(24)), a.priorities(np.arange(24)))
    assert b.prioritized_sampler.tree.min == a.prioritized_sampler.tree.min
    sample = assert_same_draws(a, b, seed=3)
    td = np.linspace(0.1, 5.0, 32)
    a.update_priorities(sample.indices, td)
    b.update_priorities(sample.indices, td)
    a.add(rows(3))  # enters at the restored max priority
    b.add(rows(3))
    assert_same_draws(a, b, seed=4)
    assert not np.array_equal(state["priorities"], a.priorities(np.arange(24)))  # the state is a copy


def test_a_prioritized_state_that_does_not_fit_is_refused_and_changes_nothing():
    target = filled_buffer(seed=1)
    sampler = target.prioritized_sampler
    before = target.priorities(np.arange(24)), target.storage.pos.copy(), sampler.max_priority
    good = filled_buffer(seed=2).state_dict()
    for broken, match in [
        ({k: v for k, v in good.items() if k != "priorities"}, r"lacks \['priorities'\]"),
        ({**good, "priorities": good["priorities"][:-1]}, r"shape \(23,\)"),
        ({**good, "priorities": np.where(np.arange(24) == 5, np.nan, good["priorities"])}, "finite and >= 0"),
        ({**good, "max_priority": 0.0}, "max_priority"),
    ]:
        with pytest.raises(ValueError, match=match):
            target.load_state_dict(broken)
        np.testing.assert_array_equal(target.priorities(np.arange(24)), before[0])
        np.testing.assert_array_equal(target.storage.pos, before[1])
        assert sampler.max_priority == before[2]


def test_importance_weights_use_the_new_minimum_after_it_is_raised():
    rng = np.random.default_rng(5)
    buffer = PrioritizedReplayBuffer(schema(), capacity=4, n_envs=1, per_alpha=1.0, per_eps=1e-9)
    for _ in range(4):
        buffer.add(rows(1))
    buffer.update_priorities(np.arange(4), np.array([0.5, 2.0, 4.0, 8.0]))
    buffer.update_priorities([0], [3.0])  # the smallest row is raised: the minimum is now 2
    sample = buffer.sample(64, rng, beta=1.0)
    p = np.array([3.0, 2.0, 4.0, 8.0]) + 1e-9
    np.testing.assert_allclose(sample.weights, p.min() / p[sample.indices], rtol=1e-6)
    assert sample.weights.max() == pytest.approx(1.0)  # row 1, the new minimum, is drawn (p = 2/17 per draw)


def test_restoring_rebuilds_the_sum_tree_once(monkeypatch):
    """The buffer's own state_dict carries the sampler's state; loading rebuilds the tree exactly once."""
    from marl.data.sum_tree import SumTree

    a = filled_buffer(seed=3)
    state = a.state_dict()
    assert set(state) == {"fields", "pos", "size", "count", "priorities", "max_priority"}
    b = PrioritizedReplayBuffer(schema(), capacity=24, n_envs=3, n_step=2, gamma=0.9, per_alpha=0.7)
    rebuilt = []
    set_leaves = SumTree.set_leaves
    monkeypatch.setattr(SumTree, "set_leaves", lambda tree, p: rebuilt.append(1) or set_leaves(tree, p))
    b.load_state_dict(state)
    assert len(rebuilt) == 1
    assert_same_draws(a, b, seed=9)
    with pytest.raises(ValueError, match="capacity, n_envs or the schema differ"):
        PrioritizedReplayBuffer(schema(), capacity=30, n_envs=3, n_step=2).load_state_dict(state)
    assert len(rebuilt) == 1  # refused before the tree is touched
