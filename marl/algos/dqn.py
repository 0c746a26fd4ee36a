"""Deep Q-learning: double-DQN targets, Huber loss, masked greedy actions, dueling head.

Pure functions hold the maths (:func:`masked_argmax`, :func:`double_q_next_value`,
:func:`huber`); :class:`QPolicyNet` holds every group's Q network and acts greedily
(the epsilon-greedy part is generic and lives in the acting wrapper,
:class:`marl.off_policy.OffPolicyActor`); :class:`DQNLearner` owns the target network
and the one optimizer over every group's Q network.

Multi-agent: independent Q-learning per agent through the groups' sharing modes
(one network with one-hot agent ids, one per agent, or a map); each group's loss is
a mean over its alive agents, the groups' losses are summed, one backward, one step.

Target (van Hasselt et al. 2016), with ``n'``-step windows from the replay::

    a* = argmax_a Q_online(s_{t+n'}, a)     (allowed actions only)
    y  = r_n + gamma^n' (1 - terminated_n) Q_target(s_{t+n'}, a*)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marl.algos.learner_parts import CheckpointParts, GradSync, LearnerOut, adam, gradient_step, learner_out
from marl.algos.targets import OffPolicyBatch, critic_terms, make_target, masked_mean, soft_update, td_target
from marl.config import ConfigError, DQNConfig, ModelConfig
from marl.multi_agent.groups import group_net
from marl.nets import dueling_q
from marl.types import EnvSpec, GroupSpec


def masked_argmax(q: Tensor, mask: Tensor | None) -> Tensor:
    """``[...]`` argmax of ``q [..., n]`` over allowed actions (``mask [..., n]``, ``True`` = allowed).

    A row with no allowed action (an agent that is not alive) uses all actions.
    """
    if mask is None:
        return q.argmax(dim=-1)
    mask = mask.bool()
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    return torch.where(mask, q, torch.full_like(q, -torch.inf)).argmax(dim=-1)


def double_q_next_value(
    next_q_target: Tensor, next_q_online: Tensor | None, next_mask: Tensor | None
) -> Tensor:
    """Value of the next state ``[B, A]`` for the DQN target.

    Args:
        next_q_target: ``[B, A, n]`` target network's Q of ``s_{t+n'}``.
        next_q_online: ``[B, A, n]`` online network's Q of ``s_{t+n'}`` (double DQN: it
            picks the action the target network values); ``None`` = plain DQN
            (``max_a Q_target``).
        next_mask: ``[B, A, n]`` allowed actions at ``s_{t+n'}`` or ``None``.
    """
    chooser = next_q_target if next_q_online is None else next_q_online
    best = masked_argmax(chooser, next_mask)
    return next_q_target.gather(-1, best.unsqueeze(-1)).squeeze(-1)


def huber(x: Tensor, y: Tensor) -> Tensor:
    """Elementwise Huber loss with threshold 1 (``smooth_l1``): quadratic for ``|x - y| < 1``, linear beyond."""
    return F.smooth_l1_loss(x, y, reduction="none", beta=1.0)


class GroupQ(nn.Module):
    """Q network of one group: ``obs [..., A, *obs_shape]`` -> ``Q [..., A, n]``.

    Args:
        group: a group with a ``Discrete(n)`` action space.
        model: network sizes and sharing.
        dueling: output ``1 + n`` streams combined by :func:`marl.nets.dueling_q`.
    """

    def __init__(self, group: GroupSpec, model: ModelConfig, dueling: bool) -> None:
        super().__init__()
        if not group.discrete:
            raise ConfigError(
                f"algo.name=dqn needs Discrete actions; group {group.name!r} has {group.action_space}. "
                "Use algo.name=sac or td3"
            )
        self.n_actions = int(group.action_space.n)
        self.dueling = dueling
        self.net = group_net(group, model, tuple(group.obs_space.shape), self.n_actions + int(dueling), out_gain=1.0)

    def forward(self, obs: Tensor, mask: Tensor | None = None) -> Tensor:
        out = self.net(obs)
        return dueling_q(out, mask) if self.dueling else out


class QPolicyNet(nn.ModuleDict):
    """Every group's :class:`GroupQ`, keyed by group name; acts greedily.

    Args:
        spec: the env (every group must have Discrete actions).
        model: network sizes and sharing.
        dueling: dueling heads.
    """

    def __init__(self, spec: EnvSpec, model: ModelConfig, dueling: bool) -> None:
        from marl.algos.r2d2 import RecurrentGroupQ  # builds on this module

        recurrent = model.recurrent != "none"
        make = RecurrentGroupQ if recurrent else GroupQ
        super().__init__({g.name: make(g, model, dueling) for g in spec.groups})
        self.recurrent = recurrent
        """Each group's network is a :class:`marl.algos.r2d2.RecurrentGroupQ` (act with :meth:`act_recurrent`)."""

    def act(self, name: str, obs: Tensor, mask: Tensor | None, deterministic: bool,
            generator: torch.Generator) -> Tensor:
        """``[E, A]`` greedy allowed actions of group ``name`` (exploration is added by the caller)."""
        del deterministic, generator  # greedy either way
        return masked_argmax(self[name](obs, mask), mask)

    def act_recurrent(self, name: str, obs: Tensor, mask: Tensor | None, hidden: Tensor, alive: Tensor
                      ) -> tuple[Tensor, Tensor]:
        """Recurrent networks: ``([E, A] greedy allowed actions, [E, A, S] next state)`` of group ``name`` from
        its state ``hidden [E, A, S]`` (agents not ``alive [E, A]`` keep theirs)."""
        q, hidden = self[name].step(obs, hidden, alive, mask)
        return masked_argmax(q, mask), hidden

    def env_action(self, name: str, action: Tensor) -> Tensor:
        """Discrete actions go to the env unchanged."""
        del name
        return action


def linear_epsilon(epsilon_start: float, epsilon_final: float, exploration_fraction: float, progress: float) -> float:
    """Epsilon at ``progress`` (fraction of training done): linear from start to final over
    the first ``exploration_fraction`` of training, then constant."""
    frac = min(max(progress / exploration_fraction, 0.0), 1.0)
    return epsilon_start + frac * (epsilon_final - epsilon_start)


class DQNLearner:
    """Updates a :class:`QPolicyNet` from replay samples.

    Args:
        q: the online Q networks (also the acting networks).
        cfg: lr, adam_eps, tau, target_update_interval, max_grad_norm, double_q are
            read; gamma enters through the samples' ``discount_n``.

    Attributes:
        target: the target Q networks (no gradients).
        optimizer: Adam over every online parameter of every group, each once.
        grad_steps: gradient steps taken.
    """

    def __init__(self, q: QPolicyNet, cfg: DQNConfig) -> None:
        self.q = q
        self.cfg = cfg
        self.target = make_target(q)
        self.optimizer = adam(q.parameters(), cfg.lr, cfg.adam_eps)
        self.grad_steps = 0
        self.grad_sync: GradSync | None = None  # data-parallel runs: the all-reduce of every step's gradients

    def losses(self, batches: Mapping[str, OffPolicyBatch]) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Summed Huber loss over groups, TD errors ``[B, A]`` per group, and metrics (0-dim tensors; no step)."""
        group_losses: list[Tensor] = []
        td_error: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {}
        for name, b in batches.items():
            qnet = self.q[name]
            q_taken = qnet(b.obs, b.action_mask).gather(-1, b.action.long().unsqueeze(-1)).squeeze(-1)
            with torch.no_grad():
                next_target = self.target[name](b.next_obs_n, b.next_action_mask_n)
                next_online = qnet(b.next_obs_n, b.next_action_mask_n) if self.cfg.double_q else None
                next_value = double_q_next_value(next_target, next_online, b.next_action_mask_n)
                y = td_target(b.reward_n, b.discount_n, b.terminated_n, next_value)
            loss = masked_mean(huber(q_taken, y), b.alive, b.weights)
            group_losses.append(loss)
            td_error[name], group_metrics = critic_terms(name, loss, q_taken, y, b.alive)
            metrics.update(group_metrics)
        return torch.stack(group_losses).sum(), td_error, metrics

    def update(self, batches: Mapping[str, OffPolicyBatch]) -> LearnerOut:
        """One gradient step on every group's rows; a target update every ``target_update_interval`` steps."""
        total, td_error, metrics = self.losses(batches)
        cfg = self.cfg
        metrics["grad_norm"] = gradient_step(self.optimizer, total, list(self.q.parameters()), cfg.max_grad_norm,
                                             self.grad_sync)
        self.grad_steps += 1
        if self.grad_steps % cfg.target_update_interval == 0:
            soft_update(self.target, self.q, cfg.tau)
        return learner_out(metrics, td_error, list(batches))

    def trainable(self) -> list[nn.Parameter]:
        """Every trained parameter (for counting)."""
        return list(self.q.parameters())

    def checkpoint_parts(self) -> CheckpointParts:
        """The checkpointed parts by entry name (the online networks live in the policy entry)."""
        return CheckpointParts({"target": self.target, "optimizer": self.optimizer})

    def state_dict(self) -> dict:
        """Target networks, optimizer and counter."""
        return {**self.checkpoint_parts().state_dict(), "grad_steps": self.grad_steps}

    def load_state_dict(self, state: dict) -> None:
        self.checkpoint_parts().load_state_dict(state)
        self.grad_steps = int(state["grad_steps"])
