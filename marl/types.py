"""Shared data types and the shape glossary.

Shape letters used in every docstring of the package:

* ``T`` time steps of a rollout (per env copy),
* ``E`` env copies in a vector env,
* ``A`` agents of one group (a group's agents share spaces),
* ``P`` parameter sets of a group (``1`` when shared, ``A`` when independent),
* ``B`` a flat batch (minibatch rows),
* ``S`` global state features.

Every per-agent array keeps the agent axis next to the env axis (``[E, A, ...]``)
together with an ``alive[E, A]`` mask: agents that are not acting (dead, or not
yet spawned, or waiting for their turn in a turn-based game) are masked out of
losses and statistics rather than trained on zeros.

Termination and truncation are kept apart everywhere: ``terminated`` stops
bootstrapping (the next state has value 0), ``truncated`` only cuts the
trajectory (the real final observation is kept so its value can be used).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import gymnasium
import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class GroupSpec:
    """Agents that share observation and action spaces.

    Attributes:
        name: group name (``"adversary"`` for ``adversary_0``, ``adversary_1``).
        agents: agent names in a fixed order; index ``i`` is agent axis position ``i``.
        obs_space: the space of one agent's observation (a ``Box``; image
            observations are ``uint8`` ``[H, W, C]``).
        action_space: one agent's action space (``Discrete`` or ``Box``).
        has_action_mask: whether the env supplies an ``action_mask`` per step.
        goal: for goal-conditioned envs, where the desired goal sits inside the
            flat observation vector, as ``(start, stop)``; ``None`` otherwise.
    """

    name: str
    agents: tuple[str, ...]
    obs_space: gymnasium.spaces.Box
    action_space: gymnasium.spaces.Space
    has_action_mask: bool = False
    goal: tuple[int, int] | None = None

    @property
    def n_agents(self) -> int:
        return len(self.agents)

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, gymnasium.spaces.Discrete)

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of one agent's action array: ``()`` for discrete, ``(d,)`` for boxes."""
        return () if self.discrete else tuple(self.action_space.shape)

    @property
    def action_dtype(self) -> np.dtype:
        return np.dtype(np.int64) if self.discrete else np.dtype(np.float32)


@dataclass(frozen=True)
class EnvSpec:
    """What the trainer needs to know about an environment, fixed for its life.

    Attributes:
        agents: every agent that can ever appear (PettingZoo's ``possible_agents``).
        groups: partition of ``agents`` into groups of equal spaces.
        state_shape: shape of the global state from the env's ``state()``, or
            ``None`` when the env has none.
        turn_based: ``True`` for AEC (turn-based) envs: one agent acts per step.
        metadata: render modes and fps, from the env.
    """

    agents: tuple[str, ...]
    groups: tuple[GroupSpec, ...]
    state_shape: tuple[int, ...] | None = None
    turn_based: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def group(self, name: str) -> GroupSpec:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no group {name!r}; groups are {[g.name for g in self.groups]}")

    @property
    def n_agents(self) -> int:
        return len(self.agents)


class GroupObs(NamedTuple):
    """What one group's agents see at one step of E env copies.

    Attributes:
        obs: ``[E, A, *obs_shape]`` observation (zeros where not alive).
        alive: ``[E, A]`` bool, the agent acts at this step.
        action_mask: ``[E, A, n_actions]`` bool (``True`` = allowed) or ``None``.
        achieved_goal: ``[E, A, G]`` the goal this observation achieves (goal envs, for
            hindsight relabelling), or ``None``.
    """

    obs: np.ndarray
    alive: np.ndarray
    action_mask: np.ndarray | None
    achieved_goal: np.ndarray | None = None


