"""Hindsight replay: relabelled goals come from the right rows, rewards are recomputed.

Every stored achieved goal encodes where it was achieved,
``code = 10000 * lane + 10 * step + agent``, so a relabelled goal tells which
row (lane, absolute step, agent) donated it.
"""

import numpy as np
import pytest

from marl.data.her import HerReplayBuffer
from marl.data.prioritized import PrioritizedSampler
from marl.data.replay import ReplayBuffer

N_AGENTS = 2
FAR_GOAL = 99_999.0  # the desired goal of every stored row: never achieved


def code(lane, step, agent):
    return 10_000 * lane + 10 * step + agent


def decode(value):
    value = int(round(value))
    return value // 10_000, (value % 10_000) // 10, value % 10


def compute_reward(achieved, desired, info):
    assert info is None and achieved.ndim == 2 and achieved.shape == desired.shape
    return -(np.abs(achieved - desired).max(axis=1) > 0.5).astype(np.float32)


SCHEMA = {
    "obs": ((N_AGENTS, 2), np.float32),  # [position marker, desired goal]
    "next_obs": ((N_AGENTS, 2), np.float32),
    "action": ((N_AGENTS,), np.int64),
    "reward": ((N_AGENTS,), np.float32),
    "terminated": ((N_AGENTS,), np.bool_),
    "truncated": ((N_AGENTS,), np.bool_),
    "alive": ((N_AGENTS,), np.bool_),
    "next_alive": ((N_AGENTS,), np.bool_),
    "achieved_goal": ((N_AGENTS, 1), np.float32),
    "next_achieved_goal": ((N_AGENTS, 1), np.float32),
}


def fill(buffer, steps, rng):
    """Random episodes in every lane; agent 1 sometimes dies early (terminated).

    Returns ``spans[(lane, agent)]``: list of ``[first, last]`` absolute steps of
    each trajectory (``last`` None while it runs).
    """
    n_envs = buffer.n_envs
    spans = {(e, a): [] for e in range(n_envs) for a in range(N_AGENTS)}
    remaining = rng.integers(3, 8, size=n_envs)
    death = np.full(n_envs, -1)
    alive = np.ones((n_envs, N_AGENTS), bool)
    for step in range(steps):
        batch = {name: np.zeros((n_envs, *shape), dtype) for name, (shape, dtype) in SCHEMA.items()}
        for e in range(n_envs):
            if remaining[e] == 0:  # reset
                remaining[e] = rng.integers(3, 8)
                death[e] = rng.integers(0, remaining[e]) if rng.random() < 0.5 else -1
                alive[e] = True
            remaining[e] -= 1
            for a in range(N_AGENTS):
                if not alive[e, a]:
                    continue
                if not spans[(e, a)] or spans[(e, a)][-1][1] is not None:
                    spans[(e, a)].append([step, None])
                dies = a == 1 and remaining[e] == death[e]
                ends = remaining[e] == 0
                batch["alive"][e, a] = True
                batch["obs"][e, a] = [code(e, step, a) + 0.25, FAR_GOAL]
                batch["next_obs"][e, a] = [code(e, step, a) + 0.5, FAR_GOAL]
                batch["achieved_goal"][e, a] = code(e, step, a) - 1
                batch["next_achieved_goal"][e, a] = code(e, step, a)
                batch["reward"][e, a] = -1.0
                batch["terminated"][e, a] = dies
                batch["truncated"][e, a] = ends and not dies
                batch["next_alive"][e, a] = not (dies or ends)
                if dies or ends:
                    spans[(e, a)][-1][1] = step
                    alive[e, a] = False
        buffer.add(batch)
    return spans


def span_of(spans, lane, agent, step, newest):
    for first, last in spans[(lane, agent)]:
        end = newest if last is None else last
        if first <= step <= end:
            return first, end
    raise AssertionError(f"step {step} of lane {lane} agent {agent} is in no trajectory")


def relabelled(sample):
    """``[B, A]`` agents whose goal was replaced, and the donor codes."""
    goal = sample.obs[:, :, 1]
    return (goal != FAR_GOAL) & sample.alive, goal


def make(strategy, capacity=60, n_envs=2, **kwargs):
    return HerReplayBuffer(
        SCHEMA,
        capacity,
        n_envs,
        goal_slice=(1, 2),
        compute_reward=compute_reward,
        strategy=strategy,
        **kwargs,
    )


