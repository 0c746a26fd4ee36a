"""Step buffers: every array of one env step, allocated once and written in place.

Adapters write a step into :class:`StepBuffers` (``reset_into`` / ``step_into``);
the vector envs hand them views of ``[E, ...]`` arrays, which for worker processes
live in one shared-memory block per worker (:func:`block_layout`, :func:`block_views`).
Array names are ``"<group>/<field>"`` (fields of :class:`GroupBuffers`) and
``"state"`` / ``"final_state"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from marl.types import EnvSpec, GroupObs, GroupTransition

__all__ = [
    "Field",
    "GroupBuffers",
    "Layout",
    "StepBuffers",
    "allocate_buffers",
    "block_layout",
    "block_views",
    "buffer_fields",
    "buffers_from_arrays",
]

Field = tuple[str, tuple[int, ...], np.dtype]  # (name, shape per env copy, dtype)
Layout = list[tuple[str, tuple[int, ...], str, int]]  # (name, shape, dtype string, byte offset)


class GroupBuffers(NamedTuple):
    """Arrays an adapter writes one group's step into; shapes ``[*lead, A, ...]``.

    ``lead`` is ``()`` for one env, ``(E,)`` for a vector env. Adapters overwrite
    every entry, so the arrays may hold stale data on entry.
    """

    obs: np.ndarray
    alive: np.ndarray
    action_mask: np.ndarray | None
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    achieved_goal: np.ndarray | None
    final_achieved_goal: np.ndarray | None
    final_action_mask: np.ndarray | None = None


class StepBuffers(NamedTuple):
    """Every array of one step: per group, plus ``state`` / ``final_state`` ``[*lead, S]``."""

    groups: dict[str, GroupBuffers]
    state: np.ndarray | None
    final_state: np.ndarray | None

    def split(self) -> tuple[dict[str, GroupObs], dict[str, GroupTransition]]:
        """Per group, the observation and the transition parts of these buffers (views, no copies)."""
        obs = {g: GroupObs(b.obs, b.alive, b.action_mask, b.achieved_goal) for g, b in self.groups.items()}
        transition = {g: GroupTransition(b.reward, b.terminated, b.truncated, b.final_obs, b.final_achieved_goal,
                                         b.final_action_mask)
                      for g, b in self.groups.items()}
        return obs, transition

    def at(self, index: int | slice) -> StepBuffers:
        """Views of env copy ``index`` (or a range of copies) of ``[E, ...]`` buffers."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return StepBuffers(
            {g: GroupBuffers(*(pick(a) for a in b)) for g, b in self.groups.items()},
            pick(self.state),
            pick(self.final_state),
        )


def buffer_fields(spec: EnvSpec) -> list[Field]:
    """``(name, shape per env copy, dtype)`` of every buffer array of ``spec``.

    Observations keep the group's dtype (uint8 images stay uint8); rewards, goals and
    states are float32; masks and flags bool. One list serves plain and shared-memory
    allocation.
    """
    fields: list[Field] = []
    for g in spec.groups:
        a, obs_shape, obs_dtype = g.n_agents, tuple(g.obs_space.shape), np.dtype(g.obs_space.dtype)
        fields += [(f"{g.name}/obs", (a, *obs_shape), obs_dtype), (f"{g.name}/alive", (a,), np.dtype(bool))]
        if g.has_action_mask:
            fields.append((f"{g.name}/action_mask", (a, int(g.action_space.n)), np.dtype(bool)))
        fields += [
            (f"{g.name}/reward", (a,), np.dtype(np.float32)),
            (f"{g.name}/terminated", (a,), np.dtype(bool)),
            (f"{g.name}/truncated", (a,), np.dtype(bool)),
            (f"{g.name}/final_obs", (a, *obs_shape), obs_dtype),
        ]
        if g.has_action_mask:
            fields.append((f"{g.name}/final_action_mask", (a, int(g.action_space.n)), np.dtype(bool)))
        if g.goal is not None:
            goal_dim = g.goal[1] - g.goal[0]
            fields += [
                (f"{g.name}/achieved_goal", (a, goal_dim), np.dtype(np.float32)),
                (f"{g.name}/final_achieved_goal", (a, goal_dim), np.dtype(np.float32)),
            ]
    if spec.state_shape is not None:
        fields += [
            ("state", spec.state_shape, np.dtype(np.float32)),
            ("final_state", spec.state_shape, np.dtype(np.float32)),
        ]
    return fields


def buffers_from_arrays(spec: EnvSpec, arrays: Mapping[str, np.ndarray]) -> StepBuffers:
    """Assemble :class:`StepBuffers` from arrays named as in :func:`buffer_fields`."""
    groups = {
        g.name: GroupBuffers(*(arrays.get(f"{g.name}/{f}") for f in GroupBuffers._fields))
        for g in spec.groups
    }
    return StepBuffers(groups, arrays.get("state"), arrays.get("final_state"))


def allocate_buffers(
    spec: EnvSpec, lead: tuple[int, ...] = (), fields: list[Field] | None = None
) -> StepBuffers:
    """Fresh (uninitialised) buffers of shape ``[*lead, ...]`` for ``spec``.

    ``fields`` may pass a cached ``buffer_fields(spec)`` (hot paths allocate every step).
    """
    fields = buffer_fields(spec) if fields is None else fields
    return buffers_from_arrays(spec, {n: np.empty((*lead, *s), d) for n, s, d in fields})


def block_layout(fields: list[Field], n: int) -> tuple[Layout, int]:
    """Where each ``[n, *shape]`` array sits in one memory block (64-byte aligned); total bytes."""
    layout, offset = [], 0
    for name, shape, dtype in fields:
        offset = -(-offset // 64) * 64
        full = (n, *shape)
        layout.append((name, full, dtype.str, offset))
        offset += int(np.prod(full)) * dtype.itemsize
    return layout, max(offset, 1)


def block_views(buffer: memoryview, layout: Layout) -> dict[str, np.ndarray]:
    """Numpy views of the arrays of ``layout`` into ``buffer`` (e.g. ``SharedMemory.buf``)."""
    return {name: np.ndarray(shape, np.dtype(dtype), buffer, offset) for name, shape, dtype, offset in layout}
