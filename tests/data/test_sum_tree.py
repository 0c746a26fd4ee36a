"""SumTree: sums and minima against numpy, prefix search against cumsum + searchsorted."""

import numpy as np
import pytest

from marl.data.sum_tree import SumTree

# Every scan depth gives the same tree below the scan level; 0 is the plain
# binary tree kept up to the root, 64 (clipped to the depth) is a flat scan.
SCAN_DEPTHS = [0, 1, 3, 64]


def naive_updates(capacity, batches):
    """Leaves after applying the batches one (index, value) pair at a time, in order."""
    leaves = np.zeros(capacity)
    for idx, pri in batches:
        for i, p in zip(idx, pri):
            leaves[i] = p
    return leaves


def positive_min(leaves):
    positive = leaves[leaves > 0]
    return positive.min() if positive.size else np.inf


@pytest.mark.parametrize("scan_depth", SCAN_DEPTHS)
def test_total_and_min_after_random_updates_with_duplicates(scan_depth):
    rng = np.random.default_rng(0)
    capacity = 1000  # not a power of two: 24 padding leaves
    tree = SumTree(capacity, scan_depth=scan_depth)
    batches = []
    for _ in range(60):
        idx = rng.integers(0, capacity, size=64)
        idx[:8] = idx[8:16]  # forced repeats with (usually) different values
        pri = rng.integers(0, 50, size=64).astype(float)  # integers: float sums are exact
        tree.update(idx, pri)
        batches.append((idx, pri))
        leaves = naive_updates(capacity, batches)
        assert np.array_equal(tree.leaves, leaves)  # the last write wins
        assert tree.total == leaves.sum()
        assert tree.min == positive_min(leaves)


def test_float_total_matches_sum_of_leaves():
    rng = np.random.default_rng(1)
    tree = SumTree(5000)
    for _ in range(20):
        tree.update(rng.integers(0, 5000, 300), rng.exponential(1.0, 300))
    assert tree.total == pytest.approx(tree.leaves.sum(), rel=1e-12)


def test_last_write_wins_for_repeated_index():
    tree = SumTree(8)
    tree.update([5, 2, 5, 5], [1.0, 7.0, 2.0, 3.0])
    assert tree.get([5, 2]).tolist() == [3.0, 7.0]
    assert tree.total == 10.0
    assert tree.min == 3.0


def test_set_leaves_rebuilds_bit_for_bit_what_updates_built():
    # The tree must be a pure function of its leaves: a restored tree (set_leaves)
    # then draws exactly the rows the original would have.
    rng = np.random.default_rng(7)
    capacity = 3000
    for scan_depth in (0, 4, 11):
        built = SumTree(capacity, scan_depth=scan_depth)
        for _ in range(40):  # sorted, unsorted and repeated indices: every update path
            idx = rng.integers(0, capacity, size=int(rng.integers(1, 200)))
            if rng.random() < 0.5:
                idx = np.unique(idx)
            built.update(idx, rng.exponential(1.0, idx.size) * (rng.random(idx.size) < 0.9))
        rebuilt = SumTree(capacity, scan_depth=scan_depth)
        rebuilt.set_leaves(built.leaves)
        assert np.array_equal(rebuilt._sum, built._sum)  # every stored node, bit for bit
        assert rebuilt.min == built.min and rebuilt.total == built.total
        u = rng.uniform(-1.0, built.total * 1.01, 5000)
        assert np.array_equal(rebuilt.find(u), built.find(u))


def test_sorted_and_shuffled_updates_build_the_same_tree():
    rng = np.random.default_rng(8)
    capacity = 2049
    idx = np.unique(rng.integers(0, capacity, 700))  # strictly increasing: the fast path
    pri = rng.exponential(1.0, idx.size)
    fast, general = SumTree(capacity), SumTree(capacity)
    fast.update(idx, pri)
    order = rng.permutation(idx.size)
    general.update(idx[order], pri[order])  # unsorted: the de-duplicating path
    assert np.array_equal(fast._sum, general._sum)
    assert fast.min == general.min == pri.min()


