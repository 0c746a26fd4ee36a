"""Prioritized experience replay (Schaul et al. 2016, "Prioritized Experience Replay").

* Priority of a row: ``p = (|δ| + per_eps) ** per_alpha``, where ``δ`` is the
  row's TD error. A row holds several agents; their errors are reduced to one
  number first: the mean ``|δ|`` over the agents alive at the row
  (:func:`marl.data.replay.reduce_td_errors`). With n-step targets ``δ`` is the
  n-step TD error the learner computed; nothing changes here.
* New rows enter at the largest priority assigned so far (1.0 before any
  update), so each is sampled soon after it arrives.
* Sampling is stratified: the total priority is cut into B equal segments and
  one prefix sum is drawn uniformly in each, then located in the sum tree.
  ``P(i) = p_i / sum_j p_j``.
* Importance-sampling weights ``w_i = (N * P(i)) ** -beta / max_j w_j`` with N
  the number of rows stored. The maximum is taken over the *whole buffer*, as in
  the paper, i.e. at the smallest stored priority (the sum tree's exact running
  minimum), not over the batch: ``max_j w_j = (N * p_min / total) ** -beta``, so
  ``w_i = (p_min / p_i) ** beta`` in ``(0, 1]``. Weights only scale updates down.
* ``beta`` is annealed linearly from ``per_beta`` to 1 over training: the
  trainer computes :func:`per_beta_at` from its progress and passes it to
  ``sample``.
* Checkpoints: the sampler's ``state_dict()`` holds every row's priority and
  ``max_priority``; :meth:`ReplayBuffer.state_dict` saves it with the rows (for
  any buffer with this sampler, hindsight included), and ``load_state_dict``
  rebuilds the sum tree once, bit for bit (:meth:`SumTree.set_leaves`), so a
  resumed buffer draws the same rows from the same generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from marl.data.replay import ReplayBuffer
from marl.data.storage import PACK_LIMIT_BYTES, Schema
from marl.data.sum_tree import SumTree


def per_beta_at(progress: float, beta0: float = 0.4) -> float:
    """PER importance exponent at a point of training.

    Args:
        progress: fraction of training done, clipped to ``[0, 1]`` (e.g.
            ``env_steps / total_env_steps``).
        beta0: value at progress 0 (``per_beta``).

    Returns:
        ``beta0 + progress * (1 - beta0)``: ``beta0`` at the start, 1.0 at the end.
    """
    p = min(max(float(progress), 0.0), 1.0)
    return beta0 + p * (1.0 - beta0)


def td_priority(abs_td: ArrayLike, per_alpha: float, per_eps: float) -> np.ndarray:
    """``(|δ| + per_eps) ** per_alpha`` elementwise, float64."""
    return (np.abs(np.asarray(abs_td, dtype=np.float64)) + per_eps) ** per_alpha


def importance_weights(priorities: ArrayLike, min_priority: float, beta: float) -> np.ndarray:
    """Normalized importance-sampling weights ``[B]`` float32.

    ``w_i = (N P(i))^-beta / max_j (N P(j))^-beta`` with ``P(i) = p_i / total``;
    the maximum over the buffer is reached at the smallest priority, and N and
    the total cancel: ``w_i = (min_priority / p_i) ** beta``.
    """
    p = np.asarray(priorities, dtype=np.float64)
    return ((min_priority / p) ** beta).astype(np.float32)


class PrioritizedSampler:
    """Samples rows in proportion to their priority, with a sum tree.

    Args:
        capacity: rows C of the buffer it serves (leaf ``i`` = flat row ``i``).
        per_alpha: prioritization exponent α in [0, 1] (0: uniform). Default 0.6.
        per_eps: added to ``|δ|`` so no row gets priority 0. Default 1e-6.
        per_beta: importance exponent used when ``sample`` gets no ``beta``.
            Default 0.4.

    Attributes:
        tree: the sum tree over row priorities, with their exact running
            minimum (0 for unwritten rows, which are therefore never drawn).
        max_priority: priority given to new rows (largest assigned so far).
    """

    prioritized: bool = True

    def __init__(
        self,
        capacity: int,
        *,
        per_alpha: float = 0.6,
        per_eps: float = 1e-6,
        per_beta: float = 0.4,
    ) -> None:
        if not 0.0 <= per_alpha <= 1.0:
            raise ValueError(f"per_alpha must lie in [0, 1], got {per_alpha}")
        if not per_eps > 0.0:
            raise ValueError(f"per_eps must be > 0 so that no row gets priority 0, got {per_eps}")
        if not 0.0 <= per_beta <= 1.0:
            raise ValueError(f"per_beta must lie in [0, 1], got {per_beta}")
        self.capacity: int | None = int(capacity)
        self.per_alpha = float(per_alpha)
        self.per_eps = float(per_eps)
        self.per_beta = float(per_beta)
        self.tree = SumTree(capacity)
        self.max_priority = 1.0

    def on_add(self, indices: np.ndarray) -> None:
        self.tree.update(indices, self.max_priority)

    def sample(
        self, sizes: np.ndarray, n_envs: int, batch_size: int, rng: np.random.Generator, beta: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stratified draw (:meth:`SumTree.sample_stratified`) and importance weights ``[B]``."""
        del sizes, n_envs  # unwritten rows have priority 0; leaves are flat row indices
        beta = self.per_beta if beta is None else float(beta)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        indices, priorities = self.tree.sample_stratified(batch_size, rng)
        return indices, importance_weights(priorities, self.tree.min, beta)

    def update_priorities(self, indices: np.ndarray, abs_td: np.ndarray) -> None:
        """Set the priorities of rows ``indices [B]`` from their ``|δ| [B]``."""
        priority = td_priority(abs_td, self.per_alpha, self.per_eps)
        if priority.shape != np.shape(indices):
            raise ValueError(f"one TD error per index expected: {priority.shape} vs {np.shape(indices)}")
        self.tree.update(indices, priority)  # refuses nan / inf TD errors before anything changes
        if priority.size:
            self.max_priority = max(self.max_priority, float(np.maximum.reduce(priority)))

    def priorities(self, indices: ArrayLike) -> np.ndarray:
        """Current priorities ``[B]`` of rows ``indices [B]``."""
        return self.tree.get(indices)

    def state_dict(self) -> dict[str, np.ndarray | float]:
        """``priorities``: ``[C]`` float64 copy of every row's priority (0 = unwritten);
        ``max_priority``: the priority given to new rows."""
        return {"priorities": self.tree.leaves, "max_priority": float(self.max_priority)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a sampler of the same capacity.

        The tree is rebuilt from the priorities (:meth:`SumTree.set_leaves`), bit
        for bit the tree that was saved, so the same ``rng`` draws the same rows.

        Raises:
            ValueError: naming the entry that is missing or wrong (shape, nan,
                negative); a refused state changes nothing.
        """
        priorities, max_priority = _checked_sampler_state(state, self.tree.capacity)
        self.tree.set_leaves(priorities)
        self.max_priority = max_priority


def _checked_sampler_state(state: Mapping[str, Any], capacity: int) -> tuple[np.ndarray, float]:
    """``(priorities [C] float64, max_priority)`` from a :meth:`PrioritizedSampler.state_dict`.

    Raises:
        ValueError: a key is missing, the priorities are not ``[capacity]``
            finite and >= 0, or ``max_priority`` is not positive and finite.
    """
    missing = sorted({"priorities", "max_priority"} - set(state))
    if missing:
        raise ValueError(
            f"saved prioritized replay lacks {missing} (it was saved without prioritized sampling)"
        )
    priorities = np.asarray(state["priorities"], dtype=np.float64)
    if priorities.shape != (capacity,):
        raise ValueError(
            f"saved priorities have shape {priorities.shape}, the sampler holds ({capacity},) rows: "
            "the capacity differs"
        )
    if not (np.minimum.reduce(priorities) >= 0 and np.maximum.reduce(priorities) < np.inf):
        raise ValueError("saved priorities must be finite and >= 0")
    max_priority = float(state["max_priority"])
    if not 0.0 < max_priority < np.inf:
        raise ValueError(f"saved max_priority must be positive and finite, got {max_priority}")
    return priorities, max_priority


class PrioritizedReplayBuffer(ReplayBuffer):
    """:class:`ReplayBuffer` with a :class:`PrioritizedSampler`.

    Args:
        schema, capacity, n_envs, n_step, gamma: as for :class:`ReplayBuffer`.
        per_alpha, per_eps, per_beta: see :class:`PrioritizedSampler` (defaults
            0.6, 1e-6, 0.4).
        pack_limit: storage layout, as for :class:`ReplayBuffer` (default 1024 bytes).

    ``sample(B, rng, beta)`` returns IS weights in ``ReplaySample.weights``; feed
    the learner's TD errors back with ``update_priorities(sample.indices, td)``.
    ``state_dict`` / ``load_state_dict`` are :class:`ReplayBuffer`'s: rows, write
    pointers, ``priorities`` (``[C]`` float64) and ``max_priority``.
    """

    def __init__(
        self,
        schema: Schema,
        capacity: int,
        n_envs: int,
        *,
        n_step: int = 1,
        gamma: float = 0.99,
        per_alpha: float = 0.6,
        per_eps: float = 1e-6,
        per_beta: float = 0.4,
        pack_limit: int = PACK_LIMIT_BYTES,
    ) -> None:
        sampler = PrioritizedSampler(capacity, per_alpha=per_alpha, per_eps=per_eps, per_beta=per_beta)
        super().__init__(schema, capacity, n_envs, n_step=n_step, gamma=gamma, sampler=sampler, pack_limit=pack_limit)
        self.prioritized_sampler = sampler

    def priorities(self, indices: ArrayLike) -> np.ndarray:
        """Current priorities ``[B]`` of rows ``indices [B]`` (0 for unwritten rows)."""
        return self.prioritized_sampler.priorities(indices)
