"""Target networks and the pieces every off-policy loss shares.

* :func:`make_target`, :func:`hard_update`, :func:`soft_update`: a target network is a
  separate copy of its online network that receives no gradients; it is moved towards
  the online weights by Polyak averaging ``θ' <- (1 - τ) θ' + τ θ`` (``τ = 1``: a hard
  copy). Only critics bootstrap, so only the critic loss reads target networks; actor
  targets exist for TD3's target policy.
* :class:`OffPolicyBatch`: one group's sampled rows as tensors, normalized observations.
* :func:`td_target`: ``y = r_n + γ^n (1 - terminated_n) V(s_{t+n})``: ``terminated``
  stops bootstrapping, a time limit does not (its ``next_obs`` is the real final
  observation, so ``V`` of it is used).
* :func:`masked_mean`: loss means over alive agents (optionally weighted by PER importance
  weights); PPO's losses use it too.
* :func:`critic_terms`: one group's TD errors (the input of the PER priorities) and its
  ``q_loss`` / ``q_mean`` metrics.

What an update does around these losses (optimizer steps, metrics, checkpoint entries)
is in :mod:`marl.algos.learner_parts`.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import Tensor, nn


def make_target(source: nn.Module) -> nn.Module:
    """A separate deep copy of ``source`` with ``requires_grad=False`` on every parameter."""
    target = copy.deepcopy(source)
    target.requires_grad_(False)
    return target


def _pairs(target: nn.Module, source: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    t_params, s_params = list(target.parameters()), list(source.parameters())
    if len(t_params) != len(s_params) or any(t.shape != s.shape for t, s in zip(t_params, s_params)):
        raise ValueError("target and source have different parameters; build the target with make_target(source)")
    return t_params, s_params


@torch.no_grad()
def hard_update(target: nn.Module, source: nn.Module) -> None:
    """Copy every parameter and buffer of ``source`` into ``target`` (in place)."""
    t_params, s_params = _pairs(target, source)
    for t, s in zip(t_params, s_params):
        t.copy_(s)
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``θ' <- (1 - tau) θ' + tau θ`` of every parameter (in place).

    Buffers (constants such as action bounds) are copied. ``tau = 1`` is a hard copy,
    ``tau = 0`` leaves the target unchanged.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    t_params, s_params = _pairs(target, source)
    if tau == 1.0:
        hard_update(target, source)
        return
    for t, s in zip(t_params, s_params):
        t.lerp_(s, tau)  # t + tau * (s - t)
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)


class OffPolicyBatch(NamedTuple):
    """One group's sampled rows as tensors (``B`` rows, ``A`` agents).

    Attributes:
        obs: ``[B, A, *obs_shape]`` normalized observations (uint8 images unchanged).
        action: ``[B, A]`` int64 (discrete) or ``[B, A, d]`` float32 in ``[-1, 1]``
            (continuous; the env saw it scaled to the action bounds).
        reward_n: ``[B, A]`` n-step discounted reward sum.
        discount_n: ``[B]`` ``gamma ** n'`` of each row's window.
        next_obs_n: ``[B, A, *obs_shape]`` normalized observation after the window
            (the real final observation at a time limit).
        terminated_n: ``[B, A]`` bool, the window ended in a terminal state.
        alive: ``[B, A]`` bool, the agent acted at the row (others are masked out).
        weights: ``[B]`` float32 importance-sampling weights (ones without PER).
        action_mask: ``[B, A, n]`` bool or ``None``.
        next_action_mask_n: ``[B, A, n]`` bool or ``None``.
    """

    obs: Tensor
    action: Tensor
    reward_n: Tensor
    discount_n: Tensor
    next_obs_n: Tensor
    terminated_n: Tensor
    alive: Tensor
    weights: Tensor
    action_mask: Tensor | None = None
    next_action_mask_n: Tensor | None = None


def td_target(reward_n: Tensor, discount_n: Tensor, terminated_n: Tensor, next_value: Tensor) -> Tensor:
    """``reward_n + discount_n * (1 - terminated_n) * next_value``.

    Args:
        reward_n: ``[B, A]``.
        discount_n: ``[B]`` (broadcast over agents).
        terminated_n: ``[B, A]`` bool.
        next_value: ``[B, A]`` value of ``next_obs_n`` (already detached).
    """
    return reward_n + discount_n.unsqueeze(-1) * (~terminated_n).to(next_value.dtype) * next_value


def masked_mean(x: Tensor, alive: Tensor | None, weights: Tensor | None = None) -> Tensor:
    """Mean of ``x`` over the alive entries: ``sum(w * x * alive) / sum(alive)``, 0 when none is alive.

    The one masked mean of :mod:`marl.algos`: every loss of every algorithm (PPO's
    included) averages over alive agents with it.

    Args:
        x: ``[B, A]`` (any shape for ``weights=None``).
        alive: bool, shaped like ``x``; ``None`` = every entry counts (``x.mean()``, fewer operations).
        weights: ``[B]`` per-row weights (PER importance weights), ``None`` = 1. Dividing by
            the alive count (not by the weights) keeps the PER correction a pure
            down-weighting, as in the paper.
    """
    if alive is None:
        if weights is None:
            return x.mean()
        alive = torch.ones_like(x, dtype=torch.bool)
    m = alive.to(x.dtype)
    if weights is not None:
        m = m * weights.unsqueeze(-1).to(x.dtype)
    return (x * m).sum() / alive.sum().clamp_min(1).to(x.dtype)


def critic_terms(name: str, loss: Tensor, q: Tensor, y: Tensor, alive: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """One group's TD errors and critic metrics.

    Args:
        name: the group (metric suffix).
        loss: the group's critic loss (scalar).
        q: ``[B, A]`` the critic's value of the sampled actions (twin critics: ``(Q_1 + Q_2) / 2``).
        y: ``[B, A]`` the TD targets.
        alive: ``[B, A]`` bool, rows of agents that acted.

    Returns:
        ``td_error = q - y`` ``[B, A]`` (detached), and ``{"q_loss/<name>": loss,
        "q_mean/<name>": mean of q over alive agents}`` as detached 0-dim tensors.
    """
    q = q.detach()
    return q - y, {f"q_loss/{name}": loss.detach(), f"q_mean/{name}": masked_mean(q, alive)}
