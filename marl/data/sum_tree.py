"""Array-backed sum tree for prioritized sampling, with an exact running minimum.

Layout: a complete binary tree over ``2**depth >= capacity`` leaves stored as a
heap in one float64 array: the children of slot ``n`` are ``2n`` and
``2n + 1``, depth ``k`` occupies slots ``[2**k, 2**(k+1))``, and leaf ``i`` (a
row of the replay buffer) is slot ``2**depth + i``; leaves past ``capacity``
stay 0 forever.

The tree is kept from the leaves up to the *scan level*, depth
``s = scan_depth`` (``W = 2**s`` nodes, each over a block of
``2**(depth - s)`` leaves). Every kept node holds exactly ``fl(left + right)``
of its children, so the tree is a pure function of the leaves: ``set_leaves``
rebuilds bit for bit what any sequence of ``update`` calls built, and a
restored tree draws the same leaves from the same generator. No node above the
scan level is stored; ``total`` sums the ``W`` scan-level nodes when read.

Both operations work on a whole batch, a fixed number of numpy calls per level
and none per element:

* ``update(indices [B], priorities [B])`` writes the leaves (the last write wins
  for a repeated index), then recomputes the ancestors up to the scan level:
  per level one shift, one ``take`` of the sibling pairs (viewed as complex
  numbers, so both children come in one 16-byte element), one add, one indexed
  store. O(B (depth - s)).
* ``find(prefix_sums [B])`` takes one ``cumsum`` over the ``W`` scan-level sums
  and one ``searchsorted`` to reach depth ``s``, then descends one level per
  step for the whole batch (take the left child, compare, subtract, step). It
  returns, for each ``u``, the leaf ``i`` with ``cum[i-1] <= u < cum[i]``
  (``cum`` the cumulative sum of the leaves). O(W + B (depth - s)).
  ``sample_stratified`` draws one prefix per segment of ``[0, total)`` and
  does the same.

The minimum positive priority (for importance weights) is not a second tree:
``update`` keeps the minimum and the number of leaves holding it, from the old
and new values of the leaves it writes (O(B), a few calls). When the last leaf
at the minimum is raised, the next read of ``min`` rescans the leaves (O(C),
0.8 ms at C = 1e6). In prioritized replay that is rare: the row of smallest
priority is the one least likely to be drawn and updated, and it is overwritten
once per pass of the buffer.

Speed (``bench/bench_per.py``: B = 256, C = 1e6, one core). A numpy call costs
a fixed 0.3-1 µs, more than its arithmetic on 256 numbers, and the levels
below depth ~16 of a 1e6-leaf tree miss the cache; the design counts calls and
bytes:

* one float64 array (16 MB at C = 1e6) instead of a sum tree plus a min tree:
  half the memory traffic, no minimum work per level (the largest single win);
* no levels above the scan: one ``cumsum`` over ``W`` nodes replaces ``s``
  levels of every descent and of every update (a level costs about as much as
  a scan over 2,000 nodes, hence the default ``s = 11``);
* contiguous operands, preallocated outputs passed positionally,
  ``take(..., mode="clip")`` (no buffered copy), ``a[idx] = v`` rather than
  ``a.put`` (half the cost), ``count_nonzero`` rather than ``all``/``any``
  (a third), no remainder update on the last level;
* strictly increasing indices (a stratified draw) skip de-duplication and
  bound-check with their two ends.

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

_DEFAULT_SCAN_DEPTH = 11  # 2048 nodes: measured optimum for B = 256, C = 1e6 on one core


def _last_write_wins(indices: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ``indices`` with the value written last to each (numpy
    leaves the order of repeated fancy-index assignments unspecified)."""
    order = np.argsort(indices, kind="stable")
    sorted_idx = indices[order]
    keep = np.empty(sorted_idx.shape[0], dtype=bool)
    keep[-1:] = True
    np.not_equal(sorted_idx[1:], sorted_idx[:-1], out=keep[:-1])
    chosen = order[keep]
    return indices[chosen], values[chosen]


