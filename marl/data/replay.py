"""Replay buffer for off-policy learners: lane storage, samplers, n-step targets.

Storage and sampling are kept apart (as in TorchRL): :class:`LaneStorage` holds
the preallocated arrays and the write pointers, a sampler (:class:`UniformSampler`
here, ``PrioritizedSampler`` in :mod:`marl.data.prioritized`) picks row indices,
and :class:`ReplayBuffer` joins the two and builds n-step targets.

Rows and lanes
--------------
A *row* holds all agents of one group of one env copy at one step: every field
is shaped ``[A, ...]`` (``obs [A, 18]``, ``reward [A]``, ``alive [A]``...), or
anything else the schema says (``state [S]``). Rows of the E env copies are kept
in E separate circular *lanes*: each field is one array ``[L, E, *shape]``
(``L = capacity // E`` rows per lane), and row ``(t, e)`` has the flat index
``t * E + e``. A lane holds one env copy's trajectory in time order, so the
step after row ``(t, e)`` is ``((t + 1) % L, e)``; n-step targets look ahead
within the lane and stop at the lane's write pointer (rows past it are either
unwritten or older data about to be overwritten). Each lane has its own write
pointer, so ``add`` may write any subset of env copies (``env_indices``);
overwriting is per lane, oldest row first.

n-step window of a row: it stops at the first row (the row itself included)
where *some* agent of the row is terminated or truncated, and at the newest row
of the lane. One window per row keeps ``next_state_n`` well defined; an agent
whose teammate's trajectory ended gets a shorter n-step target, which is still
a correct one (it bootstraps from ``next_obs_n``, unless it is terminated
itself). This relies on the collector flagging every agent's last step with
``terminated`` or ``truncated`` (so a window never runs into the next episode).

Fields and conventions
----------------------
The schema maps a field name to ``(shape, dtype)`` of one row; dtypes are kept
(a ``uint8`` image stays ``uint8``). Required fields: ``obs, action, reward,
next_obs, terminated, truncated, alive, next_alive``; optional fields with a
known meaning: ``action_mask, next_action_mask, state, next_state``; any other
field is stored and returned in ``ReplaySample.extras``.

* ``terminated`` and ``truncated`` are stored apart, per agent: ``terminated``
  stops bootstrapping, ``truncated`` does not.
* ``next_obs`` must be the real observation after the step. When the episode
  ended at the step (terminated or truncated), the caller passes the final
  observation (``GroupTransition.final_obs``), never the first observation of
  the next episode that an auto-resetting vector env returns; likewise
  ``next_state`` is the final state there.
* Entries of agents not alive at a step are masked by ``alive``; learners ignore
  them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from numpy.typing import ArrayLike, DTypeLike

from marl.types import GroupSpec

REQUIRED_FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "alive", "next_alive")
OPTIONAL_FIELDS = ("action_mask", "next_action_mask", "state", "next_state")
_NEXT_FIELDS = ("next_obs", "terminated", "next_alive", "next_action_mask", "next_state")
_FLAG_FIELDS = ("terminated", "truncated", "alive", "next_alive")
_RESERVED = frozenset({"indices", "weights", "extras", "reward_n", "discount_n"} | {f + "_n" for f in _NEXT_FIELDS})


class FieldSpec(NamedTuple):
    """Shape and dtype of one field of one row (no batch axis)."""

    shape: tuple[int, ...]
    dtype: np.dtype


Schema = Mapping[str, FieldSpec | tuple[tuple[int, ...], DTypeLike]]
"""Field name -> ``(shape, dtype)`` of one row, e.g. ``{"obs": ((A, 18), np.float32), ...}``."""


def normalize_schema(schema: Schema) -> dict[str, FieldSpec]:
    """Check a schema and return it as ``{name: FieldSpec}``.

    Raises:
        ValueError: a required field is missing, a name is reserved for sample
            outputs (``reward_n``, ``weights``...), ``reward`` is not ``[A]``, a
            flag field is not bool ``[A]``, or a ``next_*`` field differs from
            its pair.
    """
    out = {name: FieldSpec(tuple(int(d) for d in shape), np.dtype(dtype)) for name, (shape, dtype) in schema.items()}
    reserved = sorted(set(out) & _RESERVED)
    if reserved:
        raise ValueError(f"schema field names {reserved} are reserved for sample outputs; rename them")
    missing = [name for name in REQUIRED_FIELDS if name not in out]
    if missing:
        raise ValueError(f"replay schema lacks required fields {missing}; add them (see replay_schema())")
    per_agent = out["reward"].shape
    if len(per_agent) != 1:
        raise ValueError(f"reward must be shaped [A] (one per agent), got {per_agent}")
    for name in _FLAG_FIELDS:
        if out[name].shape != per_agent or out[name].dtype != np.bool_:
            raise ValueError(f"{name} must be bool {per_agent} like reward, got {out[name].dtype} {out[name].shape}")
    for name in ("obs", "action", "state", "action_mask"):
        nxt = "next_" + name
        if name in out and nxt in out and out[name] != out[nxt]:
            raise ValueError(f"{nxt} must match {name}: {out[nxt]} vs {out[name]}")
    return out


def replay_schema(group: GroupSpec, state_shape: tuple[int, ...] | None = None) -> dict[str, FieldSpec]:
    """The standard schema for one group's rows.

    Args:
        group: the group; its agents give ``A`` and its spaces the shapes and
            dtypes. When ``group.has_action_mask`` the masks are stored
            (``[A, n_actions]`` bool); when ``group.goal = (start, stop)`` the
            achieved goals ``achieved_goal, next_achieved_goal [A, stop - start]``
            float32 are stored for hindsight relabelling.
        state_shape: shape of the global state, or ``None`` for no state fields.
    """
    n = group.n_agents
    obs = FieldSpec((n, *group.obs_space.shape), np.dtype(group.obs_space.dtype))
    flag = FieldSpec((n,), np.dtype(np.bool_))
    schema = {
        "obs": obs,
        "next_obs": obs,
        "action": FieldSpec((n, *group.action_shape), group.action_dtype),
        "reward": FieldSpec((n,), np.dtype(np.float32)),
        "terminated": flag,
        "truncated": flag,
        "alive": flag,
        "next_alive": flag,
    }
    if group.has_action_mask:
        mask = FieldSpec((n, int(group.action_space.n)), np.dtype(np.bool_))
        schema["action_mask"] = schema["next_action_mask"] = mask
    if state_shape is not None:
        schema["state"] = schema["next_state"] = FieldSpec(tuple(state_shape), np.dtype(np.float32))
    if group.goal is not None:
        goal = FieldSpec((n, group.goal[1] - group.goal[0]), np.dtype(np.float32))
        schema["achieved_goal"] = schema["next_achieved_goal"] = goal
    return schema


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


class LaneStorage:
    """Preallocated circular lanes, one per env copy: field ``[L, E, *shape]``.

    Args:
        schema: field name -> ``(shape, dtype)`` of one row.
        capacity: total rows C; must be a multiple of ``n_envs`` (``L = C // E``).
        n_envs: number of lanes E (env copies).

    Attributes:
        lane_length: rows per lane L.
        pos: ``[E]`` next slot to write in each lane.
        size: ``[E]`` rows written and not yet overwritten (slots ``[0, size)``).
        count: ``[E]`` rows ever written to each lane (absolute step counter; the
            row written at absolute step ``s`` sits at slot ``s % L``).
    """

    def __init__(self, schema: Schema, capacity: int, n_envs: int) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if capacity < n_envs or capacity % n_envs:
            fix = max(n_envs, capacity - capacity % n_envs)
            raise ValueError(
                f"capacity {capacity} must be a positive multiple of n_envs {n_envs} (one lane per env copy); "
                f"use e.g. {fix}"
            )
        self.schema = normalize_schema(schema)
        self.n_envs = int(n_envs)
        self.lane_length = capacity // n_envs
        self.capacity = self.lane_length * self.n_envs
        self._data = {
            name: np.zeros((self.lane_length, self.n_envs, *spec.shape), dtype=spec.dtype)
            for name, spec in self.schema.items()
        }
        # Flat views [C, *shape] indexed by t * E + e (no copy: the arrays are contiguous).
        self._flat = {name: a.reshape(self.capacity, *a.shape[2:]) for name, a in self._data.items()}
        self.pos = np.zeros(self.n_envs, dtype=np.int64)
        self.size = np.zeros(self.n_envs, dtype=np.int64)
        self.count = np.zeros(self.n_envs, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.size.sum())

    def field(self, name: str) -> np.ndarray:
        """Read-only view ``[L, E, *shape]`` of one stored field."""
        view = self._data[name].view()
        view.flags.writeable = False
        return view

    def add(self, batch: Mapping[str, ArrayLike], env_indices: ArrayLike | None = None) -> np.ndarray:
        """Write one row per listed env copy at its lane's write pointer.

        Args:
            batch: every schema field, each ``[N, *shape]``; values are cast to
                the field dtype (a cast across kinds, e.g. float into uint8, is
                refused).
            env_indices: ``[N]`` distinct lanes to write, default ``arange(E)``.

        Returns:
            ``[N]`` int64 flat indices of the written rows.
        """
        lanes = (
            np.arange(self.n_envs)
            if env_indices is None
            else np.asarray(env_indices, dtype=np.int64).reshape(-1)
        )
        if lanes.size and (lanes.min() < 0 or lanes.max() >= self.n_envs):
            raise IndexError(f"env_indices must lie in [0, {self.n_envs}), got {lanes}")
        if np.unique(lanes).size != lanes.size:
            raise ValueError(f"env_indices must be distinct (one row per lane per add), got {lanes}")
        unknown = sorted(set(batch) - set(self.schema))
        missing = sorted(set(self.schema) - set(batch))
        if unknown or missing:
            raise KeyError(f"batch fields do not match the schema: missing {missing}, unknown {unknown}")
        n = lanes.size
        values = {}
        for name, spec in self.schema.items():
            value = np.asarray(batch[name])
            if value.shape != (n, *spec.shape):
                raise ValueError(f"field {name!r}: expected shape {(n, *spec.shape)} ([N, *shape]), got {value.shape}")
            if not np.can_cast(value.dtype, spec.dtype, casting="same_kind"):
                raise TypeError(f"field {name!r}: cannot store {value.dtype} as {spec.dtype}; convert it first")
            values[name] = value
        slots = self.pos[lanes]
        flat = slots * self.n_envs + lanes
        for name, value in values.items():
            self._flat[name][flat] = value
        self.pos[lanes] = (slots + 1) % self.lane_length
        self.size[lanes] = np.minimum(self.size[lanes] + 1, self.lane_length)
        self.count[lanes] += 1
        return flat

    def gather(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Rows ``[B, *shape]`` of one field at flat ``indices [B]`` (a copy)."""
        return self._flat[name].take(indices, axis=0)  # take: several times faster than [] here

    def gather_all(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Every field at flat ``indices [B]``: ``{name: [B, *shape]}`` (copies)."""
        return {name: flat.take(indices, axis=0) for name, flat in self._flat.items()}

    def gather_per_agent(self, name: str, indices: np.ndarray) -> np.ndarray:
        """``[B, A, ...]``: agent ``a`` of row ``indices[b, a]``, for per-agent rows ``indices [B, A]``."""
        return self._flat[name][indices, np.arange(indices.shape[1])[None, :]]

    def unravel(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices ``[B]`` -> ``(slot t [B], lane e [B])``."""
        return np.divmod(indices, self.n_envs)

    def steps_ahead(self, slots: np.ndarray, lanes: np.ndarray) -> np.ndarray:
        """``[B]`` number of rows written after row ``(t, e)`` in its lane (0 for the newest)."""
        return (self.pos[lanes] - 1 - slots) % self.lane_length

    def state_dict(self) -> dict[str, Any]:
        """Copies (numpy) of ``fields`` (name -> ``[L, E, *shape]``, every slot) and of ``pos, size, count``."""
        return {"fields": {name: a.copy() for name, a in self._data.items()},
                "pos": self.pos.copy(), "size": self.size.copy(), "count": self.count.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of storage with the same schema, capacity and ``n_envs``.

        Raises:
            ValueError: naming the field or pointer whose names, shape or dtype differ;
                everything is checked first, so a refused state changes nothing.
        """
        fields = {name: np.asarray(value) for name, value in state["fields"].items()}
        missing, unknown = sorted(set(self._data) - set(fields)), sorted(set(fields) - set(self._data))
        if missing or unknown:
            raise ValueError(f"saved replay fields do not match the schema: missing {missing}, unknown {unknown}")
        for name, dst in self._data.items():
            src = fields[name]
            if src.shape != dst.shape or not np.can_cast(src.dtype, dst.dtype, casting="same_kind"):
                raise ValueError(f"saved replay field {name!r} is {src.dtype} {src.shape}, the buffer's is {dst.dtype} "
                                 f"{dst.shape} ([L, E, *shape]): the capacity, n_envs or the schema differ")
        pointers = [np.asarray(state[k], dtype=np.int64) for k in ("pos", "size", "count")]
        if any(v.shape != (self.n_envs,) for v in pointers):
            raise ValueError(f"saved replay pointers have shapes {[v.shape for v in pointers]}; "
                             f"the buffer has {self.n_envs} lanes")
        for name, dst in self._data.items():
            dst[...] = fields[name]
        self.pos[:], self.size[:], self.count[:] = pointers


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
    ) -> None:
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        self.storage = LaneStorage(schema, capacity, n_envs)
        self.sampler: Sampler = UniformSampler() if sampler is None else sampler
        if self.sampler.capacity is not None and self.sampler.capacity != self.storage.capacity:
            raise ValueError(
                f"sampler was built for {self.sampler.capacity} rows but the buffer holds {self.storage.capacity}"
            )
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self._extra_fields = tuple(name for name in self.schema if name not in _SAMPLE_FIELDS)
        self._next_fields = tuple(name for name in _NEXT_FIELDS if name in self.schema)

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
        """Restore a :meth:`state_dict` of a buffer built alike; ``ValueError`` naming what differs, nothing changed."""
        before = self.sampler.state_dict()
        self.sampler.load_state_dict(state)
        try:
            self.storage.load_state_dict(state)
        except ValueError:
            self.sampler.load_state_dict(before)
            raise

    def add(self, batch: Mapping[str, ArrayLike], env_indices: ArrayLike | None = None) -> np.ndarray:
        """Store one step of N env copies; see :meth:`LaneStorage.add`.

        ``batch[name]`` is ``[N, *shape]`` (N = E unless ``env_indices [N]`` names
        the lanes). Returns the ``[N]`` flat indices written.
        """
        indices = self.storage.add(batch, env_indices)
        self.sampler.on_add(indices)
        return indices

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
            rows.update(self._nstep_target(indices))
        return ReplaySample(indices=indices, weights=weights, extras=extras, **rows)

    def _nstep_target(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """n-step fields of rows ``indices [B]``: look ahead in each row's lane."""
        storage = self.storage
        n, n_envs, length = self.n_step, storage.n_envs, storage.lane_length
        slots, lanes = storage.unravel(indices)
        ahead = np.arange(n)[:, None]  # [n, 1]
        window = ((slots[None, :] + ahead) % length) * n_envs + lanes[None, :]  # [n, B] flat indices
        flat_window = window.reshape(-1)
        done = storage.gather("terminated", flat_window) | storage.gather("truncated", flat_window)
        ends = done.reshape(n, -1, done.shape[-1]).any(axis=2)  # [n, B]
        lengths = nstep_lengths(ends, storage.steps_ahead(slots, lanes))
        reward = storage.gather("reward", flat_window).reshape(n, indices.shape[0], -1)
        reward_n, discount_n = nstep_return(reward, lengths, self.gamma)
        last = window[lengths - 1, np.arange(indices.shape[0])]
        target = {"reward_n": reward_n, "discount_n": discount_n}
        target.update({name + "_n": storage.gather(name, last) for name in self._next_fields})
        return target
