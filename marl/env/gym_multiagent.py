"""Gymnasium multi-agent envs as PettingZoo parallel envs: level-based foraging and the multi-robot warehouse.

Some of the field's benchmark envs are single Gymnasium envs that hold several agents: ``Tuple``
observation and action spaces (one entry per agent), a list of rewards (one per agent) and one
``terminated`` / ``truncated`` flag for all (or a list). :class:`GymMultiAgentParallel` turns such an env
into a PettingZoo ``ParallelEnv``, so the parallel adapter, the vector backends, snapshots, evaluation and
recording apply to it unchanged:

* agents are ``agent_0`` ... ``agent_{n-1}`` in the order of the Tuple, each with its own copy of its
  space; they form one group ``agent`` (default grouping by name prefix);
* rewards stay per agent (the team return is their sum, as for every multi-agent env in marl);
* all agents end together: the episode ends when every agent's ``terminated`` is set or any
  ``truncated`` is; a family's :attr:`Family.task_over` then says whether the end is a termination
  (the task is finished: no bootstrap) or a time limit (truncation: bootstrap), since these envs
  report their own step limit as ``terminated``;
* seeding goes through ``reset(seed=...)`` (the env's ``np_random``); ``reset()`` without a seed
  continues the env's generator;
* ``state()`` is the concatenation of the agents' observations (float32), unless the env has a
  ``state()`` of its own;
* where the family knows each agent's valid actions (:attr:`Family.action_mask`: level-based foraging),
  ``env.kwargs.action_masks: true`` puts them in ``infos[agent]["action_mask"]`` at every reset and step,
  so value-based and policy agents choose among valid actions only (LBF: no move into a wall or a food,
  no load without an adjacent food). Off by default: the field's published LBF numbers (EPyMARL) are
  without masks.

Env ids (see :func:`resolve`): ``lbforaging:<Gymnasium id>`` (``lbforaging:Foraging-8x8-2p-2f-coop-v3``,
``lbforaging:Foraging-15x15-3p-5f-v3``; installed with ``pip install 'marl[lbforaging]'``) and
``rware:<Gymnasium id>`` (``rware:rware-tiny-2ag-v2``; ``pip install 'marl[rware]'``). Their episode
limits are the ones the field benchmarks with (EPyMARL): 50 steps for level-based foraging
(``env.kwargs.max_episode_steps``) and 500 for the warehouse (``env.kwargs.max_steps``), the registered
defaults of both packages. Both draw with pyglet: rendering (videos) needs a display (``xvfb-run``).
"""

from __future__ import annotations

import copy
import difflib
import importlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import gymnasium
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

__all__ = ["FAMILIES", "Family", "GymMultiAgentParallel", "family_ids", "make", "resolve"]


def _lbf_task_over(env: gymnasium.Env) -> bool:
    """Level-based foraging ends when every food is loaded (a termination) or at its step limit."""
    return not np.asarray(env.unwrapped.field).any()


def _lbf_forget_positions(env: gymnasium.Env) -> None:
    """Clear the players' positions before a reset: lbforaging 2.0 places each player on a cell that is free of
    the others' positions, including the stale ones of the previous episode, so without this a seeded reset
    depended on the episode before it (two envs reset with one seed started differently)."""
    for player in env.unwrapped.players:
        player.position = None


def _lbf_action_masks(env: gymnasium.Env) -> list[np.ndarray]:
    """Each player's valid actions as a boolean mask ``[6]`` (lbforaging's own validity rule: a move stays on the
    grid and off food, a load needs an adjacent food; ``NONE`` is always valid)."""
    raw = env.unwrapped
    n_actions = int(raw.action_space[0].n)
    masks = []
    for player in raw.players:
        mask = np.zeros(n_actions, bool)
        mask[[a.value for a in raw._valid_actions[player]]] = True
        masks.append(mask)
    return masks


def _rware_task_over(env: gymnasium.Env) -> bool:
    """The warehouse never finishes its task: it ends only at ``max_steps`` or ``max_inactivity_steps``."""
    return False


class Family(NamedTuple):
    """A package of Gymnasium multi-agent envs reachable as ``<prefix>:<Gymnasium id>``.

    Attributes:
        package: the import name that registers the envs with Gymnasium (also the id prefix).
        extra: the ``marl`` extra that installs it (``pip install 'marl[<extra>]'``).
        task_over: whether an ended episode ended because the task is finished (terminated)
            rather than by a time limit (truncated); read right after the final step.
        before_reset: called on the env before each reset, or ``None``; it makes a seeded reset
            depend on the seed alone where the package lets the previous episode leak into it.
        action_mask: each agent's valid actions ``[n_actions]`` (bool) in the env's current state, or ``None``
            when the package does not say; used when the env is made with ``action_masks=True``.
    """

    package: str
    extra: str
    task_over: Callable[[gymnasium.Env], bool]
    before_reset: Callable[[gymnasium.Env], None] | None = None
    action_mask: Callable[[gymnasium.Env], list[np.ndarray]] | None = None


