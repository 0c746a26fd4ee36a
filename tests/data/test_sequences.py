"""Sequence replay: sequences cut at episode ends (padding, final observation, dead agent), burn-in overlap with
the stored states, prioritized sequences, and save/load, checked on hand-built step streams."""

from __future__ import annotations

import numpy as np
import pytest

from marl.data import PrioritizedSampler
from marl.data.sequences import SequenceReplay

A, S = 2, 3  # agents, state width
SCHEMA = {"obs": ((A, 1), np.float32), "action": ((A,), np.int64), "action_mask": ((A, 2), np.bool_)}


def step_rows(t: float, end: bool = False, dead: tuple[int, ...] = (), dies: tuple[int, ...] = ()) -> dict:
    """Rows of one step of one env copy: obs = t, next obs = t + 1 (t + 0.5 = the final obs at an end)."""
    alive = np.ones((1, A), bool)
    alive[0, list(dead)] = False
    terminated = np.zeros((1, A), bool)
    terminated[0, list(dies)] = True
    terminated |= end & alive
    next_alive = alive & ~terminated if not end else alive
    return {"obs": np.full((1, A, 1), t, np.float32), "next_obs": np.full((1, A, 1), t + (0.5 if end else 1.0),
                                                                           np.float32),
            "action": np.full((1, A), int(t) % 2), "reward": np.full((1, A), t, np.float32),
            "terminated": terminated, "truncated": np.zeros((1, A), bool), "alive": alive, "next_alive": next_alive,
            "action_mask": np.ones((1, A, 2), bool), "next_action_mask": np.ones((1, A, 2), bool)}


def feed(buf: SequenceReplay, steps: list[tuple[dict, bool]]) -> None:
    for k, (rows, end) in enumerate(steps):
        buf.add(rows, np.full((1, A, S), k, np.float32), np.array([end]))  # hidden fed at step k = k


def test_sequences_are_cut_at_episode_ends_and_overlap_by_the_burn_in() -> None:
    buf = SequenceReplay(SCHEMA, S, capacity=8, n_envs=1, seq_len=4, burn_in=1)
    # episode 1: 3 steps, agent 1 dies at step 1; episode 2: 6 steps (obs 10..15)
    ep1 = [(step_rows(0), False), (step_rows(1, dies=(1,)), False), (step_rows(2, end=True, dead=(1,)), True)]
    ep2 = [(step_rows(10 + k, end=k == 5), k == 5) for k in range(6)]
    feed(buf, ep1 + ep2)
    assert len(buf) == 3
    f = buf.fields
    # sequence 0: the first episode, padded; the final observation (2.5) follows its last step
    assert f["valid"][0].tolist() == [True, True, True, False]
    assert f["obs"][0, :, 0, 0].tolist() == [0, 1, 2, 2.5, 0]
    assert f["alive"][0, :, 1].tolist() == [True, True, False, False, False]  # dead from step 2
    assert f["ended"][0, :, 1].tolist() == [False, True, False, False]  # flagged once, at its death
    assert f["terminated"][0, :, 0].tolist() == [False, False, True, False]
    assert f["burn_in"][0] == 0 and (f["hidden"][0] == 0).all()  # hidden fed at its first step (step 0)
    # sequence 1: the second episode's first 4 steps, full; its next position is the next observation
    assert f["valid"][1].all() and f["obs"][1, :, 0, 0].tolist() == [10, 11, 12, 13, 14]
    assert f["burn_in"][1] == 0 and (f["hidden"][1] == 3).all()
    # sequence 2: repeats step 13 (burn-in), then 14, 15 (end), padded; its stored state is the one fed at 13
    assert f["valid"][2].tolist() == [True, True, True, False]
    assert f["obs"][2, :, 0, 0].tolist() == [13, 14, 15, 15.5, 0]
    assert f["burn_in"][2] == 1 and (f["hidden"][2] == 6).all()
    assert f["reward"][2, :, 0].tolist() == [13, 14, 15, 0]
    # the next episode starts a fresh, empty sequence
    assert buf.count.tolist() == [0] and buf.fresh.tolist() == [True]


def test_wraps_around_and_samples_only_stored_sequences() -> None:
    buf = SequenceReplay(SCHEMA, S, capacity=2, n_envs=1, seq_len=2, burn_in=0)
    feed(buf, [(step_rows(k, end=k % 2 == 1), k % 2 == 1) for k in range(6)])  # three 2-step episodes
    assert len(buf) == 2 and buf.pos == 1
    assert sorted(buf.fields["obs"][:, 0, 0, 0].tolist()) == [2, 4]  # the oldest (0) was overwritten
    _, weights, fields = buf.sample(50, np.random.default_rng(0))
    assert set(fields["obs"][:, 0, 0, 0].tolist()) == {2, 4} and (weights == 1).all()


def test_prioritized_sequences_follow_their_priorities() -> None:
    sampler = PrioritizedSampler(4, per_alpha=1.0, per_eps=1e-6)
    buf = SequenceReplay(SCHEMA, S, capacity=4, n_envs=1, seq_len=2, burn_in=0, sampler=sampler)
    feed(buf, [(step_rows(k, end=k % 2 == 1), k % 2 == 1) for k in range(8)])  # four sequences, slots 0..3
    buf.update_priorities(np.arange(4), np.array([0.0, 1.0, 0.0, 3.0]))
    idx, weights, _ = buf.sample(4000, np.random.default_rng(0), beta=1.0)
    share = np.bincount(idx, minlength=4) / idx.size
    assert share[0] < 0.001 and share[2] < 0.001 and abs(share[3] - 0.75) < 0.03
    # importance weights (N P(i))^-beta: sequence 3 (priority 3) weighs a third of sequence 1 (priority 1)
    np.testing.assert_allclose(weights[idx == 3] / weights[idx == 1][0], 1.0 / 3.0, rtol=1e-4)


def test_state_dict_round_trip_continues_the_pending_sequences() -> None:
    steps = [(step_rows(k, end=k == 6), k == 6) for k in range(7)]
    whole = SequenceReplay(SCHEMA, S, capacity=8, n_envs=1, seq_len=3, burn_in=1)
    feed(whole, steps)
    first = SequenceReplay(SCHEMA, S, capacity=8, n_envs=1, seq_len=3, burn_in=1)
    feed(first, steps[:4])
    resumed = SequenceReplay(SCHEMA, S, capacity=8, n_envs=1, seq_len=3, burn_in=1)
    resumed.load_state_dict(first.state_dict())
    for k, (rows, end) in enumerate(steps[4:], start=4):
        resumed.add(rows, np.full((1, A, S), k, np.float32), np.array([end]))
    for key, arr in whole.fields.items():
        np.testing.assert_array_equal(resumed.fields[key], arr, err_msg=key)
    with pytest.raises(ValueError, match="fields.obs"):
        SequenceReplay(SCHEMA, S, capacity=4, n_envs=1, seq_len=3, burn_in=1).load_state_dict(first.state_dict())


def test_cut_stores_what_can_be_trained_and_restarts() -> None:
    buf = SequenceReplay(SCHEMA, S, capacity=8, n_envs=1, seq_len=4, burn_in=2)
    feed(buf, [(step_rows(k), False) for k in range(5)])  # one full sequence, a continued one holds 3 steps
    assert len(buf) == 1 and buf.count.tolist() == [3] and not buf.fresh[0]
    buf.cut(np.array([0]))  # 3 steps > 2 of burn-in: stored
    assert len(buf) == 2 and buf.fields["valid"][1].tolist() == [True, True, True, False]
    assert buf.count.tolist() == [0] and buf.fresh[0]
