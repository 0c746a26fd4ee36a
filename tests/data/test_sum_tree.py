"""SumTree: sums and minima against numpy, prefix search against cumsum + searchsorted."""

import numpy as np
import pytest

from marl.data.sum_tree import SumTree

# Every scan depth gives the same tree; 0 is the plain per-index binary tree,
# 64 (clipped to the depth) handles every level as a whole array.
SCAN_DEPTHS = [0, 1, 3, 64]


def naive_updates(capacity, batches):
    """Leaves after applying the batches one (index, value) pair at a time, in order."""
    leaves = np.zeros(capacity)
    for idx, pri in batches:
        for i, p in zip(idx, pri):
            leaves[i] = p
    return leaves


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
        positive = leaves[leaves > 0]
        assert tree.min == (positive.min() if positive.size else np.inf)


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
    assert np.array_equal(tree.find(u), expected)


def test_find_with_float_priorities_lands_in_the_right_cell():
    rng = np.random.default_rng(3)
    capacity = 4096 + 17
    pri = rng.exponential(1.0, capacity) * (rng.random(capacity) < 0.7)
    tree = SumTree(capacity)
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


def test_min_rises_when_the_smallest_leaf_is_raised():
    tree = SumTree(6)
    tree.update(np.arange(6), [4.0, 0.5, 3.0, 0.0, 2.0, 9.0])
    assert tree.min == 0.5
    tree.update([1], [10.0])
    assert tree.min == 2.0
    tree.update([0, 1, 2, 4, 5], 0.0)
    assert tree.min == np.inf and tree.total == 0.0


def test_errors_name_the_problem():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="empty SumTree"):
        tree.find([0.0])
    with pytest.raises(ValueError, match=">= 0"):
        tree.update([0], [-1.0])
    with pytest.raises(ValueError, match="finite"):
        tree.update([0], [np.nan])
    with pytest.raises(IndexError, match="out of range"):
        tree.update([4], [1.0])
    tree.update([1], [1.0])
    with pytest.raises(ValueError, match="nan"):
        tree.find([np.nan])
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)


def test_one_leaf_tree():
    tree = SumTree(1)
    tree.update([0], [2.5])
    assert tree.total == 2.5 and tree.min == 2.5
    assert tree.find([0.0, 1.0, 2.49, 5.0]).tolist() == [0, 0, 0, 0]
