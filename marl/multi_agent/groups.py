"""Who acts with which parameters: groups of agents, sharing modes, and the input rule of every network.

Every algorithm (PPO, DQN, SAC, TD3) reads these, so one env is grouped, shared and
encoded the same way whatever trains it:

* :func:`default_groups` / :func:`check_partition`: agents -> groups (by name prefix, or
  an explicit partition from ``env.groups``); a group's agents share spaces.
* :func:`group_sharing` / :func:`param_sets_for`: ``model.sharing`` -> the parameter-set
  index of each agent of a group (``shared``, ``independent``, or an agent -> set map).
* :func:`is_image`: the one rule for pixels (CNN, ``/255``, never standardized).
* :func:`critic_input_shape`: local or central (MAPPO) critic inputs.
* :func:`group_net`: one group's :class:`~marl.nets.AgentNet` with its sharing mode
  and encoder (what the off-policy algorithms build their networks from).

This module needs only numpy (the env layer groups agents without importing torch);
:func:`group_net` imports the networks when called.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from marl.types import EnvSpec, GroupSpec

if TYPE_CHECKING:
    from marl.config import ModelConfig
    from marl.nets import AgentNet


_SUFFIX = re.compile(r"^(.+)_(\d+)$")


def default_groups(agents: Sequence[str]) -> dict[str, list[str]]:
    """Partition agents by name prefix: ``adversary_0`` -> ``adversary``; ``hero`` -> ``hero``.

    Groups appear in the order of their first agent; agents keep their order.
    """
    groups: dict[str, list[str]] = {}
    for agent in agents:
        match = _SUFFIX.match(agent)
        groups.setdefault(match.group(1) if match else agent, []).append(agent)
    return groups


ONE_GROUP = "all"
"""``groups=ONE_GROUP`` puts every agent in one group of that name (``env.single_group``)."""


def resolve_groups(agents: Sequence[str], groups: Mapping[str, Sequence[str]] | str | None) -> dict[str, list[str]]:
    """The partition ``groups`` means: ``None`` = :func:`default_groups`; :data:`ONE_GROUP` = all agents in one
    group; a mapping = itself (checked by :func:`check_partition`)."""
    if groups is None:
        return default_groups(agents)
    if groups == ONE_GROUP:
        return {ONE_GROUP: list(agents)}
    if isinstance(groups, str):
        raise ValueError(f"groups must be a mapping, None or {ONE_GROUP!r}, got {groups!r}")
    return {g: list(a) for g, a in groups.items()}


def check_partition(agents: Sequence[str], groups: Mapping[str, Sequence[str]]) -> None:
    listed = [a for members in groups.values() for a in members]
    unknown = sorted(set(listed) - set(agents))
    missing = [a for a in agents if a not in set(listed)]
    repeated = sorted({a for a in listed if listed.count(a) > 1})
    if unknown or missing or repeated or any(not m for m in groups.values()):
        raise ValueError(
            f"groups must partition the env's agents {list(agents)} into non-empty groups; "
            f"got {dict(groups)} "
            f"(unknown: {unknown}, missing: {missing}, in several groups: {repeated}). "
            "List every agent exactly once, or pass groups=None to group by name prefix."
        )


def param_sets_for(sharing: str | Mapping[str, str], agents: Sequence[str]) -> list[int]:
    """Agent index -> parameter-set index for a sharing mode.

    Args:
        sharing: ``"shared"`` (one set for all), ``"independent"`` (one set per
            agent), or a mapping from agent name or glob pattern (``"adversary_*"``)
            to a set name. An exact agent name wins over patterns; patterns that
            match the same agent must agree on the set name.
        agents: the group's agent names, in agent-axis order.

    Returns:
        ``A`` set indices numbered ``0..P-1`` in order of first appearance along
        ``agents``; e.g. ``{"adversary_*": "adv", "agent_0": "a0"}`` over
        ``["adversary_0", "adversary_1", "agent_0"]`` gives ``[0, 0, 1]``.

    Raises:
        ValueError: unknown mode, duplicate agents, a key matching no agent, an
            agent matched by no key, or patterns giving one agent two sets.
    """
    agents = list(agents)
    if not agents:
        raise ValueError("param_sets_for needs at least one agent")
    duplicates = sorted(a for a, c in Counter(agents).items() if c > 1)
    if duplicates:
        raise ValueError(f"agents listed twice: {duplicates}")
    if isinstance(sharing, str):
        if sharing == "shared":
            return [0] * len(agents)
        if sharing == "independent":
            return list(range(len(agents)))
        raise ValueError(
            f"unknown sharing {sharing!r}; use 'shared', 'independent' or a mapping "
            "agent name (or glob pattern) -> parameter-set name"
        )
    unknown = [k for k in sharing if k not in agents and not any(fnmatch.fnmatchcase(a, k) for a in agents)]
    if unknown:
        raise ValueError(f"sharing map names unknown agents or patterns {unknown}; the agents are {agents}")
    names: list[str] = []
    missing: list[str] = []
    for agent in agents:
        if agent in sharing:
            names.append(sharing[agent])
            continue
        matched = {sharing[k] for k in sharing if fnmatch.fnmatchcase(agent, k)}
        if not matched:
            missing.append(agent)
        elif len(matched) > 1:
            raise ValueError(f"agent {agent!r} matches patterns giving different sets {sorted(matched)}")
        else:
            names.append(matched.pop())
    if missing:
        raise ValueError(f"sharing map gives no parameter set to agents {missing}; add them or a pattern")
    index: dict[str, int] = {}
    for name in names:
        index.setdefault(name, len(index))
    return [index[name] for name in names]


def is_image(space_shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """uint8 ``[H, W, C]`` observations are images: scaled by 1/255 in the network, never standardized."""
    return len(space_shape) == 3 and np.dtype(dtype) == np.uint8


PLANE_MIN_CELLS = 36
"""``model.encoder=auto``: ``[H, W, C]`` observations that are not uint8 images go to the CNN from ``H * W`` of
this many cells (connect four's 6x7, chess's 8x8, go's 19x19, 7x7 grid views); smaller boards (tic-tac-toe's
3x3) are flattened into the MLP, for which they are too small to gain from convolutions."""


def obs_encoder(shape: tuple[int, ...], dtype: np.dtype, choice: str = "auto") -> tuple[str, float]:
    """The network encoder of observations of ``shape`` / ``dtype`` under ``model.encoder = choice``, and the
    number the CNN divides its input by: ``("cnn", 255.0)`` for uint8 images, ``("cnn", 1.0)`` for other
    ``[H, W, C]`` planes (see :data:`PLANE_MIN_CELLS`), ``("mlp", 1.0)`` otherwise. The one rule every
    algorithm's networks follow.

    Raises:
        ConfigError: ``cnn`` for observations that are not ``[H, W, C]``, or ``mlp`` for uint8 images (their
            buffers keep raw pixels, which only the CNN scales).

    >>> obs_encoder((8, 8, 111), np.dtype(bool)), obs_encoder((3, 3, 2), np.dtype(np.float32))
    (('cnn', 1.0), ('mlp', 1.0))
    """
    from marl.config import ConfigError

    shape = tuple(shape)
    image = is_image(shape, dtype)
    if choice == "mlp":
        if image:
            raise ConfigError(f"model.encoder=mlp: observations {shape} are uint8 images, which go through the CNN "
                              "(pixels / 255); use model.encoder=auto, or env.grayscale / env.resize to shrink them")
        return "mlp", 1.0
    if len(shape) != 3:
        if choice == "cnn":
            raise ConfigError(f"model.encoder=cnn needs [H, W, C] observations, got shape {shape}; "
                              "use model.encoder=auto or mlp")
        return "mlp", 1.0
    if image:
        return "cnn", 255.0
    if choice == "cnn" or shape[0] * shape[1] >= PLANE_MIN_CELLS:
        return "cnn", 1.0
    return "mlp", 1.0


def critic_input_shape(spec: EnvSpec, group: GroupSpec, critic: str) -> tuple[int, ...]:
    """Shape of one agent's critic input for ``critic`` = ``local`` or ``central``."""
    if critic == "local":
        return tuple(group.obs_space.shape)
    if spec.state_shape is not None:
        return tuple(spec.state_shape)
    total = 0
    for g in spec.groups:
        if is_image(g.obs_space.shape, g.obs_space.dtype):
            raise ValueError(
                "model.critic=central needs a global state or vector observations; this env has image "
                f"observations in group {g.name!r} and no state(). Use model.critic=local."
            )
        total += g.n_agents * int(np.prod(g.obs_space.shape))
    return (total,)


