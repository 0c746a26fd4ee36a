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
  the paper, i.e. at the smallest stored priority (tracked by the min tree), not
  over the batch: ``max_j w_j = (N * p_min / total) ** -beta``, so
  ``w_i = (p_min / p_i) ** beta`` in ``(0, 1]``. Weights only scale updates down.
* ``beta`` is annealed linearly from ``per_beta`` to 1 over training: the
  trainer computes :func:`per_beta_at` from its progress and passes it to
  ``sample``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from marl.data.replay import ReplayBuffer, Schema
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
        tree: the sum/min tree over row priorities (0 for unwritten rows, which
            are therefore never drawn).
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
        """Stratified draw: one prefix sum uniform in each of B equal segments."""
        del sizes, n_envs  # unwritten rows have priority 0; leaves are flat row indices
        beta = self.per_beta if beta is None else float(beta)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        tree = self.tree
        prefix = rng.random(batch_size)
        prefix += np.arange(batch_size)
        prefix *= tree.total / batch_size
        indices, priorities = tree.find_with_priority(prefix)
        weights = importance_weights(priorities, tree.min, beta)
        return indices, weights

    def update_priorities(self, indices: np.ndarray, abs_td: np.ndarray) -> None:
        """Set the priorities of rows ``indices [B]`` from their ``|δ| [B]``."""
        priority = td_priority(abs_td, self.per_alpha, self.per_eps)
        if priority.shape != np.shape(indices):
            raise ValueError(f"one TD error per index expected: {priority.shape} vs {np.shape(indices)}")
        self.tree.update(indices, priority)
        if priority.size:
            self.max_priority = max(self.max_priority, float(priority.max()))

    def priorities(self, indices: ArrayLike) -> np.ndarray:
        """Current priorities ``[B]`` of rows ``indices [B]``."""
        return self.tree.get(indices)


class PrioritizedReplayBuffer(ReplayBuffer):
    """:class:`ReplayBuffer` with a :class:`PrioritizedSampler`.

    Args:
        schema, capacity, n_envs, n_step, gamma: as for :class:`ReplayBuffer`.
        per_alpha, per_eps, per_beta: see :class:`PrioritizedSampler` (defaults
            0.6, 1e-6, 0.4).

    ``sample(B, rng, beta)`` returns IS weights in ``ReplaySample.weights``; feed
    the learner's TD errors back with ``update_priorities(sample.indices, td)``.
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
    ) -> None:
        sampler = PrioritizedSampler(capacity, per_alpha=per_alpha, per_eps=per_eps, per_beta=per_beta)
        super().__init__(schema, capacity, n_envs, n_step=n_step, gamma=gamma, sampler=sampler)
        self.prioritized_sampler = sampler

    def priorities(self, indices: ArrayLike) -> np.ndarray:
        """Current priorities ``[B]`` of rows ``indices [B]`` (0 for unwritten rows)."""
        return self.prioritized_sampler.priorities(indices)