FAMILIES: dict[str, Family] = {
    "lbforaging": Family("lbforaging", "lbforaging", _lbf_task_over, _lbf_forget_positions, _lbf_action_masks),
    "rware": Family("rware", "rware", _rware_task_over),
}
"""Id prefix -> family."""


def _import_family(family: Family, env_id: str) -> None:
    try:
        importlib.import_module(family.package)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != family.package:
            raise  # the package is there but one of its own dependencies is not: its error says which
        raise ImportError(f"env {env_id!r} needs the package {family.package!r}, which is not installed: "
                          f"pip install 'marl[{family.extra}]'") from err


def _family_of_entry_point(gym_id: str) -> str | None:
    entry = gymnasium.registry[gym_id].entry_point
    root = entry.split(".")[0].split(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")
    return root if root in FAMILIES else None


def resolve(env_id: str) -> tuple[Family, str] | None:
    """``(family, Gymnasium id)`` for an id of a family in :data:`FAMILIES`, else ``None``.

    Accepts ``<prefix>:<Gymnasium id>``.

    Raises:
        ImportError: the family's package is not installed (names the pip command).
        ValueError: the package has no such id (names close ones), or a bare id that a family's package
            registered (``Foraging-8x8-2p-2f-coop-v3``, known once ``lbforaging`` is imported): only the
            prefixed id makes worker processes import the package.
    """
    prefix, sep, gym_id = env_id.partition(":")
    if sep and prefix in FAMILIES:
        family = FAMILIES[prefix]
        _import_family(family, env_id)
        if gym_id not in gymnasium.registry or _family_of_entry_point(gym_id) != prefix:
            close = difflib.get_close_matches(gym_id, family_ids(prefix, with_prefix=False), 5, 0.6)
            hint = f" Did you mean: {', '.join(f'{prefix}:{c}' for c in close)}?" if close else ""
            raise ValueError(f"unknown env id {env_id!r}: package {prefix!r} registers no Gymnasium id "
                             f"{gym_id!r}.{hint}")
        return family, gym_id
    if not sep and env_id in gymnasium.registry and _family_of_entry_point(env_id):
        prefix = _family_of_entry_point(env_id)
        raise ValueError(f"env id {env_id!r} is registered by the package {prefix!r}: use {prefix}:{env_id} (the "
                         f"prefix makes every process, env workers included, import {prefix!r} first)")
    return None


def family_ids(prefix: str, with_prefix: bool = True) -> list[str]:
    """The Gymnasium ids a family registers (``[]`` when its package is not installed)."""
    try:
        importlib.import_module(FAMILIES[prefix].package)
    except ImportError:
        return []
    ids = [i for i in gymnasium.registry if _family_of_entry_point(i) == prefix]
    return [f"{prefix}:{i}" for i in ids] if with_prefix else ids


def make(env_id: str, kwargs: Mapping[str, Any] | None = None) -> GymMultiAgentParallel | None:
    """The env of a family id as a parallel env, or ``None`` when ``env_id`` is not a family id (see
    :func:`resolve`).

    ``kwargs`` go to the env constructor, except ``action_masks`` (bool, default ``False``): give each agent's
    valid actions in ``infos[agent]["action_mask"]`` (families with :attr:`Family.action_mask` only).

    Raises:
        ValueError: ``action_masks`` for a family that does not know its valid actions, or not a bool.
    """
    resolved = resolve(env_id)
    if resolved is None:
        return None
    family, gym_id = resolved
    kwargs = dict(kwargs or {})
    masks = kwargs.pop("action_masks", False)
    if not isinstance(masks, bool):
        raise ValueError(f"env.kwargs.action_masks must be true or false, got {masks!r}")
    if masks and family.action_mask is None:
        raise ValueError(f"env {env_id!r}: package {family.package!r} does not say which actions are valid, so "
                         f"env.kwargs.action_masks=true is not available for it; remove it")
    # The passive checker warns at every step that a list of rewards is not a float: by design here.
    env = gymnasium.make(gym_id, disable_env_checker=True, **kwargs)
    return GymMultiAgentParallel(env, family.task_over, name=f"{family.package}:{gym_id}",
                                 before_reset=family.before_reset,
                                 action_mask=family.action_mask if masks else None)


class GymMultiAgentParallel(ParallelEnv):
    """A Gymnasium env with ``Tuple`` spaces and per-agent rewards as a PettingZoo ``ParallelEnv``.

    Args:
        env: the Gymnasium env; ``observation_space`` and ``action_space`` are ``Tuple`` spaces of
            equal length (one entry per agent); ``step`` takes a tuple of actions and returns a
            sequence of rewards, and ``terminated`` / ``truncated`` as one bool or one per agent.
        task_over: called on ``env`` when an episode ends: ``True`` when the task is finished
            (all agents terminated), ``False`` for a time limit (all agents truncated). ``None``:
            the env's own flags decide (terminated when every agent is, else truncated).
        name: ``metadata["name"]``.
        before_reset: called on ``env`` before each of its resets, or ``None`` (see :attr:`Family.before_reset`).
        action_mask: called on ``env`` after each reset and step: the agents' valid actions, put in
            ``infos[agent]["action_mask"]``; ``None``: no masks (see :attr:`Family.action_mask`).
    """

    def __init__(self, env: gymnasium.Env, task_over: Callable[[gymnasium.Env], bool] | None = None,
                 name: str | None = None, before_reset: Callable[[gymnasium.Env], None] | None = None,
                 action_mask: Callable[[gymnasium.Env], list[np.ndarray]] | None = None) -> None:
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(obs_space, spaces.Tuple) or not isinstance(act_space, spaces.Tuple):
            raise ValueError(f"a multi-agent Gymnasium env needs Tuple observation and action spaces (one entry per "
                             f"agent), got {obs_space} and {act_space}")
        if len(obs_space) != len(act_space):
            raise ValueError(f"{len(obs_space)} observation spaces but {len(act_space)} action spaces")
        self.env, self.task_over, self.before_reset, self.action_mask = env, task_over, before_reset, action_mask
        self.possible_agents = [f"agent_{i}" for i in range(len(obs_space))]
        self.agents: list[str] = []
        # One space object per agent: the packages reuse one object for all, and seeding one would seed all.
        self.observation_spaces = {a: copy.deepcopy(s) for a, s in zip(self.possible_agents, obs_space, strict=True)}
        self.action_spaces = {a: copy.deepcopy(s) for a, s in zip(self.possible_agents, act_space, strict=True)}
        self.render_mode = getattr(env, "render_mode", None)
        self.metadata = {"name": name or type(env.unwrapped).__name__, "is_parallelizable": True,
                         "render_modes": ["rgb_array"]}
        self._own_state = callable(getattr(env.unwrapped, "state", None))
        if self._own_state:
            self.state_space = getattr(env.unwrapped, "state_space", None)
        else:
            dim = sum(spaces.flatdim(s) for s in obs_space)
            self.state_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self._obs: tuple[Any, ...] = ()

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if self.before_reset is not None:
            self.before_reset(self.env)
        obs, info = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self._obs = tuple(obs)
        return self._per_agent(self._obs), self._infos(info, self.agents)

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("step() after the episode ended; call reset() first")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise KeyError(f"no action for agents {missing}; every agent acts at every step")
        joint = tuple(actions[a] for a in self.possible_agents)
        obs, rewards, terminated, truncated, info = self.env.step(joint)
        self._obs = tuple(obs)
        rewards = np.broadcast_to(np.asarray(rewards, np.float64), (len(self.possible_agents),))
        all_terminated = bool(np.all(terminated))
        ended = all_terminated or bool(np.any(truncated))
        term = ended and (self.task_over(self.env) if self.task_over is not None else all_terminated)
        agents = self.agents
        flags_term = dict.fromkeys(agents, term)
        flags_trunc = dict.fromkeys(agents, ended and not term)
        out = (self._per_agent(self._obs), {a: float(rewards[i]) for i, a in enumerate(agents)},
               flags_term, flags_trunc, self._infos(info, agents))
        if ended:
            self.agents = []
        return out

    def _infos(self, info: Mapping[str, Any], agents: list[str]) -> dict[str, dict]:
        """One copy of the env's info per agent, with its ``action_mask`` when masks are on."""
        infos = {a: dict(info) for a in agents}
        if self.action_mask is not None:
            for agent, mask in zip(self.possible_agents, self.action_mask(self.env), strict=True):
                if agent in infos:
                    infos[agent]["action_mask"] = mask
        return infos

    def _per_agent(self, obs: tuple[Any, ...]) -> dict[str, Any]:
        return {a: np.asarray(o, self.observation_spaces[a].dtype) for a, o in zip(self.possible_agents, obs,
                                                                                  strict=True)}

    def state(self) -> np.ndarray:
        """The env's own ``state()``, or the agents' observations concatenated ``[sum of obs sizes]`` (float32)."""
        if self._own_state:
            return np.asarray(self.env.unwrapped.state())
        if not self._obs:
            raise RuntimeError("state() before reset()")
        return np.concatenate([np.asarray(o, np.float32).ravel() for o in self._obs])

    def render(self) -> np.ndarray | None:
        """An RGB frame when the env was made with ``render_mode="rgb_array"`` (pyglet: needs a display)."""
        if self.render_mode is None:
            return None
        try:
            return self.env.unwrapped.render(mode=self.render_mode)
        except Exception as err:  # noqa: BLE001 - pyglet raises its own display errors
            if "display" in type(err).__name__.lower() or "display" in str(err).lower():
                raise RuntimeError(f"{self.metadata['name']} draws with pyglet, which needs a display: run under a "
                                   f"virtual one (xvfb-run marl ...) ({err})") from err
            raise

    def close(self) -> None:
        self.env.close()
