"""ReplayBuffer: lanes, wrap-around, dtypes, truncation, n-step targets against a naive loop."""

import gymnasium
import numpy as np
import pytest
import torch

from marl.data.prioritized import PrioritizedSampler
from marl.data.replay import ReplayBuffer, nstep_lengths, nstep_return, reduce_td_errors, replay_schema
from marl.data.storage import FieldSpec, LaneStorage, record_dtype, split_fields
from marl.types import GroupSpec


def vec_schema(n_agents=2, obs_dim=3):
    return {
        "obs": ((n_agents, obs_dim), np.float32),
        "next_obs": ((n_agents, obs_dim), np.float32),
        "action": ((n_agents,), np.int64),
        "reward": ((n_agents,), np.float32),
        "terminated": ((n_agents,), np.bool_),
        "truncated": ((n_agents,), np.bool_),
        "alive": ((n_agents,), np.bool_),
        "next_alive": ((n_agents,), np.bool_),
    }


def make_rows(n, n_agents=2, obs_dim=3, obs_value=None, rng=None, p_term=0.0, p_trunc=0.0):
    """``n`` rows; ``obs_value`` (shape [n]) marks each row's obs and next_obs."""
    rng = np.random.default_rng(0) if rng is None else rng
    marks = np.zeros(n) if obs_value is None else np.asarray(obs_value, dtype=float)
    obs = np.broadcast_to(marks[:, None, None], (n, n_agents, obs_dim)).astype(np.float32)
    return {
        "obs": obs,
        "next_obs": obs + 0.5,
        "action": rng.integers(0, 5, size=(n, n_agents)),
        "reward": rng.standard_normal((n, n_agents)).astype(np.float32),
        "terminated": rng.random((n, n_agents)) < p_term,
        "truncated": rng.random((n, n_agents)) < p_trunc,
        "alive": np.ones((n, n_agents), dtype=bool),
        "next_alive": np.ones((n, n_agents), dtype=bool),
    }


def test_replay_schema_from_group_spec_keeps_dtypes():
    group = GroupSpec(
        name="pursuer",
        agents=("pursuer_0", "pursuer_1"),
        obs_space=gymnasium.spaces.Box(0, 255, (84, 84, 4), np.uint8),
        action_space=gymnasium.spaces.Discrete(5),
        has_action_mask=True,
    )
    schema = replay_schema(group, state_shape=(7,))
    assert schema["obs"].shape == (2, 84, 84, 4) and schema["obs"].dtype == np.uint8
    assert schema["action"].shape == (2,) and schema["action"].dtype == np.int64
    assert schema["action_mask"].shape == (2, 5) and schema["action_mask"].dtype == np.bool_
    assert schema["next_state"].shape == (7,)
    buffer = ReplayBuffer(schema, capacity=6, n_envs=3)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(3, 2, 84, 84, 4), dtype=np.uint8)
    rows = {name: np.zeros((3, *spec.shape), spec.dtype) for name, spec in schema.items()}
    rows.update(obs=image, next_obs=255 - image, alive=np.ones((3, 2), bool))
    buffer.add(rows)
    sample = buffer.sample(16, rng)
    assert sample.obs.dtype == np.uint8 and sample.next_obs_n.dtype == np.uint8
    assert np.array_equal(sample.obs, image[sample.indices % 3])
    tensors = sample.to_torch("cpu")
    assert tensors.obs.dtype == torch.uint8 and tensors.alive.dtype == torch.bool
    assert torch.equal(tensors.obs, torch.from_numpy(sample.obs))
    assert tensors.state.shape == (16, 7) and tensors.action_mask.dtype == torch.bool


