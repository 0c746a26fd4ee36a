"""Replay storage: the row schema, per-env-copy lanes, and rows packed into one record.

:class:`LaneStorage` holds the preallocated rows of a replay buffer and the write
pointers; it does not choose rows (a sampler does) nor build targets
(:class:`marl.data.replay.ReplayBuffer` does).

Rows and lanes
--------------
A *row* holds all agents of one group of one env copy at one step: every field
is shaped ``[A, ...]`` (``obs [A, 18]``, ``reward [A]``, ``alive [A]``...), or
anything else the schema says (``state [S]``). Rows of the E env copies are kept
in E separate circular *lanes* of ``L = capacity // E`` rows: field ``name`` is
seen as ``[L, E, *shape]`` (:meth:`LaneStorage.field`), and row ``(t, e)`` has the
flat index ``t * E + e``. A lane holds one env copy's trajectory in time order, so
the step after row ``(t, e)`` is ``((t + 1) % L, e)``. Each lane has its own write
pointer, so ``add`` may write any subset of env copies (``env_indices``);
overwriting is per lane, oldest row first.

Packed rows
-----------
Sampling gathers every field of B rows scattered over the whole buffer. Stored
as one array per field, that is one numpy call and B cache misses per field.
Here the fields of a row lie side by side in one *record* (an aligned numpy
structured dtype, :func:`record_dtype`), so one ``take`` of B records gathers
them all. At C = 1e6 rows of 8 small fields, a prioritized ``sample(256)`` takes
84 µs of CPU instead of 102 µs with one array per field (``bench/bench_per.py``,
default vs ``--pack-limit 0``), and a uniform one 37 µs instead of 48 µs.

The layout is chosen per field (:func:`split_fields`): a field whose row takes
at most ``pack_limit`` bytes (default :data:`PACK_LIMIT_BYTES`) goes into the
record; a larger one (an image, ``uint8 [A, 84, 84, 4]`` is 28 KB per agent)
keeps an array of its own. Packing a large field saves nothing (gathering it
is a copy of kilobytes per row either way, and one call more is noise), but it
would make every gather of the small fields (the n-step look-ahead, one field
for ``update_priorities``) drag the image bytes through the cache too.
Dtypes are kept either way (a ``uint8`` image stays ``uint8``).

Gathered fields are **views into one freshly gathered block** per call: they
never share memory with the storage or with an earlier gather, and fields of
one gather do not overlap, so writing into one (as hindsight relabelling does)
changes nothing else. Packed fields are strided views (row stride = the record
size), not C-contiguous: ``torch.as_tensor`` takes them as they are (every
stride is a multiple of the element size, records being aligned); call
``np.ascontiguousarray`` where an operation needs contiguous memory.

Fields and conventions
----------------------
The schema maps a field name to ``(shape, dtype)`` of one row. Required fields:
``obs, action, reward, next_obs, terminated, truncated, alive, next_alive``;
optional fields with a known meaning: ``action_mask, next_action_mask, state,
next_state``; any other field is stored and returned in ``ReplaySample.extras``.

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

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from marl.types import GroupSpec

REQUIRED_FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "alive", "next_alive")
OPTIONAL_FIELDS = ("action_mask", "next_action_mask", "state", "next_state")
NEXT_FIELDS = ("next_obs", "terminated", "next_alive", "next_action_mask", "next_state")
"""Fields read at the last row of an n-step window (they become ``<name>_n`` in a sample)."""
_FLAG_FIELDS = ("terminated", "truncated", "alive", "next_alive")
_RESERVED = frozenset({"indices", "weights", "extras", "reward_n", "discount_n"} | {f + "_n" for f in NEXT_FIELDS})

PACK_LIMIT_BYTES = 1024
"""Default largest row of one field (bytes) stored inside the packed record; larger fields get their own array."""


class FieldSpec(NamedTuple):
    """Shape and dtype of one field of one row (no batch axis)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of one row of this field."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


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