def check_common(sample, buffer):
    """Rewards recomputed, next_obs relabelled alike, non-goal columns untouched."""
    alive = sample.alive
    expected = compute_reward(
        sample.extras["next_achieved_goal"][alive], sample.obs[alive][:, 1:2], None
    )  # holds for original rows too: their stored rewards were computed the same way
    assert np.array_equal(sample.reward[alive], expected)
    assert np.array_equal(sample.next_obs[:, :, 1], sample.obs[:, :, 1])
    row_codes = sample.extras["next_achieved_goal"][:, :, 0]
    assert np.array_equal(sample.obs[:, :, 0][alive], row_codes[alive] + 0.25)
    assert sample.reward_n is sample.reward and sample.next_obs_n is sample.next_obs


@pytest.mark.parametrize("strategy", ["future", "final", "episode"])
def test_goals_come_from_the_same_trajectory(strategy):
    rng = np.random.default_rng(0)
    buffer = make(strategy)
    spans = fill(buffer, steps=25, rng=rng)
    newest = 24
    seen_relabel = 0
    for _ in range(10):
        sample = buffer.sample(128, rng)
        check_common(sample, buffer)
        mask, goal = relabelled(sample)
        assert mask[:, 0].sum() == int(128 * 0.8)  # agent 0 is alive in every row
        seen_relabel += mask.sum()
        for b, a in zip(*np.nonzero(mask)):
            lane, step, agent = decode(sample.extras["next_achieved_goal"][b, a, 0])
            d_lane, d_step, d_agent = decode(goal[b, a])
            assert (d_lane, d_agent) == (lane, agent)
            first, last = span_of(spans, lane, agent, step, newest)
            if strategy == "future":
                assert step <= d_step <= last
            elif strategy == "final":
                assert d_step == last
            else:
                assert first <= d_step <= last
    assert seen_relabel > 500


def test_future_covers_the_whole_remaining_trajectory():
    rng = np.random.default_rng(1)
    buffer = make("future", capacity=40, n_envs=1, n_sampled_goal=1_000_000)
    batch = {name: np.zeros((1, *shape), dtype) for name, (shape, dtype) in SCHEMA.items()}
    for step in range(6):  # one six-step episode of agent 0 (agent 1 never alive)
        batch["alive"][:] = [[True, False]]
        batch["obs"][0, 0] = [code(0, step, 0) + 0.25, FAR_GOAL]
        batch["next_obs"][0, 0] = [code(0, step, 0) + 0.5, FAR_GOAL]
        batch["next_achieved_goal"][0, 0] = code(0, step, 0)
        batch["truncated"][0, 0] = step == 5
        buffer.add(batch)
    sample = buffer.sample(3000, rng)
    mask = relabelled(sample)[0][:, 0]
    assert mask.sum() == 2999  # int(3000 * n / (n + 1))
    steps = np.array([decode(v)[1] for v in sample.extras["next_achieved_goal"][mask, 0, 0]])
    donors = np.array([decode(v)[1] for v in sample.obs[mask, 0, 1]])
    for t in range(6):
        assert set(donors[steps == t].tolist()) == set(range(t, 6))  # t' in [t, end], each reachable
    assert np.all(sample.obs[:, 1, 1] == 0.0)  # the agent never alive is never relabelled


def test_final_goal_is_the_last_achieved_goal_of_the_episode():
    rng = np.random.default_rng(2)
    buffer = make("final")
    spans = fill(buffer, steps=25, rng=rng)
    sample = buffer.sample(256, rng)
    check_common(sample, buffer)
    mask, goal = relabelled(sample)
    assert mask[:, 0].sum() == int(256 * 4 / 5)  # agent 0 lives at every row and at its episode's end
    assert mask[:, 1].sum() > 50
    for b, a in zip(*np.nonzero(mask)):
        lane, step, agent = decode(sample.extras["next_achieved_goal"][b, a, 0])
        _, last = span_of(spans, lane, agent, step, newest=24)
        assert goal[b, a] == code(lane, last, agent)
    # The rewards are those of the new goals: 0 exactly where the row is its trajectory's last (donor = itself).
    own = sample.extras["next_achieved_goal"][:, :, 0] == goal
    assert own[mask].any() and not own[mask].all()
    np.testing.assert_array_equal(sample.reward[mask], np.where(own[mask], 0.0, -1.0))
    assert np.all(sample.reward[~mask & sample.alive] == -1.0)  # the stored goal is never reached


def test_random_goals_come_from_stored_rows():
    rng = np.random.default_rng(3)
    buffer = make("random", capacity=24, n_envs=2)  # 12 rows per lane: wraps
    fill(buffer, steps=20, rng=rng)
    sample = buffer.sample(256, rng)
    check_common(sample, buffer)
    mask, goal = relabelled(sample)
    assert mask.sum() > 150
    donors = [decode(goal[b, a]) for b, a in zip(*np.nonzero(mask))]
    assert all(8 <= step <= 19 for _, step, _ in donors)  # only rows still stored
    assert {lane for lane, _, _ in donors} == {0, 1}