def test_wrap_around_overwrites_the_oldest_rows():
    buffer = ReplayBuffer(vec_schema(), capacity=4, n_envs=1)
    for step in range(6):
        buffer.add(make_rows(1, obs_value=[step + 1]))
    stored = buffer.storage.field("obs")[:, 0, 0, 0]
    assert stored.tolist() == [5.0, 6.0, 3.0, 4.0]  # steps 1 and 2 were overwritten, in order
    sample = buffer.sample(200, np.random.default_rng(0))
    assert set(sample.obs[:, 0, 0].tolist()) == {3.0, 4.0, 5.0, 6.0}
    assert len(buffer) == 4


def test_never_samples_unwritten_rows_with_uneven_lanes():
    rng = np.random.default_rng(1)
    buffer = ReplayBuffer(vec_schema(), capacity=40, n_envs=4)
    for step in range(13):
        lanes = rng.choice(4, size=rng.integers(1, 4), replace=False)
        buffer.add(make_rows(lanes.size, obs_value=np.full(lanes.size, step + 1)), env_indices=lanes)
        sample = buffer.sample(64, rng)
        assert np.all(sample.obs > 0)  # unwritten slots are all-zero
        slots, lanes_of = np.divmod(sample.indices, 4)
        assert np.all(slots < buffer.storage.size[lanes_of])


def test_sample_rows_match_storage():
    rng = np.random.default_rng(2)
    buffer = ReplayBuffer(vec_schema(), capacity=12, n_envs=3)
    for step in range(5):
        buffer.add(make_rows(3, obs_value=[10 * step, 10 * step + 1, 10 * step + 2], rng=rng))
    sample = buffer.sample(32, rng)
    slots, lanes = np.divmod(sample.indices, 3)
    for name in ("obs", "reward", "action", "terminated"):
        assert np.array_equal(getattr(sample, name), buffer.storage.field(name)[slots, lanes])
    assert np.all(sample.weights == 1.0)
    assert sample.discount_n.tolist() == [np.float32(0.99)] * 32
    assert sample.reward_n is sample.reward  # one-step: the targets are the stored fields


def test_truncation_keeps_the_final_observation():
    """At a time limit the caller stores the real final obs; sampling returns it, the
    n-step window stops there and does not bootstrap from the next episode's reset obs."""
    buffer = ReplayBuffer(vec_schema(n_agents=1, obs_dim=1), capacity=8, n_envs=1, n_step=3, gamma=0.5)
    # Episode: obs 1 -> 2 -> 3, truncated at the step from 2 (final obs 3); reset obs 100.
    steps = [(1.0, 2.0, False), (2.0, 3.0, True), (100.0, 101.0, False), (101.0, 102.0, False)]
    for obs, next_obs, truncated in steps:
        row = make_rows(1, n_agents=1, obs_dim=1)
        row.update(
            obs=np.array([[[obs]]], np.float32),
            next_obs=np.array([[[next_obs]]], np.float32),
            reward=np.array([[1.0]], np.float32),
            truncated=np.array([[truncated]]),
            terminated=np.array([[False]]),
        )
        buffer.add(row)
    sample = buffer.sample(64, np.random.default_rng(0))
    first, second = sample.indices == 0, sample.indices == 1
    assert first.any() and second.any()
    assert np.all(sample.next_obs[second, 0, 0] == 3.0)
    assert np.all(sample.truncated[second, 0]) and not np.any(sample.terminated[second, 0])
    assert np.all(sample.next_obs_n[first | second, 0, 0] == 3.0)  # not 100 or 101
    assert np.all(sample.reward_n[first, 0] == 1.5) and np.all(sample.reward_n[second, 0] == 1.0)
    assert np.all(sample.discount_n[first] == 0.25) and np.all(sample.discount_n[second] == 0.5)
    assert not sample.terminated_n[first | second].any()  # truncation: the learner still bootstraps


