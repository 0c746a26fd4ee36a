"""Return and advantage estimators: pure functions over ``[T, ...]`` arrays.

Two flags are kept apart, as everywhere in the package:

* ``terminated[t]``: the step ended in a terminal state; the next state's value is 0.
* ``done[t] = terminated[t] | truncated[t]``: the trajectory is cut after step ``t``
  (what follows belongs to a new episode), so no advantage flows back across it.

On truncation the value of the *real* final observation is used for
bootstrapping (``final_value``), not the value of the first observation of the
next episode that an auto-resetting env returns.

Agents that are not alive at a step (dead, not spawned, or waiting for their turn
in a turn-based game) are skipped: the "next step" of an agent is its next alive
step, and rewards and termination that reach an agent while it waits (the loser
of a board game is told it lost on the winner's move) are credited to its last
alive step. With every agent alive at every step this is the ordinary GAE.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


def compute_gae(
    reward: Tensor,
    value: Tensor,
    *,
    terminated: Tensor,
    truncated: Tensor,
    alive: Tensor,
    final_value: Tensor,
    last_value: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) with alive masks.

    Args:
        reward: ``[T, ...]`` reward received during step ``t`` (by every agent,
            alive or not).
        value: ``[T, ...]`` ``V(obs_t)`` under the policy that collected the data.
        terminated: ``[T, ...]`` bool, the episode ended in a terminal state at ``t``.
        truncated: ``[T, ...]`` bool, the episode was cut by a time limit at ``t``.
        alive: ``[T, ...]`` bool, the agent acted at step ``t``.
        final_value: ``[T, ...]`` ``V(final_obs_t)``, read only where ``truncated``.
        last_value: ``[...]`` ``V(obs_T)``, the value after the last step.
        gamma: discount factor in (0, 1].
        gae_lambda: GAE λ in [0, 1]; 1 gives Monte-Carlo returns with bootstrap,
            0 gives one-step TD errors.

    Returns:
        ``(advantage, ret)``, both ``[T, ...]`` float32, with ``ret = advantage + value``.
        Entries at steps where the agent is not alive are 0 and must be masked out.
    """
    if bool(alive.all()):
        return _gae_all_alive(reward, value, terminated, truncated, final_value, last_value, gamma, gae_lambda)
    return _gae_alive_aware(reward, value, terminated, truncated, alive, final_value, last_value, gamma, gae_lambda)


