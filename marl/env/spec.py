"""From an env's spaces to arrays: observation formats, decoding, and the :class:`~marl.types.EnvSpec`.

* :func:`model_box`: the space of the arrays an adapter emits (``uint8`` kept, else ``float32``).
* :func:`obs_format` / :class:`ObsFormat`: how one agent's raw observation becomes arrays
  (a box; ``observation`` + ``action_mask``; a goal ``Dict``).
* :func:`decode_obs`: one raw observation into the group arrays.
* :func:`pettingzoo_spec`: the :class:`EnvSpec` of a PettingZoo env's agents, grouped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from marl.multi_agent.groups import check_partition, resolve_groups
from marl.types import EnvSpec, GroupSpec


def model_box(box: spaces.Box) -> spaces.Box:
    """The space of the arrays the adapter emits: uint8 kept, anything else float32."""
    if box.dtype == np.uint8:
        return box
    return spaces.Box(box.low.astype(np.float32), box.high.astype(np.float32), dtype=np.float32)


@dataclass(frozen=True)
class ObsFormat:
    """How one agent's raw observation becomes arrays."""

    kind: str  # "box", "flat" (flattened), "masked" (observation + action_mask) or "goal" (goal Dict)
    space: spaces.Box  # the emitted observation space
    n_obs: int = 0  # goal: length of the flat ``observation`` part
    goal_dim: int = 0  # goal: length of desired / achieved goal
    raw: spaces.Space | None = None  # flat, or masked with a non-Box observation: the space to flatten


FLATTENED = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Tuple, spaces.Dict)
"""Observation spaces read through ``gymnasium.spaces.flatten``: one-hot for ``Discrete`` (and each part of a
``MultiDiscrete``), the concatenation of the flattened parts for ``Tuple`` and ``Dict`` (in the space's key
order), ``Box`` parts raveled; always float32."""


def flat_box(space: spaces.Space) -> spaces.Box:
    """The float32 box of ``gymnasium.spaces.flatten_space(space)``."""
    box = spaces.flatten_space(space)
    return spaces.Box(box.low.astype(np.float32), box.high.astype(np.float32), dtype=np.float32)


def obs_format(agent: str, space: spaces.Space) -> ObsFormat:
    """How ``agent``'s observations become arrays: a ``Box`` as is; ``Dict(observation, action_mask)`` (PettingZoo
    classic) and goal ``Dict`` s recognized; any other ``Discrete`` / ``MultiDiscrete`` / ``MultiBinary`` /
    ``Tuple`` / ``Dict`` flattened (:data:`FLATTENED`)."""
    if isinstance(space, spaces.Box):
        return ObsFormat("box", model_box(space))
    if isinstance(space, spaces.Dict):
        parts = space.spaces
        if set(parts) == {"observation", "action_mask"}:
            inner = parts["observation"]
            if isinstance(inner, spaces.Box):
                return ObsFormat("masked", model_box(inner))
            if isinstance(inner, FLATTENED):
                return ObsFormat("masked", flat_box(inner), raw=inner)
        goal_keys = {"observation", "achieved_goal", "desired_goal"}
        if set(parts) == goal_keys and all(isinstance(parts[k], spaces.Box) for k in goal_keys):
            obs, desired = parts["observation"], parts["desired_goal"]
            if parts["achieved_goal"].shape != desired.shape:
                raise ValueError(f"agent {agent!r}: achieved_goal and desired_goal shapes differ ({space})")
            low = np.concatenate([obs.low.ravel(), desired.low.ravel()]).astype(np.float32)
            high = np.concatenate([obs.high.ravel(), desired.high.ravel()]).astype(np.float32)
            return ObsFormat(
                "goal", spaces.Box(low, high, dtype=np.float32), int(obs.low.size), int(desired.low.size)
            )
    if isinstance(space, FLATTENED):
        try:
            return ObsFormat("flat", flat_box(space), raw=space)
        except NotImplementedError:
            pass  # e.g. a Text or Graph part: refused below
    raise ValueError(
        f"agent {agent!r} has observation space {space}, which the adapters do not read. Supported: Box "
        "(vectors, uint8 images [H, W, C]); Discrete, MultiDiscrete, MultiBinary, Tuple and Dict of those "
        "(flattened, one-hot for Discrete); Dict(observation, action_mask); Dict(observation, achieved_goal, "
        "desired_goal). Wrap the env to give one of these (e.g. a gymnasium.ObservationWrapper)."
    )