@pytest.mark.parametrize("scan_depth", SCAN_DEPTHS)
def test_find_matches_cumsum_searchsorted(scan_depth):
    rng = np.random.default_rng(2)
    capacity = 777
    pri = rng.integers(0, 10, size=capacity).astype(float)  # many zero leaves
    tree = SumTree(capacity, scan_depth=scan_depth)
    tree.update(np.arange(capacity), pri)
    cum = np.cumsum(pri)
    # Random prefixes plus every exact cell boundary (exact in float: integer sums).
    u = np.concatenate([rng.uniform(0, cum[-1], 5000), cum[:-1], [0.0]])
    expected = np.searchsorted(cum, u, side="right")
    found, priority = tree.find_with_priority(u)
    assert np.array_equal(found, expected)
    assert np.array_equal(priority, pri[expected])


def test_find_with_float_priorities_lands_in_the_right_cell():
    rng = np.random.default_rng(3)
    capacity = 4096 + 17
    pri = rng.exponential(1.0, capacity) * (rng.random(capacity) < 0.7)
    tree = SumTree(capacity, scan_depth=6)
    tree.update(np.arange(capacity), pri)
    cum = np.cumsum(pri)
    u = rng.uniform(0, tree.total, 20000)
    leaf = tree.find(u)
    lower = np.where(leaf > 0, cum[leaf - 1], 0.0)
    tol = 1e-9 * cum[-1]
    assert np.all(lower - tol <= u) and np.all(u < cum[leaf] + tol)
    assert np.all(pri[leaf] > 0)


@pytest.mark.parametrize("scan_depth", SCAN_DEPTHS)
def test_zero_priority_leaves_are_never_returned(scan_depth):
    capacity = 100  # 28 padding leaves past the last real one
    pri = np.zeros(capacity)
    pri[[3, 40, 41, 97]] = [0.1, 0.2, 0.3, 0.4]  # sums with round-off, zero runs around them
    tree = SumTree(capacity, scan_depth=scan_depth)
    tree.update(np.arange(capacity), pri)
    total = tree.total
    cum = np.cumsum(pri)
    edges = np.concatenate([cum, np.nextafter(cum, 0), np.nextafter(cum, np.inf)])
    u = np.concatenate([edges, [0.0, -1.0, total, total * 2, np.nextafter(total, 0)], np.linspace(0, total, 1001)])
    leaf = tree.find(u)
    assert set(leaf.tolist()) <= {3, 40, 41, 97}
    assert tree.find([total])[0] == 97  # past the end: the last positive leaf, not the padding
    assert tree.find([-1.0])[0] == 3  # before the start: the first positive leaf


def test_empirical_frequencies_proportional_to_priority():
    rng = np.random.default_rng(4)
    pri = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 0.5, 0.0, 6.0, 1.5, 2.0])
    tree = SumTree(pri.size, scan_depth=0)
    tree.update(np.arange(pri.size), pri)
    draws = 200_000
    counts = np.bincount(tree.find(rng.uniform(0, tree.total, draws)), minlength=pri.size)
    assert counts[pri == 0].sum() == 0
    expected = draws * pri / pri.sum()
    positive = pri > 0
    chi2 = ((counts[positive] - expected[positive]) ** 2 / expected[positive]).sum()
    assert chi2 < 24.32  # chi-square 0.999 quantile, 7 degrees of freedom (8 cells - 1)


def test_sample_stratified_draws_one_prefix_per_segment():
    rng = np.random.default_rng(9)
    capacity = 5000
    pri = rng.exponential(1.0, capacity) * (rng.random(capacity) < 0.8)
    tree = SumTree(capacity, scan_depth=5)
    tree.set_leaves(pri)
    batch = 64
    leaves, priority = tree.sample_stratified(batch, np.random.default_rng(3))
    # The same uniforms by hand: (U_b + b) * total / B, located by find().
    total = np.cumsum(tree._scan_level)[-1]  # the total the draw scans (sequential order)
    prefix = (np.random.default_rng(3).random(batch) + np.arange(batch)) * (total / batch)
    assert np.array_equal(leaves, tree.find(prefix))
    assert np.array_equal(priority, pri[leaves]) and np.all(priority > 0)
    assert np.all(np.diff(leaves) >= 0)  # sorted
    # Leaf b's interval [cum - p, cum) overlaps segment b = [b, b + 1) * total / B.
    cum, width, tol = np.cumsum(pri), total / batch, 1e-9 * total
    b = np.arange(batch)
    assert np.all(cum[leaves] - pri[leaves] <= (b + 1) * width + tol)
    assert np.all(cum[leaves] >= b * width - tol)