def _gae_all_alive(
    reward: Tensor,
    value: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    final_value: Tensor,
    last_value: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """:func:`compute_gae` when every agent is alive at every step (nothing waits, nothing is pending).

    The TD errors are computed for all steps at once; only the recursion
    ``A_t = δ_t + γλ (1 - done_t) A_{t+1}`` runs step by step, on numpy arrays
    (two small operations per step instead of a dozen tensor operations).
    """
    value = value.float()
    next_value = torch.cat([value[1:], last_value.float().unsqueeze(0)])
    boot = torch.where(truncated & ~terminated, final_value.float(), next_value)
    delta = (reward + gamma * (~terminated) * boot - value).numpy(force=True)
    carry = (gamma * gae_lambda) * (~(terminated | truncated)).numpy(force=True)
    advantage = np.empty_like(delta)
    running = np.zeros_like(delta[0])
    for t in range(delta.shape[0] - 1, -1, -1):
        running = delta[t] + carry[t] * running
        advantage[t] = running
    adv = torch.from_numpy(advantage).to(value.device)
    return adv, adv + value


def _gae_alive_aware(
    reward: Tensor,
    value: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    alive: Tensor,
    final_value: Tensor,
    last_value: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """:func:`compute_gae` in general: dead and waiting agents, pending rewards."""
    steps = reward.shape[0]
    value = value.float()
    advantage = torch.zeros_like(value)
    next_value = last_value.float().clone()  # value of the agent's next alive step
    next_adv = torch.zeros_like(next_value)  # advantage of the agent's next alive step
    # Rewards / terminal flags that reached a waiting agent after its last move.
    pending_reward = torch.zeros_like(next_value)
    pending_term = torch.zeros_like(next_value, dtype=torch.bool)
    pending_done = torch.zeros_like(next_value, dtype=torch.bool)
    zero = torch.zeros_like(next_value)
    for t in reversed(range(steps)):
        is_alive, waiting = alive[t], ~alive[t]
        ended = terminated[t] | truncated[t]
        # What reached the agent while it waited after this move belongs to this move,
        # unless the agent's own episode ended here (then it belongs to the next episode).
        keep = ~ended
        pend_r = torch.where(keep, pending_reward, zero)
        term = terminated[t] | (keep & pending_term)
        trunc = truncated[t] & ~terminated[t]
        done = ended | (keep & pending_done)
        # On truncation bootstrap from the real final observation.
        boot = torch.where(trunc, final_value[t].float(), next_value)
        delta = reward[t] + pend_r + gamma * (~term) * boot - value[t]
        adv = delta + gamma * gae_lambda * (~done) * next_adv
        advantage[t] = torch.where(is_alive, adv, zero)
        # Carry for earlier steps: an alive step becomes the agent's "next step".
        next_adv = torch.where(is_alive, adv, next_adv)
        next_value = torch.where(is_alive, value[t], next_value)
        # A waiting step accumulates into the pending quantities; one that ends the agent's
        # episode restarts them (what came after it is the next episode).
        ended_waiting = ended & waiting
        pending_reward = torch.where(
            is_alive, zero, torch.where(ended_waiting, reward[t], pending_reward + reward[t])
        )
        pending_term = torch.where(ended_waiting, terminated[t], pending_term & waiting)
        pending_done = torch.where(ended_waiting, torch.ones_like(pending_done), pending_done & waiting)
        next_value = torch.where(ended_waiting & truncated[t] & ~terminated[t], final_value[t].float(), next_value)
        next_adv = torch.where(ended_waiting, zero, next_adv)
    ret = advantage + value * alive
    return advantage, ret


def discounted_returns(reward: Tensor, done: Tensor, gamma: float, last: Tensor | None = None) -> Tensor:
    """Plain discounted return ``G_t = r_t + γ (1 - done_t) G_{t+1}`` over ``[T, ...]``.

    The reference the GAE tests compare against (λ = 1, no truncation); also the
    quantity whose running std scales rewards.
    """
    out = torch.zeros_like(reward, dtype=torch.float32)
    running = torch.zeros_like(reward[0], dtype=torch.float32) if last is None else last.float().clone()
    for t in reversed(range(reward.shape[0])):
        running = reward[t] + gamma * (~done[t]) * running
        out[t] = running
    return out


def explained_variance(pred: Tensor, target: Tensor) -> float:
    """``1 - Var(target - pred) / Var(target)``; NaN when the target is constant."""
    var = target.var(unbiased=False)
    if var.item() == 0:
        return float("nan")
    return float(1 - (target - pred).var(unbiased=False) / var)


class VTrace(NamedTuple):
    """What :func:`compute_vtrace` returns; every field ``[T, ...]`` float32, 0 where the agent is not alive.

    Attributes:
        target: ``v_s``, the V-trace value target.
        advantage: ``rho_s (r_s + gamma ((1 - lam) V(x_{s+1}) + lam v_{s+1}) - V(x_s))``, the policy-gradient
            advantage (the paper's ``rho_s (r_s + gamma v_{s+1} - V(x_s))`` for ``lam = 1``).
        rho: ``min(rho_bar, pi / mu)``, the clipped importance ratio of each step.
    """

    target: Tensor
    advantage: Tensor
    rho: Tensor


def compute_vtrace(
    reward: Tensor,
    value: Tensor,
    log_rho: Tensor,
    *,
    terminated: Tensor,
    truncated: Tensor,
    alive: Tensor,
    final_value: Tensor,
    last_value: Tensor,
    gamma: float,
    lam: float = 1.0,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> VTrace:
    """V-trace targets and advantages (Espeholt et al. 2018, eq. 1 and section 4.2) with alive masks.

    ``v_s = V(x_s) + sum_{t >= s} gamma^(t-s) (prod_{i=s}^{t-1} c_i) rho_t delta_t``, with
    ``delta_t = r_t + gamma V(x_{t+1}) - V(x_t)``, ``rho_t = min(rho_bar, pi/mu)`` and
    ``c_i = lam * min(c_bar, pi/mu)`` (the paper's lambda variant), computed backwards as
    ``v_s - V(x_s) = rho_s delta_s + gamma c_s (v_{s+1} - V(x_{s+1}))``. The sum stops at an episode end:
    ``V(x_{t+1})`` and ``v_{t+1}`` are 0 after a terminal step and ``V(final obs)`` after a truncated one
    (``final_value``). Alive masks, pending rewards of waiting agents and episode ends while waiting are
    handled as in :func:`compute_gae`. The advantage bootstraps from ``(1 - lam) V(x_{s+1}) + lam v_{s+1}``
    (the paper's ``v_{s+1}`` for ``lam = 1``), so that with ``pi = mu`` (``log_rho = 0``) the targets and the
    advantages are exactly :func:`compute_gae`'s returns and advantages for ``gae_lambda = lam``.

    Args:
        reward: ``[T, ...]`` reward received during step ``t``.
        value: ``[T, ...]`` ``V(x_t)`` under the value function being trained (the learner's).
        log_rho: ``[T, ...]`` ``log pi(a_t|x_t) - log mu(a_t|x_t)``: target minus behaviour log-probability.
        terminated, truncated, alive: ``[T, ...]`` bool, as in :func:`compute_gae`.
        final_value: ``[T, ...]`` ``V(final_obs_t)``, read only where ``truncated``.
        last_value: ``[...]`` ``V(x_T)``, the value after the last step.
        gamma: discount factor in (0, 1].
        lam: trace-cutting lambda in [0, 1] (``c_i`` is multiplied by it); 1 is the paper's plain V-trace.
        rho_bar: clip of the importance ratio in the TD errors and the advantage (``rho_bar >= c_bar``).
        c_bar: clip of the importance ratio in the trace.
    """
    ratio = log_rho.float().exp()
    rho = ratio.clamp(max=rho_bar)
    c = lam * ratio.clamp(max=c_bar)
    value = value.float()
    zero = torch.zeros_like(last_value, dtype=torch.float32)
    next_value = last_value.float().clone()  # V of the agent's next alive step
    next_target = next_value.clone()  # v of the agent's next alive step (v_T = V(x_T))
    next_acc = zero.clone()  # v - V of the agent's next alive step
    pending_reward = zero.clone()
    pending_term = torch.zeros_like(zero, dtype=torch.bool)
    pending_done = torch.zeros_like(zero, dtype=torch.bool)
    target, advantage = torch.zeros_like(value), torch.zeros_like(value)
    for t in reversed(range(reward.shape[0])):
        is_alive, waiting = alive[t], ~alive[t]
        ended = terminated[t] | truncated[t]
        keep = ~ended  # what reached the agent while it waited belongs to this move, unless its episode ended here
        r = reward[t] + torch.where(keep, pending_reward, zero)
        term = terminated[t] | (keep & pending_term)
        trunc = truncated[t] & ~terminated[t]
        done = ended | (keep & pending_done)
        boot_value = torch.where(trunc, final_value[t].float(), next_value)
        boot_target = torch.where(trunc, final_value[t].float(), next_target)
        acc = rho[t] * (r + gamma * (~term) * boot_value - value[t]) + gamma * c[t] * (~done) * next_acc
        v = value[t] + acc
        target[t] = torch.where(is_alive, v, zero)
        boot_q = boot_target if lam == 1.0 else (1.0 - lam) * boot_value + lam * boot_target
        advantage[t] = torch.where(is_alive, rho[t] * (r + gamma * (~term) * boot_q - value[t]), zero)
        next_acc = torch.where(is_alive, acc, next_acc)
        next_value = torch.where(is_alive, value[t], next_value)
        next_target = torch.where(is_alive, v, next_target)
        ended_waiting = ended & waiting
        pending_reward = torch.where(is_alive, zero, torch.where(ended_waiting, reward[t], pending_reward + reward[t]))
        pending_term = torch.where(ended_waiting, terminated[t], pending_term & waiting)
        pending_done = torch.where(ended_waiting, torch.ones_like(pending_done), pending_done & waiting)
        cut = ended_waiting & truncated[t] & ~terminated[t]
        next_value = torch.where(cut, final_value[t].float(), next_value)
        next_target = torch.where(cut, final_value[t].float(), next_target)
        next_acc = torch.where(ended_waiting, zero, next_acc)
    return VTrace(target, advantage, torch.where(alive, rho, torch.zeros_like(rho)))