def test_episode_start_overwritten_moves_to_the_oldest_stored_row():
    rng = np.random.default_rng(4)
    buffer = make("episode", capacity=5, n_envs=1, n_sampled_goal=1_000_000)
    batch = {name: np.zeros((1, *shape), dtype) for name, (shape, dtype) in SCHEMA.items()}
    for step in range(9):  # one long running episode; rows 0..3 are overwritten
        batch["alive"][:] = True
        batch["obs"][0, :, 1] = FAR_GOAL
        batch["next_achieved_goal"][0, :, 0] = [code(0, step, 0), code(0, step, 1)]
        buffer.add(batch)
    sample = buffer.sample(500, rng)
    donors = np.array([decode(v)[1] for v in sample.obs[:, :, 1][relabelled(sample)[0]]])
    assert set(donors.tolist()) == {4, 5, 6, 7, 8}  # running episode: goals seen so far, among stored rows
    freq = np.bincount(donors - 4) / donors.size
    np.testing.assert_allclose(freq, 0.2, atol=0.05)  # uniform over the stored part of the episode


def test_terminate_on_success_recomputes_terminated():
    rng = np.random.default_rng(5)
    buffer = make("future", terminate_on_success=True, success_reward=0.0)
    fill(buffer, steps=25, rng=rng)
    sample = buffer.sample(256, rng)
    mask, _ = relabelled(sample)
    success = sample.reward == 0.0
    assert success[mask].any() and not success[mask].all()
    assert np.array_equal(sample.terminated[mask], success[mask])
    assert sample.terminated_n is sample.terminated


def test_stored_terminated_is_kept_by_default():
    rng = np.random.default_rng(6)
    buffer = make("future")
    fill(buffer, steps=25, rng=rng)
    sample = buffer.sample(256, rng)
    slots, lanes = np.divmod(sample.indices, 2)
    assert np.array_equal(sample.terminated, buffer.storage.field("terminated")[slots, lanes])


def test_no_relabelling_with_zero_sampled_goals():
    rng = np.random.default_rng(7)
    buffer = make("future", n_sampled_goal=0)
    fill(buffer, steps=10, rng=rng)
    sample = buffer.sample(64, rng)
    assert not relabelled(sample)[0].any()


def test_relabelled_sample_matches_plain_buffer_otherwise():
    """With the same rng draws the underlying rows equal a plain buffer's sample."""
    her = make("future")
    plain = ReplayBuffer(SCHEMA, 60, 2)
    spans_rng = np.random.default_rng(8)
    fill(her, steps=15, rng=spans_rng)
    fill(plain, steps=15, rng=np.random.default_rng(8))
    a, b = her.sample(32, np.random.default_rng(9)), plain.sample(32, np.random.default_rng(9))
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.action, b.action) and np.array_equal(a.obs[:, :, 0], b.obs[:, :, 0])
    # ... and the goals differ from the plain sample's exactly on the relabelled share of the rows.
    changed = a.obs[:, :, 1] != b.obs[:, :, 1]
    assert np.all(b.obs[:, :, 1][b.alive] == FAR_GOAL)
    assert changed[:, 0].sum() == int(32 * 4 / 5)  # her_ratio = n / (n + 1) with the default n_sampled_goal = 4
    assert not changed[~a.alive].any()
    expected = compute_reward(a.extras["next_achieved_goal"][changed], a.obs[changed][:, 1:2], None)
    np.testing.assert_array_equal(a.reward[changed], expected)
    np.testing.assert_array_equal(a.reward[~changed], b.reward[~changed])