def decode_obs(
    fmt: ObsFormat, raw: Any, k: int, obs: np.ndarray, mask: np.ndarray | None, goal: np.ndarray | None
) -> None:
    """Write agent ``k``'s raw observation into row ``k`` of the group arrays."""
    if fmt.kind == "box":
        obs[k] = raw
    elif fmt.kind == "flat":
        obs[k] = spaces.flatten(fmt.raw, raw)
    elif fmt.kind == "masked":
        obs[k] = raw["observation"] if fmt.raw is None else spaces.flatten(fmt.raw, raw["observation"])
        if mask is not None:
            mask[k] = raw["action_mask"]
    else:
        n = fmt.n_obs
        obs[k, :n] = np.ravel(raw["observation"])
        obs[k, n:] = np.ravel(raw["desired_goal"])
        if goal is not None:
            goal[k] = np.ravel(raw["achieved_goal"])


def pettingzoo_spec(
    env: Any,
    groups: Mapping[str, Sequence[str]] | None,
    infos: Mapping[str, Any],
    use_state: bool,
    turn_based: bool,
) -> tuple[EnvSpec, dict[str, ObsFormat], set[str]]:
    """Check the groups of a PettingZoo env just reset and build its spec.

    ``infos`` (from that reset) tell which agents get masks in their infos.
    Returns (spec, agent -> observation format, groups whose masks come from infos).
    """
    agents = list(env.possible_agents)
    groups = resolve_groups(agents, groups)
    check_partition(agents, groups)
    info_masks = {a for a, i in infos.items() if isinstance(i, Mapping) and "action_mask" in i}
    group_specs, formats, mask_from_info = [], {}, set()
    for name, members in groups.items():
        for space_of, what in ((env.observation_space, "observation"), (env.action_space, "action")):
            if any(space_of(a) != space_of(members[0]) for a in members):
                detail = "; ".join(f"{a}: {space_of(a)}" for a in members)
                raise ValueError(
                    f"group {name!r} mixes {what} spaces ({detail}). "
                    "Agents of one group share one network and "
                    "must have equal spaces: put them in different groups (env.groups: {...}), or pad them to one "
                    "space with env.pad: true (SuperSuit pad_observations / pad_action_space)."
                )
        fmt, act = obs_format(members[0], env.observation_space(members[0])), env.action_space(members[0])
        if not isinstance(act, (spaces.Discrete, spaces.Box)) or getattr(act, "start", 0) != 0:
            raise ValueError(
                f"group {name!r} has action space {act}; only Discrete (from 0) and Box are supported"
            )
        if any(a in info_masks for a in members) and fmt.kind != "masked":
            mask_from_info.add(name)
        has_mask = fmt.kind == "masked" or name in mask_from_info
        if has_mask and not isinstance(act, spaces.Discrete):
            raise ValueError(f"group {name!r} has an action mask but a non-Discrete action space {act}")
        formats.update(dict.fromkeys(members, fmt))
        goal = (fmt.n_obs, fmt.n_obs + fmt.goal_dim) if fmt.kind == "goal" else None
        group_specs.append(GroupSpec(name, tuple(members), fmt.space, act, has_mask, goal))
    state_shape = None
    if use_state:
        with contextlib.suppress(NotImplementedError, AttributeError, TypeError):  # no (callable) state()
            state_shape = tuple(np.shape(env.state()))
    metadata = dict(getattr(env, "metadata", {}) or {})
    return (
        EnvSpec(tuple(agents), tuple(group_specs), state_shape, turn_based, metadata),
        formats,
        mask_from_info,
    )
