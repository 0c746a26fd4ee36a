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
hidden         [T/L, E, A, S] f32      recurrent models: hidden state fed at each chunk's first step
reset          [T, E, A] bool          recurrent models: the state was zeroed after this step
=============  ======================  ==========================================

Recurrent models train on *chunks*: the rollout is cut into ``T / L`` pieces of ``L = bptt_len``
steps per env copy, and :meth:`GroupRollout.sequences` lays them out as ``C = (T / L) * E``
sequences ``[L, C, A, ...]`` (chunk ``c = k * E + e`` holds steps ``k*L .. k*L + L - 1`` of copy
``e``) with the stored initial state of each. A minibatch is a set of whole chunks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from marl.returns import compute_gae


def take_rows(x: Tensor, rows: Tensor, dim: int = 0) -> Tensor:
    """``x`` at indices ``rows [B]`` along ``dim`` (``x[rows]`` for ``dim=0``): a copy, by ``index_select``.

    The same values as advanced indexing, which on the CPU takes about 5x as long on rollout
    fields (a minibatch of 6,400 of 25,600 rows of 7 fields ``[N, 3, ...]``: 7 ms -> 1.3 ms, one core;
    ``python bench/bench_batched_ppo_parts.py``).
    """
    return x.index_select(dim, rows)


class GroupBatch(NamedTuple):
    """One group's rows, flattened over ``[T, E]`` -> ``[N]`` with the agent axis kept: ``[N, A, ...]``.

    A *sequence batch* (recurrent models, :meth:`GroupRollout.sequences`) keeps a time axis
    instead: fields ``[L, C, A, ...]`` over ``C`` chunks, with ``hidden [C, A, S]`` (the state fed
    at each chunk's first step) and ``reset [L, C, A]``; both are ``None`` in a flat batch."""

    obs: Tensor
    critic_in: Tensor
    action: Tensor
    log_prob: Tensor
    value: Tensor
    advantage: Tensor
    ret: Tensor
    alive: Tensor
    action_mask: Tensor | None
    hidden: Tensor | None = None
    reset: Tensor | None = None

    def index(self, rows: Tensor) -> GroupBatch:
        """The rows ``rows [B]`` of every field (``critic_in`` indexed once when it is ``obs``)."""
        obs = take_rows(self.obs, rows)
        picked = GroupBatch(*(None if x is None or x is self.obs else take_rows(x, rows) for x in self))
        return picked._replace(obs=obs, critic_in=obs if self.critic_in is self.obs else picked.critic_in)

    def index_chunks(self, chunks: Tensor) -> GroupBatch:
        """The chunks ``chunks [B]`` of a sequence batch (:meth:`GroupRollout.sequences`): fields ``[L, B, A, ...]``,
        ``hidden [B, A, S]``."""
        obs = take_rows(self.obs, chunks, 1)
        picked = GroupBatch(*(None if x is None or x is self.obs or x is self.hidden else take_rows(x, chunks, 1)
                              for x in self))
        return picked._replace(obs=obs, critic_in=obs if self.critic_in is self.obs else picked.critic_in,
                               hidden=take_rows(self.hidden, chunks))


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
        hidden_size: ``S`` of a recurrent model's hidden state; 0 = feed-forward (no ``hidden``/``reset``).
        bptt_len: ``L``, steps per chunk (recurrent models); must divide ``num_steps``; 0 = ``num_steps``.
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
        hidden_size: int = 0,
        bptt_len: int = 0,
    ) -> None:
        lead = (num_steps, num_envs, n_agents)
        self.chunk_len = bptt_len or num_steps
        if num_steps % self.chunk_len:
            raise ValueError(f"bptt_len={bptt_len} does not divide num_steps={num_steps}")
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
        self.hidden = self.reset = None
        if hidden_size:
            self.hidden = torch.zeros(num_steps // self.chunk_len, num_envs, n_agents, hidden_size, **z)
            self.reset = torch.zeros(lead, dtype=torch.bool, **z)

    def finish(
        self, last_value: Tensor, gamma: float, gae_lambda: float, bootstrap_on_truncation: bool = True,
        steps: int | None = None,
    ) -> None:
        """Compute advantages and returns with GAE (``last_value``: ``V(obs_T')`` ``[E, A]``) over the first
        ``steps`` rows (``T'``; default all ``T``: a rollout ended early holds fewer)."""
        n = self.reward.shape[0] if steps is None else steps
        terminated = self.terminated if bootstrap_on_truncation else self.terminated | self.truncated
        self.advantage, self.ret = compute_gae(
            self.reward[:n], self.value[:n], terminated=terminated[:n], truncated=self.truncated[:n],
            alive=self.alive[:n], final_value=self.final_value[:n], last_value=last_value, gamma=gamma,
            gae_lambda=gae_lambda,
        )

    def flat(self, steps: int | None = None) -> GroupBatch:
        """The first ``steps`` rows (default all ``T``) as one :class:`GroupBatch` ``[T'*E, A, ...]``."""
        n = self.reward.shape[0] if steps is None else steps

        def f(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[:n].flatten(0, 1)

        return GroupBatch(
            f(self.obs), f(self.critic_in if self.critic_in is not None else self.obs), f(self.action),
            f(self.log_prob), f(self.value), f(self.advantage), f(self.ret), f(self.alive), f(self.action_mask),
        )

    def sequences(self) -> GroupBatch:
        """All chunks as one sequence :class:`GroupBatch`: fields ``[L, C, A, ...]`` with ``C = (T / L) * E``,
        ``hidden [C, A, S]``, ``reset [L, C, A]`` (recurrent storage only)."""
        if self.hidden is None:
            raise ValueError("sequences() needs a recurrent rollout (built with hidden_size > 0)")
        n_chunks, length = self.hidden.shape[0], self.chunk_len

        def f(x: Tensor | None) -> Tensor | None:
            if x is None:
                return None
            # [T, E, ...] -> [K, L, E, ...] -> [L, K, E, ...] -> [L, K*E, ...]
            x = x.reshape(n_chunks, length, *x.shape[1:]).transpose(0, 1)
            return x.reshape(length, n_chunks * x.shape[2], *x.shape[3:])

        obs = f(self.obs)
        return GroupBatch(
            obs, obs if self.critic_in is None else f(self.critic_in), f(self.action), f(self.log_prob),
            f(self.value), f(self.advantage), f(self.ret), f(self.alive), f(self.action_mask),
            self.hidden.flatten(0, 1), f(self.reset),
        )
