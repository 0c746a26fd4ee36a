"""Value decomposition on the DQN core: VDN (Sunehag et al. 2018) and QMIX (Rashid et al. 2018).

Every agent of every group (all with Discrete actions) forms one **team**. Each agent has a Q
network (:class:`marl.algos.dqn.QPolicyNet`, in any sharing mode: shared with one-hot ids,
independent, or a map; run batched over the agent axis) and acts greedily on it; a mixer
(:mod:`marl.nets.mixers`) combines the Q values of the actions taken into one team value
``Q_tot``, which is trained on joint transitions (one replay row per env step holding every
agent) towards the team's TD target. Gradients flow through the mixer into every agent's network;
one optimizer holds the agents' and the mixer's parameters, each once.

Conventions (all rows ``B``, team agents ``A`` in group order):

* team reward ``r_tot = sum_a alive_a * r_a`` (the sum of the agents' rewards of the window; an
  env with a common reward gives every agent the same ``r``, so ``r_tot = A_alive * r``); with
  ``algo.standardize_rewards`` the batch's ``r_tot`` are standardized before the target (then ``Q_tot``
  is in those units);
* with ``algo.standardize_returns`` (EPyMARL's ``standardise_returns``) ``Q_tot`` is learned in standardized
  units: the target mixer's output is mapped back to returns (``* std + mean``), the TD targets ``y`` are folded
  into running statistics (:class:`marl.normalization.RunningMeanStd`) and then standardized
  (``(y - mean) / std``); the agents' greedy actions do not change (an increasing affine map of ``Q_tot``).
  With ``algo.return_stats=returns`` the statistics take in the Monte-Carlo team returns of the batch's rows
  whose episode ended instead of the targets (:func:`fold_returns`);
* the team is terminated at the window end when every agent alive at the row is terminated;
  a time limit (truncation) is bootstrapped from the real final observations and state;
* an agent enters the mix of ``Q_tot(s)`` only where it acted (``alive``) and the mix of the
  bootstrap state only where it is alive there and not terminated (``next_alive_n & ~terminated_n``);
  others enter as ``Q_a = 0`` (:func:`marl.nets.mixers.masked_q`);
* double Q (van Hasselt et al. 2016): the online agents pick the argmax over the *allowed*
  actions of the next state, the target agents value it, the target mixer mixes::

      a*_a = argmax_{u allowed} Q_a(o'_a, u)                  (online agents)
      y    = r_tot + gamma^n' (1 - terminated_team) Q_tot'(s', [Q'_a(o'_a, a*_a)]_a)   (targets)
      loss = mean_B w_b * l(Q_tot(s, [Q_a(o_a, u_a)]_a) - y)   l = squared error (or Huber)

  with ``w`` the PER importance weights (ones without PER). The TD error of a row is the team's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marl.algos.dqn import QPolicyNet, masked_argmax
from marl.algos.learner_parts import CheckpointParts, LearnerOut, adam, gradient_step, learner_out
from marl.algos.targets import make_target, soft_update
from marl.config import ConfigError, QMIXConfig, VDNConfig
from marl.nets.mixers import QMixer, VDNMixer
from marl.normalization import RunningMeanStd
from marl.types import EnvSpec


class GroupRows(NamedTuple):
    """One group's part of sampled team rows, as tensors (``B`` rows, ``A_g`` agents of the group).

    Attributes:
        obs: ``[B, A_g, *obs_shape]`` normalized observations.
        action: ``[B, A_g]`` int64 actions taken.
        reward_n: ``[B, A_g]`` n-step discounted reward sums of each agent.
        next_obs_n: ``[B, A_g, *obs_shape]`` normalized observations after the window (real final ones at a limit).
        terminated_n: ``[B, A_g]`` bool, the agent's window ended in a terminal state.
        alive: ``[B, A_g]`` bool, the agent acted at the row.
        next_alive_n: ``[B, A_g]`` bool, the agent is alive after the window.
        action_mask: ``[B, A_g, n]`` bool allowed actions, or ``None``.
        next_action_mask_n: ``[B, A_g, n]`` bool allowed actions after the window, or ``None``.
    """

    obs: Tensor
    action: Tensor
    reward_n: Tensor
    next_obs_n: Tensor
    terminated_n: Tensor
    alive: Tensor
    next_alive_n: Tensor
    action_mask: Tensor | None = None
    next_action_mask_n: Tensor | None = None


class TeamBatch(NamedTuple):
    """Sampled team rows: every group's agents at the same env steps.

    Attributes:
        groups: group -> :class:`GroupRows`, in the team's group order.
        discount_n: ``[B]`` ``gamma ** n'`` of each row's window.
        weights: ``[B]`` PER importance weights (ones without PER).
        state: ``[B, S]`` global state at the row (the env's ``state()``), or ``None`` (then a mixer that
            needs a state gets every agent's observation concatenated, :func:`obs_state`).
        next_state_n: ``[B, S]`` global state after the window (the final state at an episode end), or ``None``.
        episode_return: ``[B]`` Monte-Carlo discounted team return from the row to its episode's end
            (:func:`marl.off_policy.team.team_episode_returns`), for ``algo.return_reg`` and
            ``algo.return_stats=returns``; ``None`` without them.
        return_complete: ``[B]`` bool, the row's episode had ended in the replay (``episode_return`` is whole).
    """

    groups: dict[str, GroupRows]
    discount_n: Tensor
    weights: Tensor
    state: Tensor | None = None
    next_state_n: Tensor | None = None
    episode_return: Tensor | None = None
    return_complete: Tensor | None = None


def cat_agents(tensors: list[Tensor]) -> Tensor:
    """Groups' ``[B, A_g, ...]`` tensors joined on the agent axis: ``[B, A, ...]``."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)


def obs_state(obs: list[Tensor]) -> Tensor:
    """The global state as every agent's observation concatenated: groups' ``[B, A_g, *obs_shape]`` -> ``[B, S]``."""
    return torch.cat([o.reshape(o.shape[0], -1).float() for o in obs], dim=1)


def team_reward(reward_n: Tensor, alive: Tensor) -> Tensor:
    """``r_tot [B] = sum_a alive_a * reward_n_a`` of ``reward_n [B, A]`` and ``alive [B, A]`` bool."""
    return (reward_n * alive.to(reward_n.dtype)).sum(dim=-1)


def standardized_rewards(reward: Tensor, valid: Tensor, eps: float = 1e-5) -> Tensor:
    """``(r - mean) / (std + eps)`` of ``reward [B]`` with mean and (unbiased) std over the ``valid [B]`` rows; other
    rows are returned as 0. EPyMARL's ``standardise_rewards`` (per sampled batch): rare rewards stand out of the
    noise of a fresh Q network whatever their scale (level-based foraging pays fractions of 1 per episode)."""
    m = valid.to(reward.dtype)
    n = m.sum()
    mean = (reward * m).sum() / n.clamp_min(1.0)
    std = (((reward - mean) * m).square().sum() / (n - 1.0).clamp_min(1.0)).sqrt()
    return (reward - mean) / (std + eps) * m


RETURN_STD_EPS = 1e-5
"""Added to the running std of the TD targets (as ``standardized_rewards``'s ``eps``): no division by 0."""


def return_units(q_tot: Tensor, stats: RunningMeanStd) -> Tensor:
    """``Q_tot`` in standardized units back in return units: ``q_tot * (std + eps) + mean`` (``[B]``)."""
    return q_tot * (float(stats.std) + RETURN_STD_EPS) + float(stats.mean)


def standardized_baseline(episode_return: Tensor, stats: RunningMeanStd) -> Tensor:
    """Monte-Carlo returns ``[B]`` in the standardized units of ``Q_tot`` (``algo.standardize_returns``): minus the
    running mean, over the running std (the statistics are not updated here)."""
    return standardized(episode_return, stats)


def return_penalty(q_tot: Tensor, baseline: Tensor, rows: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """The regularizer of Pan et al. 2021 (RES, "Regularized Softmax Deep Multi-Agent Q-Learning"): the weighted
    mean over ``rows [B]`` (bool) of ``(Q_tot - G)^2`` for ``q_tot [B]`` and the Monte-Carlo returns ``G = baseline
    [B]``, which pulls joint values that the bootstrapped targets overestimate back towards what the episodes
    returned. Returns ``(penalty, mean of Q_tot - G over rows, detached)`` (0-dim; 0 with no row)."""
    penalty = weighted_row_mean((q_tot - baseline).square(), rows, weights)
    gap = ((q_tot.detach() - baseline) * rows.to(q_tot.dtype)).sum() / rows.sum().clamp_min(1).to(q_tot.dtype)
    return penalty, gap


def deviation_joint_values(q_next: Tensor, best: Tensor) -> Tensor:
    """The agents' values of the joint actions one deviation away from the greedy one: ``[B, A, n, A]``, entry
    ``[b, i, u]`` the values when agent ``i`` takes action ``u`` and every other agent its greedy action ``best``.

    Args:
        q_next: ``[B, A, n]`` the agents' Q values (target networks) at the next state.
        best: ``[B, A]`` the greedy actions.
    """
    base = q_next.gather(-1, best.unsqueeze(-1)).squeeze(-1)  # [B, A]
    eye = torch.eye(q_next.shape[1], dtype=torch.bool, device=q_next.device)  # [A (deviating), A]
    return torch.where(eye[None, :, None, :], q_next.unsqueeze(-1), base[:, None, None, :])


def softmax_team_value(q_tot: Tensor, valid: Tensor, beta: float) -> Tensor:
    """``sum_k w_k Q_tot_k`` with ``w = softmax(beta * Q_tot)`` over the ``valid`` candidates (``[B, K]`` each; the
    first, the greedy joint action, always valid): the softmax operator of Pan et al. 2021 (RES) on a set of joint
    actions. ``beta -> inf`` gives the set's max, ``beta -> 0`` its mean. Returns ``[B]``."""
    logits = torch.where(valid, beta * q_tot, torch.full_like(q_tot, -torch.inf))
    return (torch.softmax(logits, dim=-1) * torch.where(valid, q_tot, torch.zeros_like(q_tot))).sum(dim=-1)


def standardized(y: Tensor, stats: RunningMeanStd) -> Tensor:
    """``(y - mean) / (std + eps)`` of ``y [B]`` (return units) with ``stats``'s running mean and std."""
    return (y - float(stats.mean)) / (float(stats.std) + RETURN_STD_EPS)


def standardized_targets(y: Tensor, valid: Tensor, stats: RunningMeanStd) -> Tensor:
    """Fold the targets ``y [B]`` of the ``valid [B]`` rows into ``stats``, then ``(y - mean) / (std + eps)``
    with the updated statistics (EPyMARL's ``standardise_returns``: update first, then standardize)."""
    stats.update(y[valid].to(torch.float64))
    return standardized(y, stats)


RETURN_STD_FLOOR = 0.05
"""With ``algo.return_stats=returns`` the std that standardizes ``Q_tot`` is at least this fraction of the largest
``|G|`` folded in (:class:`ReturnStats`)."""


class ReturnStats(RunningMeanStd):
    """Running mean and std of the Monte-Carlo team returns (``algo.return_stats=returns``), the std floored at
    :data:`RETURN_STD_FLOOR` times the largest ``|G|`` seen: episodes that all return the same value (sparse
    rewards before the first success) would otherwise shrink the std towards 0, and the first different return
    would become a target thousands of std away. The largest ``|G|`` is checkpointed with the moments (a checkpoint
    without it, from before, resumes with 0: the floor is back at the first batch that holds a non-zero return)."""

    def __init__(self) -> None:
        super().__init__(())
        self.scale = 0.0

    def update(self, x: np.ndarray | Tensor) -> None:
        if len(x):
            self.scale = max(self.scale, float(abs(x).max()))
        super().update(x)

    @property
    def std(self) -> np.ndarray:
        return np.maximum(np.sqrt(self.var), RETURN_STD_FLOOR * self.scale)

    def state_dict(self) -> dict[str, Tensor]:
        return {**super().state_dict(), "scale": torch.tensor(self.scale, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        super().load_state_dict(state)
        self.scale = float(state.get("scale", 0.0))


def fold_returns(episode_return: Tensor, rows: Tensor, stats: RunningMeanStd) -> None:
    """Fold the Monte-Carlo team returns ``[B]`` of ``rows [B]`` (bool: valid, with a whole episode) into ``stats``
    (``algo.return_stats=returns``): the units of ``Q_tot`` then follow what the episodes returned, never the
    bootstrapped targets."""
    if bool(rows.any()):
        stats.update(episode_return[rows].to(torch.float64))


def team_terminated(terminated_n: Tensor, alive: Tensor) -> Tensor:
    """``[B]`` bool: every agent that acted at the row (``alive [B, A]``) is terminated at the window end
    (``terminated_n [B, A]``); a row where no agent acted counts as terminated."""
    return (terminated_n | ~alive).all(dim=-1)


def bootstrap_alive(next_alive_n: Tensor, terminated_n: Tensor) -> Tensor:
    """``[B, A]`` bool: the agents that enter the mix of the bootstrap state (alive there, not terminated)."""
    return next_alive_n & ~terminated_n


def team_td_target(reward: Tensor, discount_n: Tensor, terminated: Tensor, next_q_tot: Tensor) -> Tensor:
    """``y [B] = reward + discount_n * (1 - terminated) * next_q_tot`` (all ``[B]``, ``next_q_tot`` detached)."""
    return reward + discount_n * (~terminated).to(next_q_tot.dtype) * next_q_tot


def td_loss(q_tot: Tensor, y: Tensor, kind: str) -> Tensor:
    """Elementwise loss ``[B]``: ``(q_tot - y)^2`` (``mse``) or Huber with threshold 1 (``huber``)."""
    if kind == "mse":
        return (q_tot - y).square()
    return F.smooth_l1_loss(q_tot, y, reduction="none", beta=1.0)


def weighted_row_mean(x: Tensor, valid: Tensor, weights: Tensor) -> Tensor:
    """``sum_b w_b x_b valid_b / sum_b valid_b`` of ``[B]`` tensors (0 when no row is valid)."""
    m = valid.to(x.dtype)
    return (x * weights.to(x.dtype) * m).sum() / m.sum().clamp_min(1.0)


def team_agents(spec: EnvSpec, algo: VDNConfig) -> int:
    """The team's agent count ``A``; every group must have Discrete actions (else a one-line ConfigError)."""
    for g in spec.groups:
        if not g.discrete:
            raise ConfigError(f"algo.name={algo.name} needs Discrete actions for every agent of the team; group "
                              f"{g.name!r} has {g.action_space}. Use algo.name=sac or td3")
    return sum(g.n_agents for g in spec.groups)


def build_mixer(spec: EnvSpec, algo: VDNConfig, state_dim: int) -> nn.Module:
    """:class:`VDNMixer` for ``vdn``, :class:`QMixer` over all team agents for ``qmix`` (state width ``state_dim``)."""
    n_agents = team_agents(spec, algo)
    if isinstance(algo, QMIXConfig):
        return QMixer(n_agents, state_dim, algo.mixer_embed, algo.hypernet_layers, algo.hypernet_embed)
    return VDNMixer()


class ValueDecompositionLearner:
    """Updates per-agent Q networks and a mixer from team rows (VDN or QMIX).

    Args:
        q: the online agent networks (also the acting networks; greedy per agent).
        mixer: :class:`VDNMixer` or :class:`QMixer`.
        cfg: lr, adam_eps, tau, target_update_interval, max_grad_norm, double_q, td_loss are read;
            gamma enters through the rows' ``discount_n``.

    Attributes:
        target, target_mixer: target copies (no gradients), moved towards the online ones every
            ``target_update_interval`` steps by ``tau``.
        return_stats: running mean and variance of the TD targets, or of the Monte-Carlo returns
            (:class:`ReturnStats`, ``algo.return_stats=returns``), with ``algo.standardize_returns``; else ``None``.
        optimizer: one Adam over the agents' and the mixer's parameters, each once.
        grad_steps: gradient steps taken.
    """

    def __init__(self, q: QPolicyNet, mixer: nn.Module, cfg: VDNConfig) -> None:
        self.q, self.mixer, self.cfg = q, mixer, cfg
        self.target = make_target(q)
        self.target_mixer = make_target(mixer)
        self.optimizer = adam(self.trainable(), cfg.lr, cfg.adam_eps)
        self.grad_steps = 0
        self.return_stats = (None if not cfg.standardize_returns
                             else ReturnStats() if cfg.return_stats == "returns" else RunningMeanStd(()))

    def agent_values(self, b: TeamBatch) -> tuple[Tensor, Tensor]:
        """``(Q of the actions taken [B, A], next-state values [B, A])``, the latter without gradients
        (double Q: online argmax over allowed next actions, valued by the target agents)."""
        q, best, _ = self.next_agent_q(b)
        return self.taken_values(b), q.gather(-1, best.unsqueeze(-1)).squeeze(-1)

    def taken_values(self, b: TeamBatch) -> Tensor:
        """``[B, A]`` the online agents' Q of the actions taken (with gradients)."""
        return cat_agents([self.q[name](g.obs, g.action_mask).gather(-1, g.action.long().unsqueeze(-1)).squeeze(-1)
                           for name, g in b.groups.items()])

    def next_agent_q(self, b: TeamBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Every agent's target Q values at the next state and its greedy action (double Q: the online agents'
        argmax over allowed actions), groups padded to the largest action count: ``(q [B, A, n], best [B, A],
        allowed [B, A, n] bool)`` (padding: not allowed)."""
        qs, bests, masks = [], [], []
        width = max(int(self.q[name].n_actions) for name in b.groups)
        with torch.no_grad():
            for name, g in b.groups.items():
                q = self.target[name](g.next_obs_n, g.next_action_mask_n)
                chooser = self.q[name](g.next_obs_n, g.next_action_mask_n) if self.cfg.double_q else q
                allowed = torch.ones_like(q, dtype=torch.bool) if g.next_action_mask_n is None \
                    else g.next_action_mask_n.bool()
                bests.append(masked_argmax(chooser, allowed))
                pad = width - q.shape[-1]
                qs.append(F.pad(q, (0, pad)))
                masks.append(F.pad(allowed, (0, pad), value=False))
        return cat_agents(qs), cat_agents(bests), cat_agents(masks)

    def softmax_next_value(self, q: Tensor, best: Tensor, allowed: Tensor, next_state: Tensor | None,
                           next_alive: Tensor) -> Tensor:
        """RES's approximate softmax target (``algo.softmax_beta``, Pan et al. 2021): the target mixer's ``Q_tot``
        of the greedy joint action and of every joint action where one agent that enters the mix takes another
        allowed action (the others greedy), combined by :func:`softmax_team_value`. Returns ``[B]`` in the target
        mixer's units. With ``algo.double_q`` the set is built around the online agents' greedy joint action and
        valued by the target agents: as beta grows the value tends to the set's max, which is at least the
        double-Q value (the set holds the target agents' own argmax). ``q, best, allowed``: :meth:`next_agent_q`."""
        n_rows, n_agents, width = q.shape
        greedy = q.gather(-1, best.unsqueeze(-1)).squeeze(-1)
        joint = torch.cat([greedy[:, None], deviation_joint_values(q, best).reshape(n_rows, -1, n_agents)], 1)
        k = joint.shape[1]  # 1 + A * n candidates per row
        state = None if next_state is None else next_state.repeat_interleave(k, 0)
        with torch.no_grad():
            q_tot = self.target_mixer(joint.reshape(-1, n_agents), state, next_alive.repeat_interleave(k, 0))
        other = allowed & next_alive[..., None] & (torch.arange(width, device=q.device) != best[..., None])
        valid = torch.cat([torch.ones_like(other[:, :1, 0]), other.reshape(n_rows, -1)], 1)
        return softmax_team_value(q_tot.view(n_rows, k), valid, self.cfg.softmax_beta)

    def losses(self, b: TeamBatch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The team TD loss, the team TD errors ``Q_tot - y`` ``[B]`` (detached) and metrics (0-dim tensors).

        With ``algo.standardize_returns`` the TD errors are in standardized units, the statistics take in this
        batch's targets (``algo.return_stats=returns``: its rows' whole Monte-Carlo returns), and ``q_mean`` is in
        return units."""
        rows = list(b.groups.values())
        alive = cat_agents([g.alive for g in rows])
        terminated_n = cat_agents([g.terminated_n for g in rows])
        state, next_state = b.state, b.next_state_n
        if state is None and isinstance(self.mixer, QMixer):
            state, next_state = obs_state([g.obs for g in rows]), obs_state([g.next_obs_n for g in rows])
        q_taken = self.taken_values(b)
        q_tot = self.mixer(q_taken, state, alive)
        with torch.no_grad():
            next_alive = bootstrap_alive(cat_agents([g.next_alive_n for g in rows]), terminated_n)
            q_next, best, allowed = self.next_agent_q(b)
            if self.cfg.softmax_beta > 0:
                next_q_tot = self.softmax_next_value(q_next, best, allowed, next_state, next_alive)
            else:
                next_q_tot = self.target_mixer(q_next.gather(-1, best.unsqueeze(-1)).squeeze(-1), next_state,
                                               next_alive)
            if self.return_stats is not None:
                next_q_tot = return_units(next_q_tot, self.return_stats)
            reward = team_reward(cat_agents([g.reward_n for g in rows]), alive)
            valid = alive.any(dim=-1)
            target_reward = standardized_rewards(reward, valid) if self.cfg.standardize_rewards else reward
            y = team_td_target(target_reward, b.discount_n, team_terminated(terminated_n, alive), next_q_tot)
            if self.return_stats is not None and self.cfg.return_stats == "returns":
                if b.episode_return is None:
                    raise ValueError("algo.return_stats=returns needs the batch's episode_return and return_complete")
                fold_returns(b.episode_return, valid & b.return_complete, self.return_stats)
                y = standardized(y, self.return_stats)
            elif self.return_stats is not None:
                y = standardized_targets(y, valid, self.return_stats)
        loss = weighted_row_mean(td_loss(q_tot, y, self.cfg.td_loss), valid, b.weights)
        td = (q_tot.detach() - y) * valid.to(y.dtype)
        extra = {"q_loss": loss.detach()}  # the TD term alone (the regularizer's term is return_penalty)
        if self.cfg.return_reg > 0 and b.episode_return is not None:
            baseline = b.episode_return if self.return_stats is None else standardized_baseline(b.episode_return,
                                                                                                self.return_stats)
            penalty, gap = return_penalty(q_tot, baseline, valid & b.return_complete, b.weights)
            loss = loss + self.cfg.return_reg * penalty
            extra.update(return_penalty=penalty.detach(), q_minus_return=gap)
        n_alive = alive.sum().clamp_min(1).to(q_taken.dtype)
        q_tot_returns = q_tot.detach() if self.return_stats is None else return_units(q_tot.detach(), self.return_stats)
        metrics = {"q_mean": weighted_row_mean(q_tot_returns, valid, torch.ones_like(y)),
                   "q_agent_mean": (q_taken.detach() * alive.to(q_taken.dtype)).sum() / n_alive,
                   "team_reward": weighted_row_mean(reward, valid, torch.ones_like(y)), **extra}
        return loss, td, metrics

    def update(self, b: TeamBatch) -> LearnerOut:
        """One gradient step of agents and mixer together; target update every ``target_update_interval`` steps.

        ``LearnerOut.td_error`` holds the team TD errors ``[B]`` under the team's first group (the
        replay that samples the rows and keeps their priorities)."""
        loss, td, metrics = self.losses(b)
        cfg = self.cfg
        metrics["grad_norm"] = gradient_step(self.optimizer, loss, self.trainable(), cfg.max_grad_norm)
        self.grad_steps += 1
        if self.grad_steps % cfg.target_update_interval == 0:
            soft_update(self.target, self.q, cfg.tau)
            soft_update(self.target_mixer, self.mixer, cfg.tau)
        first = next(iter(b.groups))
        return learner_out(metrics, {first: td}, [])

    def trainable(self) -> list[nn.Parameter]:
        """Every trained parameter: the agents' networks, then the mixer's."""
        return [*self.q.parameters(), *self.mixer.parameters()]

    def checkpoint_parts(self) -> CheckpointParts:
        """The checkpointed parts by entry name (the agents' online networks live in the policy entry)."""
        parts = {"mixer": self.mixer, "target": self.target, "target_mixer": self.target_mixer,
                 "optimizer": self.optimizer}
        if self.return_stats is not None:  # only then: checkpoints of runs without it load as before
            parts["return_stats"] = self.return_stats
        return CheckpointParts(parts)

    def state_dict(self) -> dict:
        """Mixer, target networks, optimizer, counter (and the TD targets' statistics)."""
        return {**self.checkpoint_parts().state_dict(), "grad_steps": self.grad_steps}

    def load_state_dict(self, state: Mapping) -> None:
        self.checkpoint_parts().load_state_dict(state)
        self.grad_steps = int(state["grad_steps"])