def group_sharing(sharing: str | Mapping, group: GroupSpec) -> str | dict:
    """The sharing mode of one group from ``model.sharing``.

    ``model.sharing`` is ``shared``, ``independent``, or a mapping whose keys are
    group names (value: a mode or an agent -> set map for that group) or agent
    names / glob patterns (value: a parameter-set name). Agents of a group that
    a mapping does not mention share one set.
    """
    if isinstance(sharing, str):
        return sharing
    if group.name in sharing:
        return sharing[group.name]
    mine = {k: v for k, v in sharing.items() if any(fnmatch.fnmatchcase(a, k) for a in group.agents)}
    return mine or "shared"


def group_net(
    group: GroupSpec, model: ModelConfig, in_shape: tuple[int, ...], out_dim: int, out_gain: float
) -> AgentNet:
    """One group's :class:`AgentNet` with the group's sharing mode from ``model.sharing``.

    Args:
        group: the agents it serves (``A``).
        model: widths, activation, sharing, agent ids, forward strategy.
        in_shape: one agent's input shape (observation, or observation + action for Q(s, a)).
        out_dim: output width.
        out_gain: orthogonal gain of the output layer.
    """
    from marl.nets import AgentNet  # torch-heavy: imported on use (see the module doc)

    own_obs = tuple(in_shape) == tuple(group.obs_space.shape)  # Q(s, a) inputs are vectors
    encoder, scale = obs_encoder(in_shape, group.obs_space.dtype, model.encoder) if own_obs else ("mlp", 1.0)
    return AgentNet(
        tuple(in_shape), out_dim, group.n_agents, encoder=encoder, input_scale=scale, hidden=tuple(model.hidden),
        activation=model.activation,
        param_sets=param_sets_for(group_sharing(model.sharing, group), group.agents), agent_id=model.agent_id,
        strategy=model.strategy, out_gain=out_gain,
    )