def test_a_cut_lane_ends_its_n_step_windows_at_its_last_row():
    """cut() (a lost remote env copy): the lane's last row becomes a time limit, so the windows of the rows
    before it stop there instead of reaching into the rows the rebuilt copy writes next; other lanes untouched."""
    buffer = ReplayBuffer(vec_schema(n_agents=1, obs_dim=1), capacity=16, n_envs=2, n_step=3, gamma=0.5)

    def add(marks):
        row = make_rows(2, n_agents=1, obs_dim=1, obs_value=marks)
        row.update(reward=np.ones((2, 1), np.float32), truncated=np.zeros((2, 1), bool),
                   terminated=np.zeros((2, 1), bool))
        buffer.add(row)

    add([1, 11])
    add([2, 12])
    buffer.cut([0])  # lane 0 lost its continuation after its second row
    add([100, 13])
    add([101, 14])
    sample = buffer.sample(256, np.random.default_rng(0))
    slot, lane = np.divmod(sample.indices, 2)
    first0 = (slot == 0) & (lane == 0)
    first1 = (slot == 0) & (lane == 1)
    assert first0.any() and first1.any()
    assert np.all(sample.reward_n[first0, 0] == 1.5) and np.all(sample.discount_n[first0] == 0.25)
    assert np.all(sample.next_obs_n[first0, 0, 0] == 2.5)  # the cut row's own next obs, not 100's
    assert np.all(sample.reward_n[first1, 0] == 1.75) and np.all(sample.next_obs_n[first1, 0, 0] == 13.5)
    assert np.all(sample.truncated[(slot == 1) & (lane == 0), 0]) and not sample.terminated_n[first0].any()


def naive_nstep(history, step, n, gamma):
    """n-step target of the row written at absolute ``step`` of a lane, one row at a time."""
    ret = np.zeros_like(history[step]["reward"], dtype=np.float64)
    last = step
    for k in range(n):
        j = step + k
        if j >= len(history):
            break
        ret += gamma**k * history[j]["reward"]
        last = j
        if np.any(history[j]["terminated"] | history[j]["truncated"]):
            break
    return ret, gamma ** (last - step + 1), history[last]


@pytest.mark.parametrize("n_step", [1, 2, 5])
def test_nstep_targets_match_a_naive_loop(n_step):
    rng = np.random.default_rng(3)
    n_envs, length, gamma = 3, 7, 0.9
    buffer = ReplayBuffer(vec_schema(), capacity=n_envs * length, n_envs=n_envs, n_step=n_step, gamma=gamma)
    history = [[] for _ in range(n_envs)]
    for step in range(30):  # wraps each lane several times; lanes written unevenly
        lanes = np.sort(rng.choice(n_envs, size=rng.integers(1, n_envs + 1), replace=False))
        rows = make_rows(lanes.size, obs_value=100 * step + lanes, rng=rng, p_term=0.1, p_trunc=0.05)
        rows["next_alive"] = rng.random((lanes.size, 2)) < 0.8
        buffer.add(rows, env_indices=lanes)
        for i, lane in enumerate(lanes):
            history[lane].append({name: value[i] for name, value in rows.items()})
        if step % 3:
            continue
        sample = buffer.sample(40, rng)
        slots, lanes_of = np.divmod(sample.indices, n_envs)
        for b in range(40):
            lane_history = history[lanes_of[b]]
            count = len(lane_history)
            # The newest absolute step s with s % length == slot.
            s = count - 1 - ((count - 1 - slots[b]) % length)
            ret, discount, last = naive_nstep(lane_history, s, n_step, gamma)
            np.testing.assert_allclose(sample.reward_n[b], ret, rtol=1e-5)
            assert sample.discount_n[b] == pytest.approx(discount)
            assert np.array_equal(sample.next_obs_n[b], last["next_obs"])
            assert np.array_equal(sample.terminated_n[b], last["terminated"])
            assert np.array_equal(sample.next_alive_n[b], last["next_alive"])
            assert np.array_equal(sample.obs[b], lane_history[s]["obs"])