class GroupTransition(NamedTuple):
    """What happened to one group's agents in one vector step.

    All arrays are ``[E, A]`` unless stated; entries of agents that were not
    alive at the step are zero / ``False``.

    Attributes:
        reward: float32 reward of the step.
        terminated: the agent reached a terminal state (no bootstrap).
        truncated: the agent's episode was cut by a time limit (bootstrap from
            ``final_obs``).
        final_obs: ``[E, A, *obs_shape]`` the real observation after the step for
            agents whose episode ended at it (``terminated | truncated``);
            zeros elsewhere. Auto-reset replaces ``obs`` of the next
            ``GroupObs``, never this.
        final_achieved_goal: ``[E, A, G]`` the goal ``final_obs`` achieves (goal envs), or ``None``.
        final_action_mask: ``[E, A, n]`` bool the actions allowed at ``final_obs`` (what a truncated
            agent's bootstrap may choose among) for groups with masks, all ``True`` where the episode did not
            end or the env gave no mask with its final observation; ``None`` for groups without masks.
    """

    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    final_achieved_goal: np.ndarray | None = None
    final_action_mask: np.ndarray | None = None


class EpisodeStats(NamedTuple):
    """One finished episode of one env copy.

    Attributes:
        env_index: which env copy.
        returns: agent name -> undiscounted return (sum of the agent's rewards).
        length: env steps in the episode (agent decisions for turn-based envs).
        info: final per-episode scalars from the env's infos, e.g.
            ``is_success`` (goal envs) or ``win`` (games vs a fixed opponent).
    """

    env_index: int
    returns: dict[str, float]
    length: int
    info: dict[str, float]


class VecStep(NamedTuple):
    """Result of one vector env step (numpy arrays; torch tensors on the env's device from a torch-native
    batched env, :mod:`marl.env.batched`).

    Attributes:
        obs: group -> observation of the next step (after auto-reset).
        transition: group -> what happened at this step.
        state: ``[E, S]`` global state of the next step, or ``None``.
        final_state: ``[E, S]`` global state at the end of episodes that ended
            at this step (zeros elsewhere), or ``None``.
        episodes: episodes that finished at this step.
    """

    obs: dict[str, GroupObs]
    transition: dict[str, GroupTransition]
    state: np.ndarray | None
    final_state: np.ndarray | None
    episodes: list[EpisodeStats]


class ActOutput(NamedTuple):
    """What a policy did at one step, per group (PPO's and the off-policy actor's ``act``).

    Attributes:
        action: group -> ``[E, A, *action_shape]`` tensor as sampled (stored for log-probs).
        env_action: group -> numpy ``[E, A, *action_shape]`` for the env (scaled to bounds); a tensor on the
            device for a torch-native env (:mod:`marl.env.batched`).
        log_prob: group -> ``[E, A]``.
        value: group -> ``[E, A]``.
        obs: group -> normalized observation tensor actually fed to the actor.
        critic_in: group -> critic input tensor.
        hidden: recurrent policies: group -> ``[E, A, S]`` hidden state after this step (agents that
            did not act keep theirs; not yet zeroed at episode ends); ``None`` for feed-forward ones.
    """

    action: dict[str, Tensor]
    env_action: dict[str, np.ndarray]
    log_prob: dict[str, Tensor]
    value: dict[str, Tensor]
    obs: dict[str, Tensor]
    critic_in: dict[str, Tensor]
    hidden: dict[str, Tensor] | None = None


class ActingPolicy(Protocol):
    """What the run, evaluation, ``marl eval`` and ``marl record`` need of a policy.

    :class:`marl.on_policy.ActorCriticPolicy`, :class:`marl.off_policy.OffPolicyActor` and
    wrapped baselines in ``bench/`` provide it. A ``device`` attribute is optional (default: CPU).
    Recurrent policies also have ``initial_hidden(num_envs)`` (group -> zero ``[E, A, S]`` state, or
    ``None``) and take ``hidden=`` in ``act``, returning the next state in ``ActOutput.hidden``;
    without ``initial_hidden`` a policy is feed-forward.
    """

    def act(
        self,
        obs: Mapping[str, GroupObs],
        state: np.ndarray | None = None,
        deterministic: bool = False,
        update_stats: bool = False,
        with_value: bool = True,
    ) -> ActOutput:
        """Actions for one step of ``E`` env copies: ``obs`` group -> ``[E, A, ...]``, ``state [E, S]``."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