def test_relabelling_composes_with_prioritized_sampling():
    rng = np.random.default_rng(10)
    buffer = make("future", sampler=PrioritizedSampler(60, per_alpha=1.0))
    spans = fill(buffer, steps=25, rng=rng)
    rows = buffer.sample(64, rng)
    buffer.update_priorities(rows.indices, np.where(rows.indices == rows.indices[0], 1000.0, 0.0))
    sample = buffer.sample(128, rng)
    check_common(sample, buffer)
    assert np.mean(sample.indices == rows.indices[0]) > 0.9  # the prioritized row dominates
    assert sample.weights.min() < 1.0
    mask, goal = relabelled(sample)
    assert mask[:, 0].sum() == int(128 * 4 / 5)  # agent 0 lives at every row
    for b, a in zip(*np.nonzero(mask)):
        lane, step, agent = decode(sample.extras["next_achieved_goal"][b, a, 0])
        assert step <= decode(goal[b, a])[1] <= span_of(spans, lane, agent, step, newest=24)[1]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="strategy"):
        make("past")
    with pytest.raises(ValueError, match="goal_slice"):
        HerReplayBuffer(SCHEMA, 60, 2, goal_slice=(1, 3), compute_reward=compute_reward)
    no_goal = {k: v for k, v in SCHEMA.items() if k != "next_achieved_goal"}
    with pytest.raises(ValueError, match="next_achieved_goal"):
        HerReplayBuffer(no_goal, 60, 2, goal_slice=(1, 2), compute_reward=compute_reward)
    bad = HerReplayBuffer(SCHEMA, 60, 2, goal_slice=(1, 2), compute_reward=lambda a, d, i: np.zeros((len(a), 1)))
    fill(bad, steps=5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="one reward per goal pair"):
        bad.sample(16, np.random.default_rng(0))


# --------------------------------------------------------------------------- checkpoint state
def test_state_round_trip_relabels_and_continues_as_the_original():
    a, b = make("future"), make("future")
    fill(a, steps=23, rng=np.random.default_rng(11))  # episodes still running in some lanes
    state = a.state_dict()
    assert set(state["her"]) == {"start", "end", "open"} and (state["her"]["open"] >= 0).any()
    b.load_state_dict(state)
    for seed in (0, 1):
        sa, sb = a.sample(128, np.random.default_rng(seed)), b.sample(128, np.random.default_rng(seed))
        for name in ("indices", "obs", "next_obs", "reward", "terminated"):
            np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name), err_msg=name)
    fill(a, steps=9, rng=np.random.default_rng(12))  # the running trajectories close alike
    fill(b, steps=9, rng=np.random.default_rng(12))
    for name in ("start", "end"):
        np.testing.assert_array_equal(getattr(a.trajectories, name), getattr(b.trajectories, name), err_msg=name)
    np.testing.assert_array_equal(a.state_dict()["her"]["open"], b.state_dict()["her"]["open"])


def test_her_state_with_priorities_and_refusals_that_change_nothing():
    a = make("final", sampler=PrioritizedSampler(60, per_alpha=1.0))
    fill(a, steps=20, rng=np.random.default_rng(13))
    rows = a.sample(16, np.random.default_rng(0))
    a.update_priorities(rows.indices, np.full(16, 7.0))
    state = a.state_dict()
    b = make("final", sampler=PrioritizedSampler(60, per_alpha=1.0))
    b.load_state_dict(state)
    np.testing.assert_array_equal(b.sampler.tree.leaves, a.sampler.tree.leaves)

    small = make("final", capacity=40)
    fill(small, steps=5, rng=np.random.default_rng(14))
    before = small.state_dict()
    with pytest.raises(ValueError, match=r"HER trajectory index 'start' is \(30, 2, 2\), the buffer's is \(20, 2, 2\)"):
        small.load_state_dict(state)
    index_fits = {**state, "her": {k: v[:20] if v.ndim == 3 else v for k, v in state["her"].items()}}
    with pytest.raises(ValueError, match=r"field 'obs' is float32 \(30, 2, 2, 2\)"):
        small.load_state_dict(index_fits)  # the index fits, the rows do not: the index is put back
    after = small.state_dict()
    for name in ("start", "end", "open"):
        np.testing.assert_array_equal(after["her"][name], before["her"][name], err_msg=name)
    with pytest.raises(ValueError, match="no HER trajectory index"):
        small.load_state_dict({k: v for k, v in before.items() if k != "her"})


def test_closing_a_lane_ends_its_running_trajectories_there():
    """TrajectoryIndex.close (a lost remote env copy): the running trajectory ends at the given step, and the
    lane's next row starts a new one (relabelled goals never come from across the cut)."""
    from marl.data.her import TrajectoryIndex

    index = TrajectoryIndex(lane_length=8, n_envs=2, n_agents=1)
    alive, going = np.ones((2, 1), bool), np.zeros((2, 1), bool)
    for step in range(3):
        index.record(np.array([0, 1]), np.array([step, step]), alive, going)
    index.close(np.array([0]), np.array([2]))
    assert index.end[:3, 0, 0].tolist() == [2, 2, 2] and index.start[:3, 0, 0].tolist() == [0, 0, 0]
    assert index.end[:3, 1, 0].tolist() == [-1, -1, -1]  # the other lane runs on
    index.record(np.array([0, 1]), np.array([3, 3]), alive, going)
    assert index.start[3, 0, 0] == 3 and index.start[3, 1, 0] == 0
