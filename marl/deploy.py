"""A trained policy outside marl's vector envs: raw env observations in, env actions out.

:func:`marl.load` returns a :class:`DeployedPolicy`. Its :meth:`~DeployedPolicy.act` takes what a
plain env loop has in hand and gives back what that env's ``step`` takes:

* PettingZoo parallel env: the dict ``{agent: observation}`` of ``reset()`` / ``step()`` ->
  ``{agent: action}`` for the agents in the dict. Agents absent from the dict are not alive
  (zero observation, not acting), as in training.
* PettingZoo AEC env: one agent's observation (``env.last()[0]``) with ``agent=`` the agent to
  move -> its action. ``{agent: observation}`` works too.
* Gymnasium env (a one-agent run): the observation -> the action.

PettingZoo classic observations ``{"observation": ..., "action_mask": ...}`` carry their mask;
masks an env gives in ``info["action_mask"]`` go in ``action_masks={agent: mask}``. A masked
action is never chosen.

What the run did to observations is done here with the run's frozen statistics: its grouping
and agent order (agents are placed in their group's rows as in training), observation
normalization (statistics as saved, never updated), dtype casts. Preprocessing wrappers
(``env.frame_stack``, ``grayscale``, ``resize``, ``action_repeat``, ``pad``) live in the env:
:meth:`~DeployedPolicy.make_env` builds the run's env with them, and a user's own env needs
``marl.env.wrappers.apply_preprocess(env, marl.env.make.preprocess_of(policy.config.env))``.

Each call is one step of one env (``E = 1``) through the registry's acting policy
(:class:`marl.on_policy.ActorCriticPolicy` or :class:`marl.off_policy.OffPolicyActor`), so the
actions equal those of marl's own evaluation for the same observations. Stochastic calls
(``deterministic=False``) draw from torch's global RNG.

Recurrent policies (``model.recurrent``) remember: start each episode with
``hidden = policy.initial_hidden()`` and pass it along, ``actions, hidden = policy.act(obs,
hidden=hidden)``; agents absent from a call keep their state. Start a new episode (or, for an
agent that died and comes back, the whole hidden state) from ``initial_hidden()`` again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from marl.config import Config
from marl.env.make import make_raw_env, preprocess_of
from marl.env.spec import ObsFormat, decode_obs
from marl.env.wrappers import apply_preprocess
from marl.types import ActingPolicy, EnvSpec, GroupObs, GroupSpec


class DeployError(ValueError):
    """Observations or masks a deployed policy cannot act on; the message names the fix."""


def _format(raw: Any, group: GroupSpec) -> ObsFormat:
    """How one raw observation is decoded, read from the observation itself (as :func:`marl.env.spec.obs_format`)."""
    if isinstance(raw, Mapping):
        if "action_mask" in raw and "observation" in raw:
            return ObsFormat("masked", group.obs_space)
        if {"observation", "desired_goal"} <= set(raw):
            return ObsFormat("goal", group.obs_space, int(np.size(raw["observation"])),
                             int(np.size(raw["desired_goal"])))
        raise DeployError(f"a dict observation with keys {sorted(raw)}: expected observation + action_mask "
                          "(PettingZoo classic) or observation + achieved_goal + desired_goal (goal envs)")
    return ObsFormat("box", group.obs_space)


class DeployedPolicy:
    """A trained policy acting on raw env observations (see the module docstring).

    Args:
        policy: the registry's acting policy with the checkpoint's weights and statistics.
        config: the run's resolved config.
        spec: the env's spec (agents, groups, spaces).

    Attributes:
        policy, config, spec: as given.
        agents: every agent the policy can act for, in the run's order.
    """

    def __init__(self, policy: ActingPolicy, config: Config, spec: EnvSpec) -> None:
        self.policy = policy
        self.config = config
        self.spec = spec
        self.agents = spec.agents
        self._where = {a: (g, k) for g in spec.groups for k, a in enumerate(g.agents)}

    def __repr__(self) -> str:
        groups = ", ".join(f"{g.name}: {len(g.agents)}" for g in self.spec.groups)
        return f"DeployedPolicy({self.config.algo.name} on {self.config.env.id!r}, groups {{{groups}}})"

    # ------------------------------------------------------------------ inputs
    def _per_agent(self, observations: Any, agent: str | None) -> tuple[dict[str, Any], bool]:
        """``({agent: raw observation}, whether the caller gave a dict keyed by agent)``."""
        if isinstance(observations, Mapping) and observations and set(observations) <= set(self.agents):
            if agent is not None:
                raise DeployError("give either a dict {agent: observation} or one observation with agent=, not both")
            return dict(observations), True
        if isinstance(observations, Mapping) and not observations:
            return {}, True
        if isinstance(observations, Mapping) and not {"observation"} <= set(observations):
            unknown = sorted(set(observations) - set(self.agents))
            raise DeployError(f"unknown agent(s) {unknown}: this policy acts for {list(self.agents)}")
        if agent is None:
            if len(self.agents) != 1:
                raise DeployError(f"one observation but {len(self.agents)} agents: pass {{agent: observation}}, "
                                  "or agent='name' with an AEC agent's observation")
            agent = self.agents[0]
        if agent not in self._where:
            raise DeployError(f"unknown agent {agent!r}: this policy acts for {list(self.agents)}")
        return {agent: observations}, False

    def _group_obs(self, group: GroupSpec, raw: Mapping[str, Any], masks: Mapping[str, Any]) -> GroupObs:
        """One group's ``[1, A, ...]`` arrays: present agents alive, the others zero (as the adapters do)."""
        shape = tuple(group.obs_space.shape)
        obs = np.zeros((1, group.n_agents, *shape), group.obs_space.dtype)
        alive = np.zeros((1, group.n_agents), bool)
        mask = np.ones((1, group.n_agents, int(group.action_space.n)), bool) if group.has_action_mask else None
        for k, a in enumerate(group.agents):
            if a not in raw:
                continue
            fmt = _format(raw[a], group)
            value = raw[a]["observation"] if fmt.kind == "masked" else raw[a]
            if fmt.kind != "goal" and np.shape(value) != shape:
                raise DeployError(
                    f"agent {a!r}: observation shape {np.shape(value)}, the policy expects {shape}; give the "
                    "observations of the run's env with its preprocessing (policy.make_env(), or "
                    "marl.env.wrappers.apply_preprocess(env, marl.env.make.preprocess_of(policy.config.env)))")
            decode_obs(fmt, raw[a], k, obs[0], None if mask is None else mask[0], None)
            alive[0, k] = True
            if a in masks:
                if mask is None:
                    raise DeployError(f"action_masks[{a!r}] given, but group {group.name!r} was trained without masks")
                mask[0, k] = np.asarray(masks[a], bool)
            elif group.has_action_mask and fmt.kind != "masked":
                raise DeployError(f"agent {a!r} needs an action mask (the env gave masks in training): pass "
                                  f"action_masks={{{a!r}: info['action_mask']}}")
        if mask is not None and not mask[alive].any(-1).all():
            raise DeployError("an action mask allows no action; give a mask with at least one True per acting agent")
        return GroupObs(obs, alive, mask)

    # ------------------------------------------------------------------ acting
    def act(
        self,
        observations: Any,
        action_masks: Any = None,
        deterministic: bool = True,
        agent: str | None = None,
        hidden: Mapping[str, Any] | None = None,
    ) -> Any:
        """Actions for one env step.

        Args:
            observations: ``{agent: observation}`` (parallel env; absent agents are not alive), or
                one observation: a Gymnasium env's (one-agent run), or an AEC agent's with ``agent=``.
                A classic ``{"observation", "action_mask"}`` dict counts as one observation.
            action_masks: ``{agent: bool/0-1 mask [n_actions]}`` for envs that give masks in
                ``info`` (masks inside observations are read from there); with one observation,
                the mask alone.
            deterministic: the mode of the action distribution (greedy for DQN); ``False`` samples.
            agent: the agent whose observation ``observations`` is (AEC envs).
            hidden: recurrent policies: the state from :meth:`initial_hidden` (episode start) or
                from the previous call; required for them, refused by feed-forward ones.

        Returns:
            ``{agent: action}`` for a dict of observations, else the one action: ``int`` for
            discrete actions, a ``float32`` array within the action bounds for boxes. With
            ``hidden``: ``(actions, next_hidden)``.

        Raises:
            DeployError: unknown agents, wrong observation shapes, a missing or empty mask, a missing
                or unexpected ``hidden``.
        """
        recurrent = self.initial_hidden() is not None
        if recurrent and hidden is None:
            raise DeployError("this policy is recurrent: pass hidden=policy.initial_hidden() at an episode start "
                              "and the hidden state each call returns afterwards")
        if hidden is not None and not recurrent:
            raise DeployError("this policy is feed-forward and keeps no hidden state; call act() without hidden=")
        raw, as_dict = self._per_agent(observations, agent)
        if action_masks is not None and not isinstance(action_masks, Mapping):
            if as_dict:
                raise DeployError("with a dict of observations, give action_masks as {agent: mask}")
            action_masks = {next(iter(raw)): action_masks}
        masks = dict(action_masks or {})
        obs = {g.name: self._group_obs(g, raw, masks) for g in self.spec.groups}
        if hidden is None:
            out = self.policy.act(obs, None, deterministic=deterministic, update_stats=False, with_value=False)
        else:
            out = self.policy.act(obs, None, deterministic=deterministic, update_stats=False, with_value=False,
                                  hidden=hidden)
        actions = {}
        for a in raw:
            group, k = self._where[a]
            value = out.env_action[group.name][0, k]
            if group.discrete:
                actions[a] = int(value)
            else:
                box = group.action_space
                actions[a] = np.clip(value, box.low, box.high).astype(np.float32)
        result = actions if as_dict else actions[next(iter(raw))]
        return result if hidden is None else (result, out.hidden)

    def initial_hidden(self) -> dict[str, Any] | None:
        """A recurrent policy's state at an episode start (group -> zeros ``[1, A, S]``); ``None`` if feed-forward."""
        initial = getattr(self.policy, "initial_hidden", None)
        return None if initial is None else initial(1)

    def make_env(self, render_mode: str | None = None) -> Any:
        """The run's env as a plain PettingZoo / Gymnasium env (same id, kwargs and preprocessing)."""
        env = self.config.env
        return apply_preprocess(make_raw_env(env.id, dict(env.kwargs), render_mode), preprocess_of(env))
