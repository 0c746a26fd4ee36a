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

import torch
from torch import Tensor


def compute_gae(
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
    steps = reward.shape[0]
    value = value.float()
    advantage = torch.zeros_like(value)
    next_value = last_value.float().clone()  # value of the agent's next alive step
    next_adv = torch.zeros_like(next_value)  # advantage of the agent's next alive step
    # Rewards / terminal flags that reached a waiting agent after its last move.
    pending_reward = torch.zeros_like(next_value)
    pending_term = torch.zeros_like(next_value, dtype=torch.bool)
    pending_done = torch.zeros_like(next_value, dtype=torch.bool)
    for t in reversed(range(steps)):
        is_alive = alive[t]
        term = terminated[t] | pending_term
        trunc = truncated[t] & ~term
        done = term | trunc | pending_done
        # On truncation bootstrap from the real final observation.
        boot = torch.where(trunc, final_value[t].float(), next_value)
        delta = reward[t] + pending_reward + gamma * (~term) * boot - value[t]
        adv = delta + gamma * gae_lambda * (~done) * next_adv
        advantage[t] = torch.where(is_alive, adv, torch.zeros_like(adv))
        # Update the carry: alive steps become the "next step" of earlier ones;
        # while an agent waits, what reaches it is accumulated for its last move.
        next_adv = torch.where(is_alive, adv, next_adv)
        next_value = torch.where(is_alive, value[t], next_value)
        waiting = ~is_alive
        pending_reward = torch.where(waiting, pending_reward + reward[t], torch.zeros_like(pending_reward))
        # A waiting agent whose episode ended has the end pending for its last move;
        # a waiting step that ends an episode also restarts the carry (new episode after it).
        ended = (terminated[t] | truncated[t]) & waiting
        pending_term = torch.where(waiting, pending_term | (terminated[t] & waiting), torch.zeros_like(pending_term))
        pending_done = torch.where(waiting, pending_done | ended, torch.zeros_like(pending_done))
        # A waiting agent truncated: bootstrap its last move from the final obs.
        next_value = torch.where(truncated[t] & waiting, final_value[t].float(), next_value)
        next_adv = torch.where(ended, torch.zeros_like(next_adv), next_adv)
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
