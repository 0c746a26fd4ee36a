"""Recurrent DQN on stored sequences, the shape of R2D2 (Kapturowski et al. 2019, "Recurrent Experience
Replay in Distributed Reinforcement Learning").

Glossary (shapes as in :mod:`marl.types`; ``P = L + 1`` positions of a sequence of ``L = algo.seq_len`` steps):

* **sequence**: up to ``L`` consecutive steps of one env copy's episode for one group, with the
  observation after its last step at position ``length`` (the real final observation where the
  episode ended) and the hidden state the actor fed at its first step. Shorter sequences (the
  episode ended) are padded; ``valid [L, B]`` marks the real steps.
* **burn-in**: a sequence that continues an episode starts with the last ``algo.burn_in`` steps of
  the previous one; those steps only warm the stored (stale) state: the state leaving them is
  detached and they are left out of the loss. A sequence that starts at an episode's first step
  has the exact state (zeros) and no burn-in. So every step of an episode is in the loss once.
* **carry rules** in the unroll, as in acting (:mod:`marl.nets.recurrent`): an agent not alive
  keeps its state; the state of an agent whose trajectory ended at step ``t`` (``ended``) is
  zeroed after the step, except after the sequence's last step, whose next position is the
  bootstrap observation (read with the state carried, as the actor would).

Loss per step ``t`` (``mask = valid & alive & t >= burn_in``), with windows of ``n' <= n`` steps
that stop at the agent's end or the sequence's last step::

    y_t = sum_{k < n'} gamma^k r_{t+k} + gamma^n' (1 - terminated_{t+n'-1}) Q_target(p_{t+n'}, a*)
    a*  = argmax_a Q_online(p_{t+n'}, a)   (double Q; allowed actions only)
    loss = mean over masked (t, b, a) of w_b * huber(Q_online(p_t, a_t), y_t)

Sequence priority (PER): ``eta * max|delta| + (1 - eta) * mean|delta|`` over its masked entries.

Limitation: an agent truncated alone while its episode goes on (rare: time limits end every agent
at once) bootstraps from its next observation with a zeroed state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

from marl.algos.dqn import DQNLearner, huber, masked_argmax
from marl.algos.targets import masked_mean
from marl.algos.value_decomposition import (
    ValueDecompositionLearner,
    bootstrap_alive,
    obs_state,
    return_penalty,
    return_units,
    standardized_baseline,
    standardized_rewards,
    standardized_targets,
    td_loss,
    team_reward,
    team_terminated,
    weighted_row_mean,
)
from marl.config import ConfigError, ModelConfig
from marl.multi_agent.groups import group_sharing, obs_encoder, param_sets_for
from marl.nets import dueling_q
from marl.nets.mixers import QMixer
from marl.nets.recurrent import RecurrentAgentNet
from marl.types import GroupSpec


class SequenceBatch(NamedTuple):
    """One group's sampled sequences as tensors, time first (``L`` steps, ``P = L + 1`` positions).

    Attributes:
        obs: ``[P, B, A, *obs_shape]`` normalized observations; position ``t + 1`` follows step ``t``.
        action: ``[L, B, A]`` int64.
        reward: ``[L, B, A]`` float32.
        terminated: ``[L, B, A]`` bool, no bootstrap after the step.
        ended: ``[L, B, A]`` bool, the agent's trajectory ended at the step (terminated or truncated).
        alive: ``[P, B, A]`` bool, the agent acts at the position.
        valid: ``[L, B]`` bool, the step is real (not padding).
        burn_in: ``[B]`` int64, leading steps that only warm the state (0 or ``algo.burn_in``).
        hidden: ``[B, A, S]`` the actor's state before step 0.
        weights: ``[B]`` importance-sampling weights (ones without PER).
        action_mask: ``[P, B, A, n]`` bool or ``None``.
    """

    obs: Tensor
    action: Tensor
    reward: Tensor
    terminated: Tensor
    ended: Tensor
    alive: Tensor
    valid: Tensor
    burn_in: Tensor
    hidden: Tensor
    weights: Tensor
    action_mask: Tensor | None = None


def ahead(x: Tensor, k: int, fill: float | bool) -> Tensor:
    """``x`` shifted ``k`` steps back along dim 0: ``out[t] = x[t + k]``, ``fill`` past the end."""
    if k == 0:
        return x
    n = x.shape[0]
    pad = torch.full((min(k, n), *x.shape[1:]), fill, dtype=x.dtype, device=x.device)
    return pad if k >= n else torch.cat([x[k:], pad], 0)


def reset_mask(ended: Tensor, valid: Tensor) -> Tensor:
    """``[P, B, A]`` bool: zero the agent's state after position ``t`` in the unroll.

    ``ended [L, B, A]`` except after a sequence's last valid step (its next position is the bootstrap
    observation, read with the state carried); never after the last position.
    """
    more = ahead(valid, 1, False).unsqueeze(-1)  # a valid step follows
    return torch.cat([ended & more, torch.zeros_like(ended[:1])], 0)


def loss_mask(valid: Tensor, alive: Tensor, burn_in: Tensor) -> Tensor:
    """``[L, B, A]`` bool: steps in the loss: real, the agent alive, past the sequence's burn-in.

    Args:
        valid: ``[L, B]``; alive: ``[L, B, A]``; burn_in: ``[B]`` int.
    """
    t = torch.arange(valid.shape[0], device=valid.device).unsqueeze(-1)
    return valid.unsqueeze(-1) & alive & (t >= burn_in.unsqueeze(0)).unsqueeze(-1)


def sequence_targets(reward: Tensor, terminated: Tensor, ended: Tensor, valid: Tensor, next_value: Tensor,
                     gamma: float, n_step: int) -> Tensor:
    """n-step TD targets ``y [L, B, A]`` inside sequences (the module docstring's formula).

    Args:
        reward, terminated, ended: ``[L, B, A]``.
        valid: ``[L, B]`` real steps.
        next_value: ``[P, B, A]`` bootstrap value of each position (detached; position 0 unused).
        gamma: discount factor.
        n_step: the longest window ``n``.

    The window of step ``t`` stops after step ``t + k`` when ``k = n - 1``, the agent's trajectory
    ended there, or no real step follows; it bootstraps from position ``t + k + 1`` unless terminated.
    Entries of padded steps are meaningless (masked out of the loss).
    """
    close_at = ended | ~ahead(valid, 1, False).unsqueeze(-1)
    y = torch.zeros_like(reward)
    open_ = torch.ones_like(ended)
    disc = 1.0
    for k in range(n_step):
        y = y + torch.where(open_, disc * ahead(reward, k, 0.0), 0.0)
        disc *= gamma
        close = open_ & (ahead(close_at, k, True) | (k == n_step - 1))
        boot = (~ahead(terminated, k, True)).to(y.dtype) * ahead(next_value[1:], k, 0.0)
        y = y + torch.where(close, disc * boot, 0.0)
        open_ = open_ & ~close
    return y


def sequence_priority(abs_td: Tensor, mask: Tensor, eta: float) -> Tensor:
    """``[B]`` priority of each sequence: ``eta * max + (1 - eta) * mean`` of ``abs_td [L, B, A]`` over ``mask``
    (0 for a sequence with no masked entry)."""
    m = mask.to(abs_td.dtype)
    count = m.sum(dim=(0, 2))
    top = (abs_td * m).amax(dim=(0, 2))  # |TD| >= 0, so masked zeros never win
    mean = (abs_td * m).sum(dim=(0, 2)) / count.clamp_min(1)
    return eta * top + (1 - eta) * mean


class RecurrentGroupQ(nn.Module):
    """Recurrent Q network of one group: encoder -> GRU/LSTM core -> Q head, batched over the agent axis.

    Args:
        group: a group with a ``Discrete(n)`` action space.
        model: widths, sharing, ``recurrent`` cell and ``rnn_hidden``.
        dueling: ``1 + n`` outputs combined by :func:`marl.nets.dueling_q`.
    """

    def __init__(self, group: GroupSpec, model: ModelConfig, dueling: bool) -> None:
        super().__init__()
        if not group.discrete:
            raise ConfigError(f"algo.name=dqn needs Discrete actions; group {group.name!r} has {group.action_space}")
        self.n_actions = int(group.action_space.n)
        self.dueling = dueling
        obs_shape = tuple(group.obs_space.shape)
        encoder, scale = obs_encoder(obs_shape, group.obs_space.dtype, model.encoder)
        self.net = RecurrentAgentNet(
            obs_shape, self.n_actions + int(dueling), group.n_agents, cell=model.recurrent,
            rnn_hidden=model.rnn_hidden, hidden=tuple(model.hidden), activation=model.activation,
            param_sets=param_sets_for(group_sharing(model.sharing, group), group.agents), agent_id=model.agent_id,
            strategy=model.strategy, encoder=encoder, input_scale=scale, out_gain=1.0)
        self.state_size = self.net.state_size

    def zero_state(self, num_envs: int) -> Tensor:
        """``[E, A, S]`` zeros."""
        return self.net.zero_state(num_envs)

    def _q(self, out: Tensor, mask: Tensor | None) -> Tensor:
        return dueling_q(out, mask) if self.dueling else out

    def step(self, obs: Tensor, hidden: Tensor, alive: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """One acting step: ``obs [E, A, ...]``, ``hidden [E, A, S]``, ``alive [E, A]`` -> ``(Q [E, A, n], hidden')``
        (agents not alive keep their state; zeroing at episode ends is the caller's)."""
        out, hidden = self.net(obs.unsqueeze(0), hidden, alive.unsqueeze(0))
        return self._q(out[0], mask), hidden

    def unroll(self, obs: Tensor, hidden: Tensor, alive: Tensor, reset: Tensor, mask: Tensor | None,
               burn_in: int = 0, stale: Tensor | None = None) -> Tensor:
        """Q ``[P, B, A, n]`` over sequences ``obs [P, B, A, ...]`` from ``hidden [B, A, S]``.

        ``alive`` / ``reset`` ``[P, B, A]``: the carry rules. The state leaving the first ``burn_in``
        positions is detached for the rows ``stale [B]`` (their burn-in then gives no gradient).
        """
        feats = self.net.features(obs)
        if burn_in and stale is not None:  # no data-dependent branch: no device sync
            warm, hidden = self.net.core(feats[:burn_in], hidden, alive[:burn_in], reset[:burn_in])
            hidden = torch.where(stale.view(-1, 1, 1), hidden.detach(), hidden)
            rest, _ = self.net.core(feats[burn_in:], hidden, alive[burn_in:], reset[burn_in:])
            out = torch.cat([warm, rest], 0)
        else:
            out, _ = self.net.core(feats, hidden, alive, reset)
        return self._q(self.net.head(out), mask)


class RecurrentDQNLearner(DQNLearner):
    """:class:`marl.algos.dqn.DQNLearner` on :class:`SequenceBatch` es: online and target networks unrolled over
    each sequence, the loss of the module docstring. ``td_error`` holds each group's ``[B]`` sequence priorities
    (``eta`` = ``algo.per_eta``), the input of :meth:`marl.data.sequences.SequenceReplay.update_priorities`."""

    def losses(self, batches: Mapping[str, SequenceBatch]) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Summed loss over groups, ``[B]`` sequence priorities per group, and metrics (no step)."""
        cfg = self.cfg
        group_losses: list[Tensor] = []
        priority: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {}
        for name, b in batches.items():
            qnet, target = self.q[name], self.target[name]
            reset = reset_mask(b.ended, b.valid)
            stale = b.burn_in > 0
            q_all = qnet.unroll(b.obs, b.hidden, b.alive, reset, b.action_mask, cfg.burn_in, stale)
            q_taken = q_all[:-1].gather(-1, b.action.long().unsqueeze(-1)).squeeze(-1)  # [L, B, A]
            with torch.no_grad():
                q_target = target.unroll(b.obs, b.hidden, b.alive, reset, b.action_mask)
                chooser = q_all.detach() if cfg.double_q else q_target
                best = masked_argmax(chooser, b.action_mask)
                next_value = q_target.gather(-1, best.unsqueeze(-1)).squeeze(-1)  # [P, B, A]
                y = sequence_targets(b.reward, b.terminated, b.ended, b.valid, next_value, cfg.gamma, cfg.n_step)
            mask = loss_mask(b.valid, b.alive[:-1], b.burn_in)
            # PER weights per sequence, broadcast over steps: masked_mean weights the last-but-one axis
            loss = masked_mean(huber(q_taken, y).transpose(0, 1), mask.transpose(0, 1), b.weights.unsqueeze(-1))
            group_losses.append(loss)
            td = (q_taken.detach() - y).abs()
            priority[name] = sequence_priority(td, mask, cfg.per_eta)
            metrics[f"q_loss/{name}"] = loss.detach()
            metrics[f"q_mean/{name}"] = masked_mean(q_taken.detach(), mask)
        return torch.stack(group_losses).sum(), priority, metrics


def team_ended(ended_n: Tensor, alive: Tensor) -> Tensor:
    """``[N]`` bool: the team's trajectory ends at the row, every agent acting there (``alive [N, A]``) ended
    (``ended_n [N, A]``: terminated, truncated or dead); a row where no agent acts is not an end."""
    return (ended_n | ~alive).all(dim=-1) & alive.any(dim=-1)


def team_sequence_targets(reward: Tensor, terminated: Tensor, ended: Tensor, valid: Tensor, next_q_tot: Tensor,
                          gamma: float, n_step: int) -> Tensor:
    """The team's n-step targets ``y [L * B]`` (rows step-major, as ``valid [L, B]`` flattened).

    Args:
        reward, terminated, ended: ``[L * B]`` team reward, team termination and team end of each step.
        next_q_tot: ``[L * B]`` the target mixer's value of the position after each step (detached).
        gamma, n_step: discount and the longest window.

    :func:`sequence_targets` with the team as one agent: the bootstrap of a window that closes after step
    ``t + k`` is ``next_q_tot`` of that step, i.e. the value of position ``t + k + 1``."""
    n_steps, batch = valid.shape

    def seq(x: Tensor) -> Tensor:
        return x.view(n_steps, batch, 1)

    next_value = torch.cat([torch.zeros_like(seq(next_q_tot)[:1]), seq(next_q_tot)])  # [P, B, 1] by position
    return sequence_targets(seq(reward), seq(terminated), seq(ended), valid, next_value, gamma, n_step).reshape(-1)


def sequence_returns(reward: Tensor, ended: Tensor, valid: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Monte-Carlo team returns inside sampled sequences, for ``algo.return_reg`` and ``algo.return_stats=returns``.

    Args:
        reward: ``[L, B]`` team reward of each step (raw units).
        ended: ``[L, B]`` bool, the team's trajectory ends at the step (:func:`team_ended`).
        valid: ``[L, B]`` real steps.
        gamma: discount factor.

    Returns:
        ``(G [L, B], complete [L, B] bool)``: ``G_t = r_t + gamma * G_{t+1}``, cut after the step where the team
        ends or the sequence's real steps run out; ``complete_t`` when that cut is the team's end (a whole
        episode's return; a sequence of a whole episode, as EPyMARL samples, completes every step; a sequence
        shorter than its episode completes only the steps of the episode's tail it holds).
    """
    n_steps = reward.shape[0]
    g, complete = torch.zeros_like(reward), torch.zeros_like(valid)
    later, later_complete = torch.zeros_like(reward[0]), torch.zeros_like(valid[0])
    for t in reversed(range(n_steps)):
        more = valid[t + 1] if t + 1 < n_steps else torch.zeros_like(valid[t])
        g[t] = reward[t] + gamma * torch.where(ended[t] | ~more, torch.zeros_like(later), later)
        complete[t] = valid[t] & (ended[t] | (more & later_complete))
        later, later_complete = g[t], complete[t]
    return g, complete


class TeamSequenceBatch(NamedTuple):
    """Sampled team sequences for value decomposition: every group's agents over the same env steps.

    Attributes:
        groups: group -> :class:`SequenceBatch` (``valid``, ``burn_in`` and ``weights`` are the same in each).
        state: ``[P, B, S]`` global state of each position (the final state after an episode's last step), or
            ``None`` (a QMIX mixer then reads every agent's observation concatenated).
    """

    groups: dict[str, SequenceBatch]
    state: Tensor | None = None


class RecurrentValueDecompositionLearner(ValueDecompositionLearner):
    """VDN / QMIX (:class:`marl.algos.value_decomposition.ValueDecompositionLearner`) on team sequences: every
    group's agent networks unrolled over the sequence as :class:`RecurrentDQNLearner` does, then at each step
    ``t`` the team's n-step target (:func:`sequence_targets` on the team's reward, ``n = algo.n_step``)::

        y_t = sum_{k < n'} gamma^k r_tot_{t+k}
              + gamma^n' (1 - terminated_team_{t+n'-1}) Q_tot_target(p_{t+n'}, [Q'_a(p_{t+n'}, a*_a)]_a)

    where the window of ``n' <= n`` steps stops early at the team's end (every agent acting there ended) or
    the sequence's last real step, over the steps ``valid & t >= burn_in`` where some agent acts;
    ``r_tot`` is standardized over the batch's acting steps when ``algo.standardize_rewards`` is on; with
    ``algo.standardize_returns`` the target mixer's values are mapped back to returns and the trained steps'
    targets are folded into running statistics and standardized, as in the feed-forward learner;
    ``algo.return_reg`` adds its penalty on the trained steps whose episode ends inside the sequence
    (:func:`sequence_returns`: with sequences shorter than the episodes, only the episodes' last steps).
    ``td_error`` holds the ``[B]`` sequence priorities (``eta * max + (1 - eta) * mean`` of ``|Q_tot - y|``)
    under the first group."""

    def losses(self, b: TeamSequenceBatch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The team loss, the ``[B]`` sequence priorities and metrics (0-dim tensors; no step)."""
        cfg = self.cfg
        first = next(iter(b.groups.values()))
        taken, nxt = [], []
        for name, g in b.groups.items():
            reset = reset_mask(g.ended, g.valid)
            q_all = self.q[name].unroll(g.obs, g.hidden, g.alive, reset, g.action_mask, cfg.burn_in, g.burn_in > 0)
            taken.append(q_all[:-1].gather(-1, g.action.long().unsqueeze(-1)).squeeze(-1))  # [L, B, A_g]
            with torch.no_grad():
                q_target = self.target[name].unroll(g.obs, g.hidden, g.alive, reset, g.action_mask)
                best = masked_argmax(q_all.detach() if cfg.double_q else q_target, g.action_mask)
                nxt.append(q_target.gather(-1, best.unsqueeze(-1)).squeeze(-1)[1:])  # value of position t + 1
        n_steps, batch = first.valid.shape

        def rows(parts: list[Tensor]) -> Tensor:
            """Groups' ``[L, B, A_g]`` -> ``[L * B, A]``."""
            return torch.cat(parts, -1).reshape(n_steps * batch, -1)

        groups = list(b.groups.values())
        alive, terminated = rows([g.alive[:-1] for g in groups]), rows([g.terminated for g in groups])
        state = b.state
        if state is None and isinstance(self.mixer, QMixer):
            obs = [g.obs.reshape(-1, *g.obs.shape[2:]) for g in groups]  # [P * B, A_g, ...]
            state = obs_state(obs).view(n_steps + 1, batch, -1)
        flat = None if state is None else (state[:-1].reshape(n_steps * batch, -1),
                                           state[1:].reshape(n_steps * batch, -1))
        q_tot = self.mixer(rows(taken), None if flat is None else flat[0], alive)
        acting = first.valid.reshape(-1) & alive.any(-1)  # [L * B]
        with torch.no_grad():
            next_alive = bootstrap_alive(rows([g.alive[1:] for g in groups]), terminated)
            next_q_tot = self.target_mixer(rows(nxt), None if flat is None else flat[1], next_alive)
            if self.return_stats is not None:
                next_q_tot = return_units(next_q_tot, self.return_stats)
            reward = team_reward(rows([g.reward for g in groups]), alive)
            target_reward = standardized_rewards(reward, acting) if cfg.standardize_rewards else reward
            ended = team_ended(rows([g.ended for g in groups]), alive)
            y = team_sequence_targets(target_reward, team_terminated(terminated, alive), ended, first.valid,
                                      next_q_tot, cfg.gamma, cfg.n_step)
        mask = loss_mask(first.valid, alive.view(n_steps, batch, -1).any(-1, keepdim=True), first.burn_in)[..., 0]
        trained = mask.reshape(-1)
        if self.return_stats is not None:  # of the targets (config: return_stats=returns is for feed-forward agents)
            y = standardized_targets(y, trained, self.return_stats)
        weights = first.weights.expand(n_steps, batch).reshape(-1)
        loss = weighted_row_mean(td_loss(q_tot, y, cfg.td_loss), trained, weights)
        metrics = {"q_loss": loss.detach()}  # the TD term alone
        if cfg.return_reg > 0:
            g_mc, complete = sequence_returns(reward.view(n_steps, batch), ended.view(n_steps, batch), first.valid,
                                              cfg.gamma)
            g_mc = g_mc.reshape(-1)
            baseline = g_mc if self.return_stats is None else standardized_baseline(g_mc, self.return_stats)
            penalty, gap = return_penalty(q_tot, baseline, trained & complete.reshape(-1), weights)
            loss = loss + cfg.return_reg * penalty
            metrics.update(return_penalty=penalty.detach(), q_minus_return=gap)
        td = (q_tot.detach() - y).abs().view(n_steps, batch, 1)
        priority = sequence_priority(td, mask.unsqueeze(-1), cfg.per_eta)
        ones = torch.ones_like(y)
        q_tot_returns = q_tot.detach() if self.return_stats is None else return_units(q_tot.detach(), self.return_stats)
        metrics.update(q_mean=weighted_row_mean(q_tot_returns, trained, ones),
                       team_reward=weighted_row_mean(reward, trained, ones))
        return loss, priority, metrics
