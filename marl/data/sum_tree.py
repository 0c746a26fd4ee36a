"""Array-backed sum tree (with a companion min tree) for prioritized sampling.

Layout: a complete binary tree over ``2**depth >= capacity`` leaves stored as a
heap in two float64 arrays (sums and minima): the root is slot 1, the children
of slot ``n`` are ``2n`` and ``2n + 1``, and depth ``k`` occupies slots
``[2**k, 2**(k+1))``.
Leaf ``i`` (a row of the replay buffer) is slot ``2**depth + i``; leaves past
``capacity`` stay 0 forever. Every internal node holds exactly
``fl(left + right)`` (the floating-point sum of its children) in the sum tree
and ``min(left, right)`` in the min tree, where a zero leaf counts as ``+inf``
in the min tree, so ``min`` is the smallest *positive* priority.

Both operations work on a whole batch at once, one numpy call per tree level
(no Python loop over the batch):

* ``update(indices [B], priorities [B])`` writes the leaves (the last write wins
  for a repeated index) and recomputes the ancestors level by level: O(B log C).
* ``find(prefix_sums [B])`` descends level by level for the whole batch and
  returns, for each ``u``, the leaf ``i`` with ``cum[i-1] <= u < cum[i]``
  (``cum`` the cumulative sum of the leaves): O(B log C).

Speed (see ``bench/bench_per.py``): each numpy call costs a fixed ~1 µs, so the
cost is the number of calls per level; on large trees the deep levels also miss
the cache, and ``take``/``put`` move data several times faster than fancy
indexing there. The top levels of the tree are tiny: levels shallower
than ``scan_depth`` are therefore handled whole: ``update`` recomputes them as
full arrays (one vectorized add per level, cheaper than scattering B indices
once a level has fewer than a few thousand nodes), and ``find`` replaces the
descent through them by one ``cumsum`` + ``searchsorted`` over the nodes at depth
``scan_depth``. The result is the same tree; ``scan_depth=0`` gives the
textbook per-index descent from the root.

Round-off: the descent compares prefix sums against partial sums computed in a
different order than a flat ``cumsum``, so at a cell boundary it may pick the
neighbouring cell (an error of a few ulp of probability mass), and it could in
principle walk into a subtree whose sum is 0. Rows that end on a zero leaf are
searched again with a guarded descent that only enters subtrees of positive sum,
so a zero-priority leaf (including the padding past ``capacity``) is never
returned.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

_DEFAULT_SCAN_DEPTH = 10  # 1024 nodes: measured optimum for B = 256, C = 1e6 on one core


def _last_write_wins(indices: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated indices, keeping the value written last (numpy leaves the
    order of repeated fancy-index assignments unspecified)."""
    order = np.argsort(indices, kind="stable")
    sorted_idx = indices[order]
    keep = np.empty(sorted_idx.shape[0], dtype=bool)
    keep[-1:] = True
    np.not_equal(sorted_idx[1:], sorted_idx[:-1], out=keep[:-1])
    if keep.all():
        return indices, values
    chosen = order[keep]
    return indices[chosen], values[chosen]