def _positive_min(values: np.ndarray) -> float:
    """Smallest positive entry of ``values``; ``inf`` when there is none."""
    return float(np.minimum.reduce(values, where=values > 0, initial=np.inf))


class SumTree:
    """Sum and minimum over ``capacity`` non-negative float64 priorities.

    Args:
        capacity: number of leaves C (>= 1). All leaves start at priority 0.
        scan_depth: depth ``s`` of the scan level (see the module docstring),
            clipped to the tree depth. A speed knob only: every value stores the
            same leaves and node sums below the scan level, and gives the same
            ``find`` results up to round-off at cell boundaries. ``0`` is the
            textbook tree (kept up to the root, descent from the root).
            Default 11.

    Attributes:
        capacity: number of leaves C.
        depth: levels below the root; the tree has ``2**depth >= C`` leaf slots.
        scan_depth: depth ``s`` of the scan level (``<= depth``).
    """

    def __init__(self, capacity: int, scan_depth: int = _DEFAULT_SCAN_DEPTH) -> None:
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        if scan_depth < 0:
            raise ValueError(f"scan_depth must be >= 0, got {scan_depth}")
        self.capacity = int(capacity)
        self.depth = max(1, int(np.ceil(np.log2(capacity))))
        self.scan_depth = min(int(scan_depth), self.depth)
        self._n_slots = 1 << self.depth  # leaf slots, a power of two
        self._width = 1 << self.scan_depth  # nodes at the scan level
        self._sum = np.zeros(2 * self._n_slots, dtype=np.float64)
        # Pair n of this view is (slot 2n, slot 2n + 1) = the children of node n.
        self._pairs = self._sum.view(np.complex128)
        self._scan_level = self._sum[self._width : 2 * self._width]
        # Exclusive cumulative sum of the scan level, rebuilt by every find().
        self._scan = np.zeros(self._width + 1, dtype=np.float64)
        # Running minimum: value, number of leaves holding it, and whether a
        # rescan is due (the last of those leaves was raised).
        self._min = np.inf
        self._min_count = 0
        self._min_stale = False

    @property
    def total(self) -> float:
        """Sum of all leaf priorities (the sum of the scan-level nodes; O(W))."""
        return float(np.add.reduce(self._scan_level))

    @property
    def min(self) -> float:
        """Smallest positive leaf priority; ``inf`` when every leaf is 0."""
        if self._min_stale:
            self._rescan_min()
        return self._min

    @property
    def leaves(self) -> np.ndarray:
        """``[C]`` float64 copy of the leaf priorities."""
        return self._sum[self._n_slots : self._n_slots + self.capacity].copy()

    def get(self, indices: ArrayLike) -> np.ndarray:
        """Priorities ``[B]`` (float64) of leaves ``indices [B]``."""
        idx = self._check_indices(indices)
        return self._sum.take(idx + self._n_slots)

    def update(self, indices: ArrayLike, priorities: ArrayLike) -> None:
        """Set leaf ``indices[b]`` to ``priorities[b]`` and refresh the ancestors.

        Args:
            indices: ``[B]`` leaf indices in ``[0, C)``; repeats are allowed and
                the value given last wins. Strictly increasing indices (what a
                stratified draw returns) take the fast path.
            priorities: ``[B]`` finite priorities >= 0 (0 removes the leaf from
                sampling), or a scalar applied to every index.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D [B], got shape {idx.shape}")
        pri = np.asarray(priorities, dtype=np.float64)
        if pri.shape != idx.shape:
            if pri.ndim != 0:
                raise ValueError(
                    f"one priority per index expected: priorities {pri.shape}, indices {idx.shape}"
                )
            pri = np.full(idx.shape, pri)
        batch = idx.shape[0]
        if batch == 0:
            return
        low, high = np.minimum.reduce(pri), np.maximum.reduce(pri)
        if not (low >= 0 and high < np.inf):  # also catches nan
            raise ValueError(f"priorities must be finite and >= 0; got min {low}, max {high}")
        # (count_nonzero is the cheapest reduction on a small array: ~3x faster than all())
        if np.count_nonzero(idx[1:] <= idx[:-1]) == 0:  # distinct and sorted: the ends bound the range
            if idx[0] < 0 or idx[-1] >= self.capacity:
                self._raise_out_of_range(idx)
            new_min = float(low) if low > 0 else _positive_min(pri)
        else:
            self._check_indices(idx)
            idx, pri = _last_write_wins(idx, pri)
            new_min = _positive_min(pri)
        node = idx + self._n_slots
        old = self._sum.take(node)
        self._sum[node] = pri  # distinct indices here
        self._track_min(old, pri, new_min)
        self._refresh(node)

    def set_leaves(self, priorities: ArrayLike) -> None:
        """Replace every leaf at once and rebuild the tree level by level (O(C)).

        Gives exactly the tree (and ``total``) that :meth:`update` builds for the
        same leaves.

        Args:
            priorities: ``[C]`` finite priorities >= 0.
        """
        pri = np.asarray(priorities, dtype=np.float64)
        if pri.shape != (self.capacity,):
            raise ValueError(f"set_leaves expects [C] = ({self.capacity},) priorities, got shape {pri.shape}")
        if not (np.minimum.reduce(pri) >= 0 and np.maximum.reduce(pri) < np.inf):
            raise ValueError("priorities must be finite and >= 0 (no nan, no inf)")
        tree = self._sum
        tree[self._n_slots : self._n_slots + self.capacity] = pri
        for level in range(self.depth - 1, self.scan_depth - 1, -1):
            lo, hi = 1 << level, 2 << level
            np.add(tree[2 * lo : 2 * hi : 2], tree[2 * lo + 1 : 2 * hi : 2], out=tree[lo:hi])
        self._rescan_min()

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
        """:meth:`find`, also returning the priorities ``[B]`` (float64) of the leaves found."""
        prefix = np.asarray(prefix_sums, dtype=np.float64).reshape(-1)
        self._build_scan()
        if prefix.shape[0] == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        if np.isnan(np.minimum.reduce(prefix)):
            raise ValueError("prefix_sums contain nan")
        return self._descend(prefix)

    def sample_stratified(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Stratified draw: leaves ``[B]`` (int64) and their priorities ``[B]`` (float64).

        The total priority is cut into ``B = batch_size`` equal segments and one
        prefix sum is drawn uniformly in each (``(U_b + b) * total / B``), then
        located as by :meth:`find`; a leaf is drawn with probability
        ``p_i / total`` per segment it overlaps. The leaves come sorted.

        Raises:
            ValueError: if the tree is empty (``total == 0``) or ``batch_size < 1``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        total = self._build_scan()
        prefix = rng.random(batch_size)
        prefix += np.arange(batch_size, dtype=np.float64)
        prefix *= total / batch_size
        return self._descend(prefix)

    def _build_scan(self) -> float:
        """Refresh the exclusive cumulative sum of the scan level; returns the total it ends on."""
        scan = self._scan
        np.cumsum(self._scan_level, out=scan[1:])
        total = float(scan[-1])
        if not total > 0:
            raise ValueError("cannot search an empty SumTree (total priority is 0); update() some leaves first")
        return total

    def _descend(self, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Leaves and priorities ``[B]`` for prefixes ``prefix [B]`` (not nan), using the current scan."""
        # Scan level: searchsorted replaces the descent to depth s. Out-of-range
        # prefixes need no clipping: below 0 the descent keeps left, past the
        # total it keeps right, and a zero leaf is caught below.
        scan, width = self._scan, self._width
        node = scan[1:].searchsorted(prefix, side="right")
        np.minimum(node, width - 1, out=node)
        u = prefix - scan.take(node)
        node += width
        # Below: binary descent, one level per step for the whole batch.
        # Positional arguments and preallocated outputs: call overhead is the cost.
        take, add, greater_equal = self._sum.take, np.add, np.greater_equal
        multiply, subtract = np.multiply, np.subtract
        batch = prefix.shape[0]
        left = np.empty(batch, dtype=np.float64)
        step = np.empty(batch, dtype=np.float64)
        go_right = np.empty(batch, dtype=bool)
        for level in range(self.depth - self.scan_depth, 0, -1):
            add(node, node, node)  # left child
            take(node, None, left, "clip")  # indices are in range; "clip" skips a buffered copy
            greater_equal(u, left, go_right)
            if level > 1:  # the leaf level needs no remainder
                multiply(left, go_right, step)
                subtract(u, step, u)
            add(node, go_right, node)
        priority = take(node)
        node -= self._n_slots
        if np.count_nonzero(priority) < batch:  # round-off led into a zero subtree: search again, guarded
            stray = priority == 0
            node[stray] = self._guarded_find(prefix[stray])
            priority[stray] = take(node[stray] + self._n_slots)
        return node, priority

    def _guarded_find(self, u: np.ndarray) -> np.ndarray:
        """Leaves ``[b]`` for prefixes ``u [b]``, entering only nodes of positive sum (current scan)."""
        scan, width, tree = self._scan, self._width, self._sum
        u = np.clip(u, 0.0, scan[-1])
        cell = scan[1:].searchsorted(u, side="right")
        positive = np.flatnonzero(self._scan_level > 0)  # not empty: total > 0
        # The next positive cell, or the last one.
        cell = positive[np.minimum(positive.searchsorted(cell), positive.size - 1)]
        u = np.maximum(u - scan[cell], 0.0)
        node = cell + width
        for _ in range(self.depth - self.scan_depth):
            node <<= 1
            left, right = tree[node], tree[node + 1]
            go_right = ((u >= left) & (right > 0)) | (left == 0)
            u = np.where(go_right, u - left, u)
            node += go_right
        return node - self._n_slots

    def _refresh(self, node: np.ndarray) -> None:
        """Recompute the ancestors of leaf slots ``node [B]`` (overwritten) up to the scan level."""
        batch = node.shape[0]
        children = np.empty(batch, dtype=np.complex128)  # (left, right) = (real, imag)
        left, right = children.real, children.imag
        parent = np.empty(batch, dtype=np.float64)
        one = np.ones(batch, dtype=np.int64)  # an array operand: cheaper than a scalar in the shift
        tree, take, right_shift, add = self._sum, self._pairs.take, np.right_shift, np.add
        # A parent shared by several leaves is written several times with the same
        # value, so the unspecified order of repeated index assignments is harmless
        # (and ``tree[node] = ...`` costs half of ``tree.put``).
        for _ in range(self.depth - self.scan_depth):
            right_shift(node, one, node)
            take(node, None, children, "clip")  # in range; "clip" skips a buffered copy
            add(left, right, parent)
            tree[node] = parent

    def _track_min(self, old: np.ndarray, new: np.ndarray, new_min: float) -> None:
        """Update the running minimum after distinct leaves went from ``old [B]`` to ``new [B]``.

        ``new_min`` is the smallest positive entry of ``new`` (``inf`` if none).
        """
        if self._min_stale:
            return  # the next read rescans
        current = self._min
        if new_min < current:  # every other leaf is >= current > new_min
            self._min = new_min
            self._min_count = int(np.count_nonzero(new == new_min))
            return
        if current == np.inf:
            return  # no positive leaf before or after
        count = self._min_count - int(np.count_nonzero(old == current))
        if new_min == current:
            count += int(np.count_nonzero(new == current))
        self._min_count = count
        self._min_stale = count == 0

    def _rescan_min(self) -> None:
        leaves = self._sum[self._n_slots : self._n_slots + self.capacity]
        self._min = _positive_min(leaves)
        self._min_count = int(np.count_nonzero(leaves == self._min)) if self._min < np.inf else 0
        self._min_stale = False

    def _check_indices(self, indices: ArrayLike) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)  # never written to: callers build new arrays from it
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D [B], got shape {idx.shape}")
        # One comparison catches both ends: negative indices are huge as unsigned.
        if np.count_nonzero(idx.view(np.uint64) >= self.capacity):
            self._raise_out_of_range(idx)
        return idx

    def _raise_out_of_range(self, idx: np.ndarray) -> None:
        raise IndexError(f"leaf index out of range [0, {self.capacity}): min {idx.min()}, max {idx.max()}")
