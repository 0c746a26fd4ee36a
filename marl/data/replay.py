"""Replay buffer for off-policy learners: samplers and n-step targets over lane storage.

Storage and sampling are kept apart (as in TorchRL): :class:`~marl.data.storage.LaneStorage`
(:mod:`marl.data.storage`: the schema, per-env-copy lanes, rows packed into one record) holds
the rows and the write pointers, a sampler (:class:`UniformSampler` here,
``PrioritizedSampler`` in :mod:`marl.data.prioritized`) picks row indices, and
:class:`ReplayBuffer` joins the two and builds n-step targets. Rows, lanes, fields
and the conventions of ``next_obs`` at a truncation are described in
:mod:`marl.data.storage`.

n-step window of a row ``(t, e)``: rows ``t, t + 1, ...`` of lane ``e`` (the step
after row ``(t, e)`` is ``((t + 1) % L, e)``). It stops at the first row (the row
itself included) where *some* agent of the row is terminated or truncated, and at
the newest row of the lane (rows past the write pointer are either unwritten or
older data about to be overwritten). One window per row keeps ``next_state_n`` well
defined; an agent whose teammate's trajectory ended gets a shorter n-step target,
which is still a correct one (it bootstraps from ``next_obs_n``, unless it is
terminated itself). This relies on the collector flagging every agent's last step
with ``terminated`` or ``truncated`` (so a window never runs into the next episode).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from numpy.typing import ArrayLike

from marl.data.storage import (  # the schema API is also reachable from here
    NEXT_FIELDS,
    OPTIONAL_FIELDS,
    PACK_LIMIT_BYTES,
    REQUIRED_FIELDS,
    FieldSpec,
    LaneStorage,
    Schema,
    normalize_schema,
    replay_schema,
)

__all__ = [
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "FieldSpec",
    "LaneStorage",
    "ReplayBuffer",
    "ReplaySample",
    "Sampler",
    "Schema",
    "UniformSampler",
    "normalize_schema",
    "nstep_lengths",
    "nstep_return",
    "reduce_td_errors",
    "replay_schema",
    "uniform_rows",
]

Array = np.ndarray | torch.Tensor


class ReplaySample(NamedTuple):
    """A sampled batch of B rows (numpy arrays, or tensors after ``to_torch``).

    Per-agent fields are ``[B, A, ...]`` as in the schema. The ``*_n`` fields are
    the n-step target (equal to the one-step fields when ``n_step == 1``): with
    ``n'`` the window length of the row (``1 <= n' <= n_step``),

    * ``reward_n [B, A]`` = ``sum_{k < n'} gamma**k * reward[t + k]`` (float32),
    * ``discount_n [B]`` = ``gamma**n'`` (float32),
    * ``next_obs_n``, ``terminated_n [B, A]``, ``next_alive_n``, and when stored
      ``next_action_mask_n``, ``next_state_n``: the fields of row ``t + n' - 1``.

    The target is ``reward_n + discount_n[:, None] * (1 - terminated_n) * V(next_obs_n)``.

    Attributes:
        indices: ``[B]`` int64 flat row indices (``t * E + e``), for
            ``update_priorities``.
        weights: ``[B]`` float32 importance-sampling weights (all 1 for uniform
            sampling).
        extras: schema fields without a named attribute, ``[B, ...]`` each.
        action_mask, next_action_mask, state, next_state: ``None`` when not in
            the schema.

    Memory: the arrays of :meth:`ReplayBuffer.sample` are fresh (never views of
    the stored rows, nor of an earlier sample) and writable, and no two fields
    overlap; the storage's small fields come as strided views into one gathered
    block (see :mod:`marl.data.storage`), so they are not C-contiguous. With
    ``n_step == 1`` each ``<name>_n`` *is* ``<name>`` (the same array).
    """

    indices: Array
    obs: Array
    action: Array
    reward: Array
    next_obs: Array
    terminated: Array
    truncated: Array
    alive: Array
    next_alive: Array
    reward_n: Array
    discount_n: Array
    next_obs_n: Array
    terminated_n: Array
    next_alive_n: Array
    weights: Array
    extras: dict[str, Array]
    action_mask: Array | None = None
    next_action_mask: Array | None = None
    next_action_mask_n: Array | None = None
    state: Array | None = None
    next_state: Array | None = None
    next_state_n: Array | None = None

    def to_torch(self, device: torch.device | str = "cpu") -> ReplaySample:
        """The same sample as tensors on ``device`` (dtypes kept: uint8 stays uint8)."""

        def conv(x: Array | None) -> torch.Tensor | None:
            return None if x is None else torch.as_tensor(x, device=device)

        converted = {name: conv(value) for name, value in zip(self._fields, self) if name != "extras"}
        return ReplaySample(**converted, extras={k: conv(v) for k, v in self.extras.items()})


_SAMPLE_FIELDS = frozenset(ReplaySample._fields)


def nstep_lengths(ends: np.ndarray, steps_ahead: np.ndarray) -> np.ndarray:
    """Window lengths ``n' [B]`` of n-step targets.

    Args:
        ends: ``[n, B]`` bool, row ``t + k`` ends a trajectory (some agent of the
            row is terminated or truncated at it).
        steps_ahead: ``[B]`` rows written after row ``t`` in its lane.

    Returns:
        ``n' = min(n, k_end + 1, steps_ahead + 1)`` (int64), ``k_end`` the first ``k`` with ``ends[k]``.
    """
    n = ends.shape[0]
    first_end = np.where(ends.any(axis=0), ends.argmax(axis=0), n - 1) + 1
    return np.minimum(first_end, np.minimum(steps_ahead + 1, n))


def nstep_return(reward: np.ndarray, lengths: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Discounted sums over windows of different lengths.

    Args:
        reward: ``[n, B, ...]`` rewards of rows ``t, t + 1, ..., t + n - 1``.
        lengths: ``[B]`` window lengths ``n'`` in ``[1, n]``; rewards at
            ``k >= n'`` are ignored.
        gamma: discount factor.

    Returns:
        ``(reward_n [B, ...], discount_n [B])`` float32:
        ``sum_{k < n'} gamma**k reward[k]`` and ``gamma**n'``.
    """
    n = reward.shape[0]
    powers = gamma ** np.arange(n, dtype=np.float64)
    weight = powers[:, None] * (np.arange(n)[:, None] < lengths[None, :])  # [n, B]
    weight = weight.reshape(weight.shape + (1,) * (reward.ndim - 2))
    reward_n = (weight * reward).sum(axis=0).astype(np.float32)
    return reward_n, (gamma ** lengths.astype(np.float64)).astype(np.float32)


class Sampler(Protocol):
    """Chooses rows to sample; see :class:`UniformSampler` and ``PrioritizedSampler``.

    Attributes:
        capacity: the row count it was built for, or ``None`` when it works for any.
        prioritized: whether ``update_priorities`` has an effect.
    """

    capacity: int | None
    prioritized: bool

    def on_add(self, indices: np.ndarray) -> None:
        """Rows ``indices [N]`` were (over)written."""

    def sample(
        self, sizes: np.ndarray, n_envs: int, batch_size: int, rng: np.random.Generator, beta: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(indices [B] int64, weights [B] float32)`` among written rows.

        ``sizes [E]``: rows written per lane (valid slots ``[0, size)``).
        """
        ...

    def update_priorities(self, indices: np.ndarray, abs_td: np.ndarray) -> None:
        """New ``|TD error| [B]`` of rows ``indices [B]``."""

    def state_dict(self) -> dict[str, Any]:
        """What sampling depends on besides the stored rows (numpy arrays and numbers; keys kept
        apart from the storage's ``fields, pos, size, count``)."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (``state`` may hold the storage's keys too); ``ValueError``
        naming what does not fit, nothing changed then."""


def uniform_rows(sizes: np.ndarray, n_envs: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Flat indices (array of ``shape``) of rows drawn uniformly among the written ones.

    ``sizes [E]``: rows written per lane, in slots ``[0, size)``.
    """
    ends = np.cumsum(sizes)
    draw = rng.integers(0, ends[-1], size=shape)
    lanes = np.searchsorted(ends, draw, side="right")
    slots = draw - (ends[lanes] - sizes[lanes])
    return slots * n_envs + lanes


class UniformSampler:
    """Every written row with equal probability, with replacement."""

    capacity: int | None = None
    prioritized: bool = False

    def on_add(self, indices: np.ndarray) -> None:
        del indices  # uniform sampling keeps no per-row state

    def sample(
        self, sizes: np.ndarray, n_envs: int, batch_size: int, rng: np.random.Generator, beta: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        del beta
        return uniform_rows(sizes, n_envs, (batch_size,), rng), np.ones(batch_size, dtype=np.float32)

    def update_priorities(self, indices: np.ndarray, abs_td: np.ndarray) -> None:
        del indices, abs_td

    def state_dict(self) -> dict[str, Any]:
        return {}  # uniform sampling keeps no state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        del state


def reduce_td_errors(td_errors: ArrayLike | torch.Tensor, alive: np.ndarray | None) -> np.ndarray:
    """One ``|TD error|`` per row: ``[B]`` float64.

    ``td_errors`` is ``[B]`` (one per row, e.g. a value-decomposed team) or
    ``[B, A]`` (per agent); per-agent errors are averaged in absolute value over
    the agents alive at the row (``alive [B, A]``; all agents when ``None``).
    A row with no alive agent gets 0.
    """
    if isinstance(td_errors, torch.Tensor):
        td_errors = td_errors.detach().cpu().numpy()
    td = np.abs(np.asarray(td_errors, dtype=np.float64))
    if td.ndim == 1:
        return td
    if td.ndim != 2:
        raise ValueError(f"td_errors must be [B] or [B, A], got shape {td.shape}")
    if alive is None:
        return td.mean(axis=1)
    mask = np.asarray(alive, dtype=bool)
    count = mask.sum(axis=1)
    return np.where(mask, td, 0.0).sum(axis=1) / np.maximum(count, 1)


class ReplayBuffer:
    """Circular replay of rows ``[A, ...]`` with per-env-copy lanes and n-step targets.

    Args:
        schema: field name -> ``(shape, dtype)`` of one row (see
            :func:`replay_schema`).
        capacity: total rows C over all lanes (C // n_envs per env copy); must be a
            multiple of ``n_envs``.
        n_envs: env copies E, one lane each.
        n_step: length n of the n-step targets (1: one-step).
        gamma: discount factor used for ``reward_n`` and ``discount_n``.
        sampler: which rows to draw; default :class:`UniformSampler`.
        pack_limit: storage layout (a speed knob, no effect on values): fields
            whose row takes at most this many bytes are packed into one record,
            see :class:`LaneStorage`. Default :data:`PACK_LIMIT_BYTES` (1024).

    Example (two env copies, one agent with 3 features):

    >>> import numpy as np
    >>> flag = ((1,), np.bool_)
    >>> schema = {"obs": ((1, 3), np.float32), "next_obs": ((1, 3), np.float32),
    ...           "action": ((1,), np.int64), "reward": ((1,), np.float32),
    ...           "terminated": flag, "truncated": flag, "alive": flag, "next_alive": flag}
    >>> buffer = ReplayBuffer(schema, capacity=8, n_envs=2, n_step=3, gamma=0.5)
    >>> row = {name: np.zeros((2, *shape), dtype) for name, (shape, dtype) in schema.items()}
    >>> for step in range(3):
    ...     row["reward"][:] = step + 1
    ...     indices = buffer.add(row)
    >>> batch = buffer.sample(64, np.random.default_rng(0))
    >>> batch.obs.shape, batch.reward_n.shape, batch.discount_n.shape
    ((64, 1, 3), (64, 1), (64,))
    >>> sorted(set(batch.reward_n[:, 0].tolist()))  # rows 0, 1, 2 of each lane: 1 + 0.5 * 2 + 0.25 * 3, ...
    [2.75, 3.0, 3.5]
    """

    def __init__(
        self,
        schema: Schema,
        capacity: int,
        n_envs: int,
        *,
        n_step: int = 1,
        gamma: float = 0.99,
        sampler: Sampler | None = None,
        pack_limit: int = PACK_LIMIT_BYTES,
    ) -> None:
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        self.storage = LaneStorage(schema, capacity, n_envs, pack_limit=pack_limit, lookahead=n_step > 1)
        self.sampler: Sampler = UniformSampler() if sampler is None else sampler
        if self.sampler.capacity is not None and self.sampler.capacity != self.storage.capacity:
            raise ValueError(
                f"sampler was built for {self.sampler.capacity} rows but the buffer holds {self.storage.capacity}"
            )
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self._extra_fields = tuple(name for name in self.schema if name not in _SAMPLE_FIELDS)
        self._next_fields = tuple(name for name in NEXT_FIELDS if name in self.schema)

    @property
    def schema(self) -> dict[str, FieldSpec]:
        return self.storage.schema

    @property
    def capacity(self) -> int:
        return self.storage.capacity

    @property
    def n_envs(self) -> int:
        return self.storage.n_envs

    def __len__(self) -> int:
        """Rows currently stored (at most ``capacity``)."""
        return len(self.storage)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to sample as if never stopped (numpy arrays and numbers).

        :meth:`LaneStorage.state_dict` (``fields, pos, size, count``) and the sampler's
        state (a prioritized sampler's ``priorities`` and ``max_priority``), so any buffer
        with a prioritized sampler, hindsight included, resumes exactly. Subclasses add keys.
        """
        return {**self.storage.state_dict(), **self.sampler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a buffer built alike (schema, capacity, ``n_envs``, sampler kind).

        Sampling after a restore with the same ``rng`` draws the same rows (and
        importance weights) as the saved buffer would have.

        Raises:
            ValueError: naming what differs; the rows are checked first and the
                sampler checks its own state before changing, so a refused state
                changes nothing.
        """
        self.storage.check_state_dict(state)
        self.sampler.load_state_dict(state)
        self.storage.load_state_dict(state)

    def add(self, batch: Mapping[str, ArrayLike], env_indices: ArrayLike | None = None) -> np.ndarray:
        """Store one step of N env copies; see :meth:`LaneStorage.add`.

        ``batch[name]`` is ``[N, *shape]`` (N = E unless ``env_indices [N]`` names
        the lanes). Returns the ``[N]`` flat indices written.
        """
        indices = self.storage.add(batch, env_indices)
        self.sampler.on_add(indices)
        return indices

    def cut(self, lanes: ArrayLike) -> None:
        """End the trajectories of env copies ``lanes`` at their last stored row (:meth:`LaneStorage.cut`): their
        next rows start new ones, and no n-step window joins the two."""
        self.storage.cut(lanes)

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float | None = None) -> ReplaySample:
        """Draw ``batch_size`` rows (with replacement) among the written ones.

        Args:
            batch_size: B.
            rng: the generator that draws the rows.
            beta: importance-sampling exponent for a prioritized sampler (from
                ``per_beta_at``); ``None`` uses the sampler's own ``per_beta``.
                Ignored by uniform sampling.
        """
        if len(self.storage) == 0:
            raise ValueError("cannot sample from an empty replay buffer; add() rows first")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        indices, weights = self.sampler.sample(self.storage.size, self.n_envs, batch_size, rng, beta)
        return self._build(indices, weights)

    def update_priorities(
        self, indices: ArrayLike, td_errors: ArrayLike | torch.Tensor, alive: np.ndarray | None = None
    ) -> None:
        """Feed TD errors of sampled rows back to a prioritized sampler.

        A no-op with uniform sampling, so a trainer may call it unconditionally.

        Args:
            indices: ``[B]`` the ``ReplaySample.indices`` they belong to.
            td_errors: ``[B]`` or ``[B, A]`` TD errors (numpy or torch); per-agent
                errors become one number per row with :func:`reduce_td_errors`.
            alive: ``[B, A]`` agents counted in that mean; default: the stored
                ``alive`` of the rows.
        """
        if not self.sampler.prioritized:
            return
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(td_errors, torch.Tensor):
            td_errors = td_errors.detach().cpu().numpy()
        td = np.asarray(td_errors)
        if td.ndim == 2 and alive is None:
            alive = self.storage.gather("alive", idx)
        self.sampler.update_priorities(idx, reduce_td_errors(td, alive))

    def _build(self, indices: np.ndarray, weights: np.ndarray) -> ReplaySample:
        rows = self.storage.gather_all(indices)
        extras = {name: rows.pop(name) for name in self._extra_fields}
        if self.n_step == 1:
            rows["reward_n"] = rows["reward"]
            rows["discount_n"] = np.full(indices.shape[0], self.gamma, dtype=np.float32)
            for name in self._next_fields:
                rows[name + "_n"] = rows[name]
        else:
            rows.update(self.nstep_target(indices))
        return ReplaySample(indices=indices, weights=weights, extras=extras, **rows)

    def nstep_window(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``n_step`` rows from each of rows ``indices [B]`` on, in its lane: where they are, their rewards and
        where they end (one gather).

        Returns:
            ``(window [n, B] flat indices of rows t, t + 1, ..., reward [n, B, A], ends [n, B] bool)``: ``ends[k]``
            when some agent of row ``t + k`` is terminated or truncated (or its lane was :meth:`cut` there).
        """
        storage = self.storage
        n, n_envs, length = self.n_step, storage.n_envs, storage.lane_length
        slots, lanes = storage.unravel(indices)
        ahead = np.arange(n)[:, None]  # [n, 1]
        window = ((slots[None, :] + ahead) % length) * n_envs + lanes[None, :]  # [n, B] flat indices
        reward, ends = storage.gather_lookahead(window)
        return window, reward, ends

    def nstep_lengths(self, indices: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Window lengths ``n' [B]`` of rows ``indices`` (:func:`nstep_lengths` with their lanes' written rows)."""
        slots, lanes = self.storage.unravel(indices)
        return nstep_lengths(ends, self.storage.steps_ahead(slots, lanes))

    def nstep_target(self, indices: np.ndarray, lengths: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The n-step fields of rows ``indices [B]`` (``reward_n, discount_n`` and the ``<next field>_n``).

        Args:
            indices: ``[B]`` flat row indices.
            lengths: ``[B]`` window lengths in ``[1, n_step]``, e.g. cut where rows of another buffer written
                in lockstep end (value decomposition's groups); default: cut where this buffer's rows end.
        """
        storage = self.storage
        window, reward, ends = self.nstep_window(indices)
        if lengths is None:
            lengths = self.nstep_lengths(indices, ends)
        reward_n, discount_n = nstep_return(reward, lengths, self.gamma)
        last = window[lengths - 1, np.arange(indices.shape[0])]
        target = {"reward_n": reward_n, "discount_n": discount_n}
        target.update({name + "_n": value for name, value in storage.gather_fields(self._next_fields, last).items()})
        return target