class SumTree:
    """Sum and min over ``capacity`` non-negative float64 priorities.

    Args:
        capacity: number of leaves C (>= 1). All leaves start at priority 0.
        scan_depth: tree depth above which levels are processed whole (see the
            module docstring); clipped to the tree depth. A speed knob only:
            every value gives the same tree, and the same ``find`` results up to
            round-off at cell boundaries. Default 10.

    Attributes:
        capacity: number of leaves C.
        depth: levels below the root; the tree has ``2**depth >= C`` leaf slots.
    """

    def __init__(self, capacity: int, scan_depth: int = _DEFAULT_SCAN_DEPTH) -> None:
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        if scan_depth < 0:
            raise ValueError(f"scan_depth must be >= 0, got {scan_depth}")
        self.capacity = int(capacity)
        self.depth = max(1, int(np.ceil(np.log2(capacity))))
        self._n_slots = 1 << self.depth  # leaf slots, a power of two
        self._scan_depth = min(scan_depth, self.depth)
        self._sum = np.zeros(2 * self._n_slots, dtype=np.float64)
        self._min = np.full(2 * self._n_slots, np.inf, dtype=np.float64)
        # Sibling pairs as complex numbers: pair n = slot 2n + 1j * slot 2n+1, the
        # two children of node n, fetched by one take().
        self._sum_pairs = self._sum.view(np.complex128)
        self._min_pairs = self._min.view(np.complex128)
        # Exclusive cumulative sum of the nodes at depth scan_depth, reused by find().
        self._scan = np.zeros((1 << self._scan_depth) + 1, dtype=np.float64)

    @property
    def total(self) -> float:
        """Sum of all leaf priorities (the root)."""
        return float(self._sum[1])

    @property
    def min(self) -> float:
        """Smallest positive leaf priority; ``inf`` when every leaf is 0."""
        return float(self._min[1])

    @property
    def leaves(self) -> np.ndarray:
        """``[C]`` float64 copy of the leaf priorities."""
        return self._sum[self._n_slots : self._n_slots + self.capacity].copy()

    def get(self, indices: ArrayLike) -> np.ndarray:
        """Priorities ``[B]`` (float64) of leaves ``indices [B]``."""
        idx = self._check_indices(indices)
        return self._sum.take(idx + self._n_slots)

    def update(self, indices: ArrayLike, priorities: ArrayLike) -> None:
        """Set leaf ``indices[b]`` to ``priorities[b]`` and refresh all ancestors.

        Args:
            indices: ``[B]`` leaf indices in ``[0, C)``; repeats are allowed and
                the value given last wins.
            priorities: ``[B]`` finite priorities >= 0 (0 removes the leaf from
                sampling), or a scalar applied to every index.
        """
        idx = self._check_indices(indices)
        pri = np.asarray(priorities, dtype=np.float64)
        if pri.shape != idx.shape:
            pri = np.broadcast_to(pri, idx.shape)
        if idx.size == 0:
            return
        low, high = pri.min(), pri.max()
        if not (low >= 0 and high < np.inf):  # also catches nan
            raise ValueError(f"priorities must be finite and >= 0; got min {low}, max {high}")
        tsum, tmin = self._sum, self._min
        node = idx + self._n_slots
        tsum.put(node, pri)
        if not np.array_equal(tsum.take(node), pri):  # a repeated index with different values
            idx, pri = _last_write_wins(idx, pri)
            node = idx + self._n_slots
            tsum.put(node, pri)
        tmin.put(node, np.where(pri > 0, pri, np.inf))
        # Deep levels: recompute only the ancestors of the written leaves. A parent
        # shared by several leaves is written several times with the same value.
        # (take/put: several times faster than fancy indexing on large arrays.)
        sum_pairs, min_pairs = self._sum_pairs, self._min_pairs
        for _ in range(self.depth - self._scan_depth):
            node >>= 1
            children = sum_pairs.take(node)
            tsum.put(node, children.real + children.imag)
            children = min_pairs.take(node)
            tmin.put(node, np.minimum(children.real, children.imag))
        # Shallow levels: recompute whole levels (fewer nodes than the batch costs).
        for level in range(self._scan_depth - 1, -1, -1):
            lo, hi = 1 << level, 2 << level
            np.add(tsum[2 * lo : 2 * hi : 2], tsum[2 * lo + 1 : 2 * hi : 2], out=tsum[lo:hi])
            np.minimum(tmin[2 * lo : 2 * hi : 2], tmin[2 * lo + 1 : 2 * hi : 2], out=tmin[lo:hi])

    def find(self, prefix_sums: ArrayLike) -> np.ndarray:
        """Leaves ``[B]`` (int64) holding the given prefix sums.

        For each ``u`` in ``prefix_sums [B]`` (meant to lie in ``[0, total)``)
        returns the leaf ``i`` with ``cum[i-1] <= u < cum[i]``,
        ``cum = cumsum(leaves)``, up to float round-off at cell boundaries. A
        leaf of priority 0 is never returned: ``u < 0`` gives the first positive
        leaf, ``u >= total`` the last one.

        Raises:
            ValueError: if the tree is empty (``total == 0``) or a prefix is nan.
        """
        return self.find_with_priority(prefix_sums)[0]

    def find_with_priority(self, prefix_sums: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`find`, also returning the priorities ``[B]`` of the leaves found."""
        u = np.array(prefix_sums, dtype=np.float64, copy=True, ndmin=1)
        tsum = self._sum
        if not tsum[1] > 0:
            raise ValueError("cannot search an empty SumTree (total priority is 0); update() some leaves first")
        if np.isnan(u.min()):
            raise ValueError("prefix_sums contain nan")
        # Out-of-range prefixes need no clipping here: below 0 the descent keeps
        # left, past the total it keeps right, and a zero leaf is caught below.
        # Top: one scan over the nodes at depth scan_depth replaces the descent to it.
        width = 1 << self._scan_depth
        scan = self._scan
        np.cumsum(tsum[width : 2 * width], out=scan[1:])
        cell = np.searchsorted(scan[1:], u, side="right")
        np.minimum(cell, width - 1, out=cell)
        u -= scan.take(cell)
        node = cell + width
        # Bottom: binary descent, one level per step for the whole batch.
        for _ in range(self.depth - self._scan_depth):
            node <<= 1
            left = tsum.take(node)
            go_right = u >= left
            u -= left * go_right
            node += go_right
        leaf = node - self._n_slots
        priority = tsum.take(node)
        stray = priority == 0  # round-off led into a zero subtree: search again, guarded
        if stray.any():
            leaf[stray] = self._guarded_find(np.array(prefix_sums, dtype=np.float64, ndmin=1)[stray])
            priority[stray] = tsum.take(leaf[stray] + self._n_slots)
        return leaf, priority

    def _guarded_find(self, u: np.ndarray) -> np.ndarray:
        """Descent from the root that only enters subtrees of positive sum."""
        tsum = self._sum
        u = np.clip(u, 0.0, tsum[1])
        node = np.ones(u.shape[0], dtype=np.int64)
        for _ in range(self.depth):
            node <<= 1
            left, right = tsum[node], tsum[node + 1]
            go_right = ((u >= left) & (right > 0)) | (left == 0)
            u = np.where(go_right, u - left, u)
            node += go_right
        return node - self._n_slots

    def _check_indices(self, indices: ArrayLike) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)  # never written to: callers build new arrays from it
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D [B], got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise IndexError(f"leaf index out of range [0, {self.capacity}): min {idx.min()}, max {idx.max()}")
        return idx