def test_nstep_pure_functions_by_hand():
    ends = np.array([[False, False, False], [True, False, False], [False, False, True]])  # [n=3, B=3]
    lengths = nstep_lengths(ends, steps_ahead=np.array([5, 0, 5]))
    assert lengths.tolist() == [2, 1, 3]
    reward = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [4.0, 4.0, 4.0]])  # [n, B]
    reward_n, discount = nstep_return(reward, lengths, gamma=0.5)
    assert reward_n.tolist() == [1.0 + 0.5 * 2.0, 1.0, 1.0 + 1.0 + 0.25 * 4.0]
    assert discount.tolist() == [0.25, 0.5, 0.125]


def test_reduce_td_errors_means_over_alive_agents():
    td = np.array([[1.0, -3.0, 100.0], [-2.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    alive = np.array([[True, True, False], [True, False, False], [False, False, False]])
    assert reduce_td_errors(td, alive).tolist() == [2.0, 2.0, 0.0]
    assert reduce_td_errors(torch.tensor([-1.5, 2.0]), None).tolist() == [1.5, 2.0]


def test_errors_name_the_problem():
    schema = vec_schema()
    with pytest.raises(ValueError, match="multiple of n_envs"):
        ReplayBuffer(schema, capacity=10, n_envs=3)
    with pytest.raises(ValueError, match="lacks required fields"):
        ReplayBuffer({k: v for k, v in schema.items() if k != "next_alive"}, capacity=4, n_envs=1)
    with pytest.raises(ValueError, match="reserved"):
        ReplayBuffer({**schema, "reward_n": ((2,), np.float32)}, capacity=4, n_envs=1)
    buffer = ReplayBuffer(schema, capacity=4, n_envs=2)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(4, np.random.default_rng(0))
    rows = make_rows(2)
    with pytest.raises(KeyError, match="missing"):
        buffer.add({k: v for k, v in rows.items() if k != "alive"})
    with pytest.raises(ValueError, match="expected shape"):
        buffer.add({**rows, "obs": rows["obs"][:1]})
    with pytest.raises(ValueError, match="distinct"):
        buffer.add(make_rows(2), env_indices=[1, 1])
    with pytest.raises(ValueError, match="next_obs must match obs"):
        ReplayBuffer({**schema, "obs": ((2, 3), np.uint8)}, capacity=4, n_envs=2)
    image = ((2, 3), np.uint8)
    uint8_buffer = ReplayBuffer({**schema, "obs": image, "next_obs": image}, capacity=4, n_envs=2)
    with pytest.raises(TypeError, match="cannot store float32 as uint8"):
        uint8_buffer.add(rows)


# --------------------------------------------------------------------------- checkpoint state
def filled(sampler=None, n_step=3, steps=10, seed=0):
    """A 3-lane buffer of 12 rows whose lanes were written unevenly and wrapped."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(vec_schema(), capacity=12, n_envs=3, n_step=n_step, gamma=0.9, sampler=sampler)
    for step in range(steps):
        lanes = np.sort(rng.choice(3, size=rng.integers(1, 4), replace=False))
        buffer.add(make_rows(lanes.size, obs_value=10 * step + lanes, rng=rng, p_term=0.1), env_indices=lanes)
    return buffer


def assert_same_samples(a, b, seed=5):
    sa, sb = a.sample(64, np.random.default_rng(seed)), b.sample(64, np.random.default_rng(seed))
    for name, x, y in zip(sa._fields, sa, sb):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_state_round_trip_samples_and_continues_as_the_original():
    a = filled()
    state = a.state_dict()
    b = ReplayBuffer(vec_schema(), capacity=12, n_envs=3, n_step=3, gamma=0.9)
    b.load_state_dict(state)
    assert_same_samples(a, b)
    np.testing.assert_array_equal(b.storage.pos, a.storage.pos)
    rows = make_rows(2, obs_value=[500, 501])
    a.add(rows, env_indices=[2, 0])  # the restored write pointers put new rows where the original does
    b.add(rows, env_indices=[2, 0])
    for name in a.schema:
        np.testing.assert_array_equal(a.storage.field(name), b.storage.field(name), err_msg=name)
    assert not np.array_equal(state["fields"]["obs"], a.storage.field("obs"))  # the state is a copy
    assert_same_samples(a, b, seed=6)


def test_prioritized_state_keeps_the_priorities():
    a = filled(sampler=PrioritizedSampler(12, per_alpha=0.7))
    sample = a.sample(8, np.random.default_rng(1))
    a.update_priorities(sample.indices, np.arange(8) * 3.0)
    state = a.state_dict()
    assert state["priorities"].shape == (12,) and state["max_priority"] == a.sampler.max_priority > 1.0
    b = ReplayBuffer(vec_schema(), capacity=12, n_envs=3, n_step=3, gamma=0.9,
                     sampler=PrioritizedSampler(12, per_alpha=0.7))
    b.load_state_dict(state)
    np.testing.assert_array_equal(b.sampler.tree.leaves, a.sampler.tree.leaves)
    assert b.sampler.tree.total == pytest.approx(a.sampler.tree.total)
    assert_same_samples(a, b)  # same rows and the same importance weights


def storage_snapshot(buffer):
    return {k: np.array(v) for k, v in buffer.storage.state_dict()["fields"].items()}, buffer.storage.pos.copy()


@pytest.mark.parametrize("case, match", [
    ("capacity", r"field 'obs' is float32 \(5, 3, 2, 3\), the buffer's is float32 \(4, 3, 2, 3\)"),
    ("missing", r"missing \['alive'\], unknown \[\]"),
    ("dtype", r"field 'obs' is float32 .* the buffer's is uint8"),
    ("pointers", r"pointers have shapes \[\(2,\), \(3,\), \(3,\)\]; the buffer has 3 lanes"),
    ("priorities", r"saved prioritized replay lacks \['max_priority', 'priorities'\]"),
    ("rows after priorities", r"field 'obs' is float32 \(5, 3, 2, 3\)"),
])
def test_a_state_that_does_not_fit_is_refused_and_changes_nothing(case, match):
    state = filled().state_dict()
    schema, sampler = vec_schema(), None
    if case == "capacity":
        state = ReplayBuffer(schema, capacity=15, n_envs=3).state_dict()
    elif case == "rows after priorities":  # the priorities fit, the rows do not: the priorities are put back
        sampler = PrioritizedSampler(12)
        state = {**ReplayBuffer(schema, capacity=15, n_envs=3).state_dict(), "max_priority": 9.0,
                 "priorities": np.full(12, 4.0)}
    elif case == "missing":
        del state["fields"]["alive"]
    elif case == "dtype":
        schema = {**schema, "obs": ((2, 3), np.uint8), "next_obs": ((2, 3), np.uint8)}
    elif case == "pointers":
        state["pos"] = state["pos"][:2]
    else:
        sampler = PrioritizedSampler(12)
    target = ReplayBuffer(schema, capacity=12, n_envs=3, sampler=sampler)
    target.add({**make_rows(3, obs_value=[1, 2, 3]), "obs": np.ones((3, 2, 3), schema["obs"][1]),
                "next_obs": np.ones((3, 2, 3), schema["obs"][1])})
    fields, pos = storage_snapshot(target)
    sampler_before = target.sampler.state_dict()
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(state)
    after, pos_after = storage_snapshot(target)
    for key, value in target.sampler.state_dict().items():
        np.testing.assert_array_equal(value, sampler_before[key], err_msg=key)
    np.testing.assert_array_equal(pos_after, pos)
    for name in fields:
        np.testing.assert_array_equal(after[name], fields[name], err_msg=name)


# --------------------------------------------------------------------------- packed storage
def mixed_schema(n_agents=2):
    """Fields of every kind: uint8 images, int64, float64, bool masks, a scalar extra, a state."""
    image = ((n_agents, 6, 6, 3), np.uint8)  # 216 bytes per row
    mask = ((n_agents, 5), np.bool_)
    return {
        **vec_schema(n_agents),
        "obs": image,
        "next_obs": image,
        "action_mask": mask,
        "next_action_mask": mask,
        "state": ((3,), np.float64),
        "next_state": ((3,), np.float64),
        "cost": ((), np.int16),
    }


def mixed_rows(n, rng, n_agents=2):
    rows = {name: np.zeros((n, *shape), dtype) for name, (shape, dtype) in mixed_schema(n_agents).items()}
    rows["obs"] = rng.integers(0, 256, size=rows["obs"].shape, dtype=np.uint8)
    rows["next_obs"] = rng.integers(0, 256, size=rows["obs"].shape, dtype=np.uint8)
    rows["action"] = rng.integers(-(2**40), 2**40, size=(n, n_agents))
    rows["reward"] = rng.standard_normal((n, n_agents)).astype(np.float32)
    rows["terminated"] = rng.random((n, n_agents)) < 0.15
    rows["truncated"] = rng.random((n, n_agents)) < 0.1
    for name in ("alive", "next_alive", "action_mask", "next_action_mask"):
        rows[name] = rng.random(rows[name].shape) < 0.7
    rows["state"] = rng.standard_normal((n, 3))
    rows["next_state"] = rng.standard_normal((n, 3))
    rows["cost"] = rng.integers(-300, 300, size=n).astype(np.int16)
    return rows


def test_fields_are_packed_by_row_size_into_an_aligned_record():
    schema = {name: FieldSpec(tuple(shape), np.dtype(dt)) for name, (shape, dt) in mixed_schema().items()}
    assert schema["obs"].nbytes == 216 and schema["state"].nbytes == 24 and schema["cost"].nbytes == 2
    packed, separate = split_fields(schema, pack_limit=216)  # the limit is inclusive
    assert packed == tuple(schema) and separate == ()
    packed, separate = split_fields(schema, pack_limit=215)
    assert separate == ("obs", "next_obs") and "obs" not in packed and len(packed) == len(schema) - 2
    record = record_dtype({name: schema[name] for name in packed})
    # By hand: 8-aligned fields first (action 16, state 24, next_state 24 bytes), then reward 8, cost 2,
    # then the bool ones (4 flags x 2 + 2 masks x 10): 64 + 8 + 2 + 8 + 20 = 102, padded to a multiple of 8.
    assert record.itemsize == 104
    for name, (dt, offset) in record.fields.items():
        assert offset % dt.base.alignment == 0, name
    storage = LaneStorage(schema, capacity=6, n_envs=3, pack_limit=215)
    assert storage.packed_fields == packed and storage.separate_fields == ("obs", "next_obs")
    assert storage.nbytes == 6 * (104 + 2 * 216)
    assert LaneStorage(vec_schema(1, 8), 10, 1).record.itemsize == 80  # the bench row: 32 + 32 + 8 + 4 + 4 flags


@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("prioritized", [False, True])
def test_every_layout_stores_and_samples_the_same_values(n_step, prioritized):
    """All fields packed, none packed, images apart: same samples, same dtypes, same checkpoint; and the
    one-step fields of a sample are the rows that were written (a dict oracle)."""
    rng = np.random.default_rng(7)
    limits = (0, 100, 10**9)
    buffers = [ReplayBuffer(mixed_schema(), capacity=15, n_envs=3, n_step=n_step, gamma=0.8,
                            sampler=PrioritizedSampler(15, per_alpha=0.8) if prioritized else None, pack_limit=limit)
               for limit in limits]
    assert [len(b.storage.separate_fields) for b in buffers] == [len(mixed_schema()), 2, 0]
    written = {}
    for step in range(9):  # wraps the 5-row lanes
        lanes = np.sort(rng.choice(3, size=rng.integers(1, 4), replace=False))
        rows = mixed_rows(lanes.size, rng)
        for buffer in buffers:
            indices = buffer.add(rows, env_indices=lanes)
        written.update({int(i): {name: value[k] for name, value in rows.items()} for k, i in enumerate(indices)})
        samples = [b.sample(24, np.random.default_rng(step), beta=0.7) for b in buffers]
        for buffer in buffers:
            buffer.update_priorities(samples[0].indices, np.abs(samples[0].reward) + step)
        for sample in samples[1:]:
            for name, x, y in zip(sample._fields, samples[0], sample):
                if isinstance(x, np.ndarray):
                    assert x.dtype == y.dtype and x.shape == y.shape, name
                    np.testing.assert_array_equal(x, y, err_msg=name)
            np.testing.assert_array_equal(sample.extras["cost"], samples[0].extras["cost"])
        sample = samples[2]  # everything packed
        assert sample.obs.dtype == np.uint8 and sample.state.dtype == np.float64
        assert sample.extras["cost"].dtype == np.int16 and sample.extras["cost"].shape == (24,)
        for b, i in enumerate(sample.indices):
            for name in ("obs", "next_obs", "action", "reward", "terminated", "alive", "action_mask", "state"):
                np.testing.assert_array_equal(getattr(sample, name)[b], written[int(i)][name], err_msg=name)
            assert sample.extras["cost"][b] == written[int(i)]["cost"]
        tensors = sample.to_torch()  # strided fields: strides are whole elements
        for name in ("obs", "action", "reward", "alive", "action_mask", "state", "next_state_n"):
            np.testing.assert_array_equal(getattr(tensors, name).numpy(), getattr(sample, name), err_msg=name)
    states = [b.state_dict() for b in buffers]
    for name in mixed_schema():
        assert states[0]["fields"][name].flags.c_contiguous, name
        np.testing.assert_array_equal(states[0]["fields"][name], states[2]["fields"][name], err_msg=name)
    restored = ReplayBuffer(mixed_schema(), capacity=15, n_envs=3, n_step=n_step, gamma=0.8, pack_limit=100,
                            sampler=PrioritizedSampler(15, per_alpha=0.8) if prioritized else None)
    restored.load_state_dict(states[2])  # saved fully packed, restored with images apart
    assert_same_samples(buffers[0], restored)


def test_sampled_fields_never_alias_the_storage_each_other_or_an_earlier_sample():
    rng = np.random.default_rng(8)
    buffer = ReplayBuffer(mixed_schema(), capacity=12, n_envs=3, n_step=2, pack_limit=100)
    for _ in range(4):
        buffer.add(mixed_rows(3, rng))
    stored = buffer.state_dict()["fields"]
    first, second = buffer.sample(16, rng), buffer.sample(16, rng)
    arrays = {name: x for name, x in zip(first._fields, first) if isinstance(x, np.ndarray)} | first.extras
    names = sorted(arrays)
    for i, a in enumerate(names):
        assert arrays[a].flags.writeable, a
        for name in buffer.schema:
            assert not np.shares_memory(arrays[a], buffer.storage.field(name)), (a, name)
        for other in (x for x in second if isinstance(x, np.ndarray)):
            assert not np.shares_memory(arrays[a], other), a
        for b in names[i + 1:]:
            assert not np.shares_memory(arrays[a], arrays[b]), (a, b)
    before = {name: np.array(x) for name, x in arrays.items()}
    first.obs[:] = 0  # packed (a strided view) ...
    first.reward[:] = -1.0
    first.next_obs_n[:] = 1
    for name, x in arrays.items():  # ... and nothing else moved
        if name not in ("obs", "reward", "next_obs_n"):
            np.testing.assert_array_equal(x, before[name], err_msg=name)
    for name, value in buffer.state_dict()["fields"].items():
        np.testing.assert_array_equal(value, stored[name], err_msg=name)


def test_one_step_targets_are_the_sampled_fields_themselves():
    buffer = ReplayBuffer(vec_schema(), capacity=4, n_envs=2)
    buffer.add(make_rows(2))
    sample = buffer.sample(8, np.random.default_rng(0))
    assert sample.next_obs_n is sample.next_obs and sample.terminated_n is sample.terminated
    assert sample.next_alive_n is sample.next_alive
