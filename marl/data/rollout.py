"""On-policy rollout storage: one preallocated ``[T, E, A, ...]`` block per group.

Fields (per group):

=============  ======================  ==========================================
name           shape / dtype           meaning
=============  ======================  ==========================================
obs            [T, E, A, *obs] f32/u8  actor input as fed at collection (normalized)
critic_in      [T, E, A, *c]           critic input (same tensor as obs when local)
action         [T, E, A, *act]         action as sampled (before scaling to bounds)
log_prob       [T, E, A] f32           log π_old(a|s)
value          [T, E, A] f32           V_old(s)
reward         [T, E, A] f32           reward of the step (after scaling/clipping)
terminated     [T, E, A] bool          terminal state reached (no bootstrap)
truncated      [T, E, A] bool          time limit hit (bootstrap from final_value)
alive          [T, E, A] bool          the agent acted at this step
action_mask    [T, E, A, n] bool       allowed actions (discrete groups with masks)
final_value    [T, E, A] f32           V(real final obs), where truncated
advantage/ret  [T, E, A] f32           filled by :func:`finish`
=============  ======================  ==========================================
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from marl.returns import compute_gae


class GroupBatch(NamedTuple):
    """One group's rows, flattened over ``[T, E]`` -> ``[N]`` with the agent axis kept: ``[N, A, ...]``."""

    obs: Tensor
    critic_in: Tensor
    action: Tensor
    log_prob: Tensor
    value: Tensor
    advantage: Tensor
    ret: Tensor
    alive: Tensor
    action_mask: Tensor | None

    def index(self, rows: Tensor) -> GroupBatch:
        """The rows ``rows [B]`` of every field (``critic_in`` indexed once when it is ``obs``)."""
        obs = self.obs[rows]
        picked = GroupBatch(*(None if x is None or x is self.obs else x[rows] for x in self))
        return picked._replace(obs=obs, critic_in=obs if self.critic_in is self.obs else picked.critic_in)


class GroupRollout:
    """Storage for one group's ``T`` steps of ``E`` env copies.

    Args:
        num_steps: T.
        num_envs: E.
        n_agents: A.
        obs_shape / obs_dtype: one agent's actor input.
        critic_shape: one agent's critic input; ``None`` = the critic reads ``obs``.
        action_shape / action_dtype: one agent's action.
        n_actions_mask: width of the action mask, or ``None`` when the group has none.
        device: torch device of the storage.
    """

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        n_agents: int,
        *,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        critic_shape: tuple[int, ...] | None,
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        n_actions_mask: int | None,
        device: torch.device,
    ) -> None:
        lead = (num_steps, num_envs, n_agents)
        z = dict(device=device)
        self.obs = torch.zeros(*lead, *obs_shape, dtype=obs_dtype, **z)
        self.critic_in = None if critic_shape is None else torch.zeros(*lead, *critic_shape, **z)
        self.action = torch.zeros(*lead, *action_shape, dtype=action_dtype, **z)
        self.log_prob = torch.zeros(lead, **z)
        self.value = torch.zeros(lead, **z)
        self.reward = torch.zeros(lead, **z)
        self.terminated = torch.zeros(lead, dtype=torch.bool, **z)
        self.truncated = torch.zeros(lead, dtype=torch.bool, **z)
        self.alive = torch.zeros(lead, dtype=torch.bool, **z)
        self.final_value = torch.zeros(lead, **z)
        self.action_mask = None if n_actions_mask is None else torch.ones(*lead, n_actions_mask, dtype=torch.bool, **z)
        self.advantage = torch.zeros(lead, **z)
        self.ret = torch.zeros(lead, **z)

    def finish(
        self, last_value: Tensor, gamma: float, gae_lambda: float, bootstrap_on_truncation: bool = True
    ) -> None:
        """Compute advantages and returns with GAE (``last_value``: ``V(obs_T)`` ``[E, A]``)."""
        terminated = self.terminated if bootstrap_on_truncation else self.terminated | self.truncated
        self.advantage, self.ret = compute_gae(
            self.reward, self.value, terminated=terminated, truncated=self.truncated, alive=self.alive,
            final_value=self.final_value, last_value=last_value, gamma=gamma, gae_lambda=gae_lambda,
        )

    def flat(self) -> GroupBatch:
        """All rows as one :class:`GroupBatch` ``[T*E, A, ...]``."""
        def f(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.flatten(0, 1)

        return GroupBatch(
            f(self.obs), f(self.critic_in if self.critic_in is not None else self.obs), f(self.action),
            f(self.log_prob), f(self.value), f(self.advantage), f(self.ret), f(self.alive), f(self.action_mask),
        )