def test_sample_stratified_frequencies_follow_priorities():
    rng = np.random.default_rng(10)
    pri = np.array([5.0, 0.0, 1.0, 3.0, 0.0, 0.5, 2.5, 8.0])
    tree = SumTree(pri.size)
    tree.set_leaves(pri)
    counts = np.zeros(pri.size)
    for _ in range(4000):
        counts += np.bincount(tree.sample_stratified(16, rng)[0], minlength=pri.size)
    np.testing.assert_allclose(counts / counts.sum(), pri / pri.sum(), atol=0.004)
    assert counts[pri == 0].sum() == 0


def test_min_follows_ties_raises_and_zeros():
    tree = SumTree(6)
    tree.update(np.arange(6), [4.0, 0.5, 3.0, 0.0, 0.5, 9.0])
    assert tree.min == 0.5
    tree.update([1], [10.0])  # one of two leaves at the minimum is raised: still 0.5
    assert tree.min == 0.5
    tree.update([4], [2.0])  # the last one too: the next read rescans
    assert tree.min == 2.0
    tree.update([3], [0.25])  # a zero leaf becomes the smallest
    assert tree.min == 0.25
    tree.update([3, 4], [0.0, 0.25])  # moved, not raised: the count stays right
    assert tree.min == 0.25
    tree.update([4], [5.0])
    assert tree.min == 3.0
    tree.update([0, 1, 2, 4, 5], 0.0)
    assert tree.min == np.inf and tree.total == 0.0
    tree.update([2], [7.0])
    assert tree.min == 7.0


def test_min_matches_numpy_under_random_updates():
    rng = np.random.default_rng(11)
    capacity = 300
    tree = SumTree(capacity, scan_depth=3)
    leaves = np.zeros(capacity)
    levels = np.array([0.0, 0.5, 1.0, 2.0, 4.0])  # few values: many ties at the minimum
    for _ in range(400):
        idx = rng.integers(0, capacity, size=int(rng.integers(1, 20)))
        pri = rng.choice(levels, size=idx.size)
        tree.update(idx, pri)
        for i, p in zip(idx, pri):
            leaves[i] = p
        assert tree.min == positive_min(leaves)


def test_batch_edge_cases():
    tree = SumTree(10)
    tree.update([], [])  # nothing to do
    tree.update(np.arange(10), 2.0)  # a scalar applies to every index
    assert tree.total == 20.0 and tree.min == 2.0
    leaves, priority = tree.find_with_priority(np.zeros(0))
    assert leaves.shape == (0,) and priority.shape == (0,)
    assert tree.find(4.5).tolist() == [2]  # a scalar prefix is a batch of one


def test_errors_name_the_problem():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="empty SumTree"):
        tree.find([0.0])
    with pytest.raises(ValueError, match="empty SumTree"):
        tree.sample_stratified(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=">= 0"):
        tree.update([0], [-1.0])
    with pytest.raises(ValueError, match="finite"):
        tree.update([0], [np.nan])
    with pytest.raises(ValueError, match="finite"):
        tree.update([0, 1], [1.0, np.inf])
    with pytest.raises(IndexError, match="out of range"):
        tree.update([4], [1.0])  # sorted: caught by the ends
    with pytest.raises(IndexError, match="out of range"):
        tree.update([-1, 2], [1.0, 1.0])
    with pytest.raises(IndexError, match="out of range"):
        tree.update([2, 9, 1], [1.0, 1.0, 1.0])  # unsorted: caught by the full check
    with pytest.raises(IndexError, match="out of range"):
        tree.get([0, -3])
    with pytest.raises(ValueError, match="one priority per index"):
        tree.update([0, 1], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="1-D"):
        tree.update([[0, 1]], [[1.0, 2.0]])
    assert tree.total == 0.0  # refused updates changed nothing
    tree.update([1], [1.0])
    with pytest.raises(ValueError, match="nan"):
        tree.find([np.nan])
    with pytest.raises(ValueError, match=r"\[C\]"):
        tree.set_leaves(np.ones(5))
    with pytest.raises(ValueError, match="batch_size"):
        tree.sample_stratified(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)


def test_one_leaf_tree():
    tree = SumTree(1)
    tree.update([0], [2.5])
    assert tree.total == 2.5 and tree.min == 2.5
    assert tree.find([0.0, 1.0, 2.49, 5.0]).tolist() == [0, 0, 0, 0]
