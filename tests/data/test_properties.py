"""Property tests: sum-tree invariants and replay validity under random operation sequences."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.data.prioritized import PrioritizedReplayBuffer
from marl.data.replay import ReplayBuffer
from marl.data.sum_tree import SumTree

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def update_sequences(draw):
    """A capacity, a scan depth, and batches of (indices, integer priorities)."""
    capacity = draw(st.integers(1, 70))
    scan_depth = draw(st.integers(0, 8))
    batches = draw(
        st.lists(
            st.lists(st.tuples(st.integers(0, capacity - 1), st.integers(0, 9)), min_size=1, max_size=20),
            min_size=1,
            max_size=8,
        )
    )
    return capacity, scan_depth, batches


@SETTINGS
@given(update_sequences(), st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=30))
def test_sum_tree_matches_a_plain_array(case, fractions):
    capacity, scan_depth, batches = case
    tree = SumTree(capacity, scan_depth=scan_depth)
    leaves = np.zeros(capacity)
    for batch in batches:
        idx = np.array([i for i, _ in batch])
        pri = np.array([float(p) for _, p in batch])
        tree.update(idx, pri)
        for i, p in batch:  # sequential writes: the last one wins
            leaves[i] = p
        assert np.array_equal(tree.leaves, leaves)
        assert tree.total == leaves.sum()  # integer priorities: exact
        positive = leaves[leaves > 0]
        assert tree.min == (positive.min() if positive.size else np.inf)
    if tree.total > 0:
        u = np.array(fractions) * tree.total
        found = tree.find(u)
        assert np.array_equal(found, np.searchsorted(np.cumsum(leaves), u, side="right"))
        assert np.all(leaves[found] > 0)


@SETTINGS
@given(
    st.integers(1, 300),
    st.integers(0, 9),
    st.lists(
        st.lists(st.tuples(st.integers(0, 299), st.floats(0.0, 1e3) | st.just(0.0)), min_size=1, max_size=40),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 2**32 - 1),
)
def test_sum_tree_is_a_pure_function_of_its_leaves(capacity, scan_depth, batches, seed):
    """Float priorities, any update order: set_leaves rebuilds the same nodes, minimum and draws."""
    tree = SumTree(capacity, scan_depth=scan_depth)
    leaves = np.zeros(capacity)
    for batch in batches:
        idx = np.array([i % capacity for i, _ in batch])
        pri = np.array([p for _, p in batch])
        tree.update(idx, pri)
        for i, p in zip(idx, pri):
            leaves[i] = p
    rebuilt = SumTree(capacity, scan_depth=scan_depth)
    rebuilt.set_leaves(leaves)
    assert np.array_equal(rebuilt._sum, tree._sum)  # every stored node, bit for bit
    positive = leaves[leaves > 0]
    assert tree.min == rebuilt.min == (positive.min() if positive.size else np.inf)
    if positive.size:
        drawn, priority = tree.sample_stratified(16, np.random.default_rng(seed))
        again, _ = rebuilt.sample_stratified(16, np.random.default_rng(seed))
        assert np.array_equal(drawn, again)
        assert np.array_equal(priority, leaves[drawn]) and np.all(priority > 0)


def schema():
    return {
        "obs": ((2, 1), np.float32),
        "next_obs": ((2, 1), np.float32),
        "action": ((2,), np.int64),
        "reward": ((2,), np.float32),
        "terminated": ((2,), np.bool_),
        "truncated": ((2,), np.bool_),
        "alive": ((2,), np.bool_),
        "next_alive": ((2,), np.bool_),
    }


@st.composite
def add_sequences(draw):
    n_envs = draw(st.integers(1, 4))
    lane_length = draw(st.integers(1, 6))
    adds = draw(st.lists(st.sets(st.integers(0, n_envs - 1), min_size=1), min_size=1, max_size=25))
    return n_envs, lane_length, [sorted(a) for a in adds], draw(st.integers(1, 5)), draw(st.booleans())


@SETTINGS
@given(add_sequences(), st.integers(0, 2**32 - 1))
def test_replay_never_returns_an_unwritten_row(case, seed):
    n_envs, lane_length, adds, n_step, prioritized = case
    rng = np.random.default_rng(seed)
    kind = PrioritizedReplayBuffer if prioritized else ReplayBuffer
    buffer = kind(schema(), lane_length * n_envs, n_envs, n_step=n_step)
    written = set()  # flat indices ever written
    for step, lanes in enumerate(adds):
        rows = {name: np.zeros((len(lanes), *shape), dtype) for name, (shape, dtype) in schema().items()}
        marks = 10 * step + np.array(lanes) + 1  # unwritten rows keep obs 0
        rows["obs"][:] = marks[:, None, None]
        rows["next_obs"][:] = marks[:, None, None]
        rows["terminated"][:, 0] = rng.random(len(lanes)) < 0.3
        written.update(buffer.add(rows, env_indices=lanes).tolist())
        sample = buffer.sample(int(rng.integers(1, 40)), rng)
        assert set(sample.indices.tolist()) <= written
        assert np.all(sample.obs > 0)
        # The n-step window moves forward in time within the row's own lane, never into stale rows.
        ahead = sample.next_obs_n - sample.obs
        assert np.all(ahead >= 0) and np.all(ahead % 10 == 0)
        assert np.all((sample.discount_n > 0) & (sample.discount_n <= 0.99 + 1e-6))
        assert len(buffer) == len(written)


def mixed_schema():
    """schema() plus fields of other sizes and dtypes, so that pack limits split them differently."""
    return {**schema(), "state": ((3,), np.float64), "next_state": ((3,), np.float64), "tag": ((), np.uint8),
            "count": ((2, 2), np.int32)}


@SETTINGS
@given(add_sequences(), st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 8, 16, 24, 10**6]))
def test_any_packing_samples_what_one_array_per_field_does(case, seed, pack_limit):
    """Same rows, same generator: a storage with fields packed by ``pack_limit`` and one with every field in
    an array of its own (``pack_limit=0``) return equal samples; one-step fields equal the rows written."""
    n_envs, lane_length, adds, n_step, prioritized = case
    rng = np.random.default_rng(seed)
    kind = PrioritizedReplayBuffer if prioritized else ReplayBuffer
    packed, plain = (kind(mixed_schema(), lane_length * n_envs, n_envs, n_step=n_step, gamma=0.5, pack_limit=limit)
                     for limit in (pack_limit, 0))
    assert plain.storage.packed_fields == ()
    latest = {}  # flat index -> the row last written there
    for lanes in adds:
        rows = {name: rng.integers(0, 100, size=(len(lanes), *shape)).astype(dtype)
                for name, (shape, dtype) in mixed_schema().items()}
        for name in ("terminated", "truncated"):
            rows[name] = rng.random((len(lanes), 2)) < 0.2
        for buffer in (packed, plain):
            indices = buffer.add(rows, env_indices=lanes)
        latest.update({int(i): {k: v[j] for k, v in rows.items()} for j, i in enumerate(indices)})
        draw = int(rng.integers(0, 2**32))
        a = packed.sample(int(rng.integers(1, 20)), np.random.default_rng(draw))
        b = plain.sample(a.indices.shape[0], np.random.default_rng(draw))
        for name, x, y in zip(a._fields, a, b):
            if isinstance(x, np.ndarray):
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y, err_msg=name)
        for name in ("tag", "count"):
            np.testing.assert_array_equal(a.extras[name], b.extras[name], err_msg=name)
        for k, i in enumerate(a.indices):
            row = latest[int(i)]
            assert np.array_equal(a.obs[k], row["obs"]) and np.array_equal(a.state[k], row["state"])
            assert a.extras["tag"][k] == row["tag"] and np.array_equal(a.extras["count"][k], row["count"])
        if prioritized:
            td = rng.exponential(1.0, size=a.indices.shape[0])
            packed.update_priorities(a.indices, td)
            plain.update_priorities(a.indices, td)