def split_fields(schema: Mapping[str, FieldSpec], pack_limit: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(packed, separate)`` field names: rows of at most ``pack_limit`` bytes are packed (schema order kept)."""
    packed = tuple(name for name, spec in schema.items() if spec.nbytes <= pack_limit)
    return packed, tuple(name for name in schema if name not in packed)


def record_dtype(fields: Mapping[str, FieldSpec]) -> np.dtype:
    """Aligned structured dtype holding one row of ``fields``.

    Fields are laid out by decreasing alignment (stable), which leaves no padding
    between them; ``align=True`` pads the record to a multiple of its largest
    alignment, so in an array of records every field's stride is a multiple of
    its element size (what ``torch.as_tensor`` needs).
    """
    order = sorted(fields, key=lambda name: -fields[name].dtype.alignment)
    return np.dtype([(name, fields[name].dtype, fields[name].shape) for name in order], align=True)


class LaneStorage:
    """Preallocated circular lanes, one per env copy; small fields packed into one record per row.

    Args:
        schema: field name -> ``(shape, dtype)`` of one row.
        capacity: total rows C; must be a multiple of ``n_envs`` (``L = C // E``).
        n_envs: number of lanes E (env copies).
        pack_limit: a field whose row takes at most this many bytes is stored in
            the packed record, a larger one in an array of its own (see the
            module docstring). A layout choice only: every method returns the
            same values for any value. Default :data:`PACK_LIMIT_BYTES` (1024).
        lookahead: also keep, per row, the reward and whether the row ends a
            trajectory (some agent terminated or truncated) in a small record of
            their own, for :meth:`gather_lookahead` (n-step targets read them
            over a window of rows). Derived from the stored fields, never saved.

    Attributes:
        schema: the normalized schema.
        lane_length: rows per lane L.
        packed_fields: fields stored in the packed record (schema order).
        separate_fields: fields stored in arrays of their own.
        record: structured dtype of the packed record (``None`` when nothing is packed).
        pos: ``[E]`` next slot to write in each lane.
        size: ``[E]`` rows written and not yet overwritten (slots ``[0, size)``).
        count: ``[E]`` rows ever written to each lane (absolute step counter; the
            row written at absolute step ``s`` sits at slot ``s % L``).
    """

    def __init__(
        self, schema: Schema, capacity: int, n_envs: int, *, pack_limit: int = PACK_LIMIT_BYTES, lookahead: bool = False
    ) -> None:
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
        self.packed_fields, self.separate_fields = split_fields(self.schema, pack_limit)
        self.record = record_dtype({n: self.schema[n] for n in self.packed_fields}) if self.packed_fields else None
        # Flat views [C, *shape] indexed by t * E + e, and lane views [L, E, *shape] of the same memory.
        self._flat: dict[str, np.ndarray] = {}
        self._record_bytes: np.ndarray | None = None  # [C, record bytes] uint8 view of the records
        self._lookahead: np.ndarray | None = None  # [C] (reward [A], ends) records, with lookahead=True
        self._lookahead_bytes: np.ndarray | None = None
        if self.record is not None:
            records = np.zeros(self.capacity, dtype=self.record)
            self._record_bytes = records.view(np.uint8).reshape(self.capacity, self.record.itemsize)
            self._flat.update({name: records[name] for name in self.packed_fields})
        for name in self.separate_fields:
            spec = self.schema[name]
            self._flat[name] = np.zeros((self.capacity, *spec.shape), dtype=spec.dtype)
        self._flat = {name: self._flat[name] for name in self.schema}  # schema order
        self._lanes = {name: a.reshape(self.lane_length, self.n_envs, *a.shape[1:]) for name, a in self._flat.items()}
        if lookahead:
            reward = self.schema["reward"]
            self._lookahead_record = np.dtype([("reward", reward.dtype, reward.shape), ("ends", np.bool_)], align=True)
            self._lookahead = np.zeros(self.capacity, dtype=self._lookahead_record)
            self._lookahead_bytes = self._lookahead.view(np.uint8).reshape(self.capacity, -1)
        self.pos = np.zeros(self.n_envs, dtype=np.int64)
        self.size = np.zeros(self.n_envs, dtype=np.int64)
        self.count = np.zeros(self.n_envs, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.size.sum())

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored rows (record padding and the look-ahead record included)."""
        packed = 0 if self._record_bytes is None else self._record_bytes.nbytes
        ahead = 0 if self._lookahead_bytes is None else self._lookahead_bytes.nbytes
        return packed + ahead + sum(self._flat[name].nbytes for name in self.separate_fields)

    def field(self, name: str) -> np.ndarray:
        """Read-only view ``[L, E, *shape]`` of one stored field."""
        view = self._lanes[name].view()
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
        if self._lookahead_bytes is not None:
            self._write_lookahead(flat, values["reward"], values["terminated"] | values["truncated"])
        self.pos[lanes] = (slots + 1) % self.lane_length
        self.size[lanes] = np.minimum(self.size[lanes] + 1, self.lane_length)
        self.count[lanes] += 1
        return flat

    def cut(self, lanes: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """End the trajectories of ``lanes`` at their last written row, as a time limit would: the row's
        alive agents (every agent without an ``alive`` field) get ``truncated``, so no n-step window reaches
        past it (a lane whose continuation was lost, e.g. a rebuilt remote env copy). Empty lanes are skipped.

        Returns:
            ``(lanes, steps)``: the lanes cut and the absolute step of each one's last row.
        """
        lanes = np.asarray(lanes, dtype=np.int64).reshape(-1)
        lanes = lanes[self.size[lanes] > 0]
        flat = ((self.pos[lanes] - 1) % self.lane_length) * self.n_envs + lanes
        truncated = self._flat["truncated"]
        alive = self._flat["alive"][flat].astype(bool) if "alive" in self._flat else np.ones_like(truncated[flat])
        truncated[flat] = truncated[flat] | alive
        if self._lookahead is not None:
            self._lookahead["ends"][flat] = True
        return lanes, self.count[lanes] - 1

    def gather(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Rows ``[*indices.shape, *shape]`` of one field at flat ``indices`` (a new C-contiguous array)."""
        if name in self.separate_fields:
            return self._flat[name].take(indices, axis=0)  # take: several times faster than [] here
        return self._flat[name][indices]  # a strided view: take would copy the whole field first

    def gather_fields(self, names: Sequence[str], indices: np.ndarray) -> dict[str, np.ndarray]:
        """Fields ``names`` at flat ``indices [B]``: ``{name: [B, *shape]}``.

        Packed fields come from one ``take`` of the B records and are views into
        that fresh block; separate fields are one ``take`` each. Nothing returned
        shares memory with the storage (see the module docstring).
        """
        out = {}
        if self._record_bytes is not None and any(name in self.packed_fields for name in names):
            block = self._record_bytes.take(indices, axis=0).view(self.record).reshape(indices.shape)
            out = {name: block[name] for name in names if name in self.packed_fields}
        for name in names:
            if name not in out:
                out[name] = self._flat[name].take(indices, axis=0)
        return out

    def gather_all(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Every field at flat ``indices [B]``: ``{name: [B, *shape]}`` (see :meth:`gather_fields`)."""
        return self.gather_fields(tuple(self.schema), indices)

    def gather_lookahead(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(reward [*indices.shape, A], ends [*indices.shape])`` of rows at flat ``indices``, one gather.

        ``ends`` is ``any(terminated | truncated)`` over the row's agents. Needs
        ``lookahead=True`` at construction.
        """
        if self._lookahead_bytes is None:
            raise RuntimeError("this LaneStorage keeps no look-ahead record; build it with lookahead=True")
        flat = indices.reshape(-1)
        block = self._lookahead_bytes.take(flat, axis=0).view(self._lookahead_record).reshape(indices.shape)
        return block["reward"], block["ends"]

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
        """Copies (numpy, C-contiguous) of ``fields`` (name -> ``[L, E, *shape]``, every slot) and of
        ``pos, size, count``. One array per field whatever the layout, so a state loads into a storage
        with any ``pack_limit``."""
        return {"fields": {name: np.array(a) for name, a in self._lanes.items()},
                "pos": self.pos.copy(), "size": self.size.copy(), "count": self.count.copy()}

    def check_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the field or pointer of ``state`` whose names, shape or dtype do not
        fit this storage (same schema, capacity and ``n_envs``); change nothing."""
        self._checked(state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of storage with the same schema, capacity and ``n_envs``.

        Raises:
            ValueError: as :meth:`check_state_dict`; everything is checked first,
                so a refused state changes nothing.
        """
        fields, pointers = self._checked(state)
        for name, dst in self._lanes.items():
            dst[...] = fields[name]
        if self._lookahead_bytes is not None:
            done = fields["terminated"] | fields["truncated"]
            self._write_lookahead(slice(None), fields["reward"].reshape(self.capacity, -1),
                                  done.reshape(self.capacity, -1))
        self.pos[:], self.size[:], self.count[:] = pointers

    def _checked(self, state: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        fields = {name: np.asarray(value) for name, value in state["fields"].items()}
        missing, unknown = sorted(set(self._lanes) - set(fields)), sorted(set(fields) - set(self._lanes))
        if missing or unknown:
            raise ValueError(f"saved replay fields do not match the schema: missing {missing}, unknown {unknown}")
        for name, dst in self._lanes.items():
            src = fields[name]
            if src.shape != dst.shape or not np.can_cast(src.dtype, dst.dtype, casting="same_kind"):
                raise ValueError(f"saved replay field {name!r} is {src.dtype} {src.shape}, the buffer's is {dst.dtype} "
                                 f"{dst.shape} ([L, E, *shape]): the capacity, n_envs or the schema differ")
        pointers = [np.asarray(state[k], dtype=np.int64) for k in ("pos", "size", "count")]
        if any(v.shape != (self.n_envs,) for v in pointers):
            raise ValueError(f"saved replay pointers have shapes {[v.shape for v in pointers]}; "
                             f"the buffer has {self.n_envs} lanes")
        return fields, pointers

    def _write_lookahead(self, flat: np.ndarray | slice, reward: np.ndarray, done: np.ndarray) -> None:
        """Look-ahead record of rows ``flat`` from their ``reward [N, A]`` and ``terminated | truncated [N, A]``."""
        self._lookahead["reward"][flat] = reward
        self._lookahead["ends"][flat] = done.any(axis=1)
