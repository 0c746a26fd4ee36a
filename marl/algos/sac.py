"""Soft Actor-Critic for Box groups (tanh-squashed Gaussian) and Discrete groups (categorical).

Per group, by its action space (groups of one env may mix both):

* **Box** (Haarnoja et al. 2018): ``a = tanh(u)``, ``u ~ N(mean, std)`` with
  ``log pi(a) = log N(u) - sum log(1 - tanh(u)^2)`` (:class:`marl.nets.TanhGaussian`,
  stable form); actions live in ``[-1, 1]`` in the replay and the critics and are
  scaled to the env's bounds on the way out. Twin critics ``Q_i(s, a)`` on
  ``concat(obs, action)``; target ``y = r_n + gamma^n (1 - term) [min_i Q'_i(s', a') -
  alpha log pi(a'|s')]`` with ``a' ~ pi(.|s')``; actor loss ``E[alpha log pi(a|s) -
  min_i Q_i(s, a)]`` through the reparameterized sample.
* **Discrete** (Christodoulou 2019): critics output ``Q_i(s, .) [n]``; expectations over
  actions are exact: ``V(s') = sum_a pi(a|s') [min_i Q'_i(s', a) - alpha log pi(a|s')]``,
  actor loss ``sum_a pi(a|s) [alpha log pi(a|s) - min_i Q_i(s, a)]``. Masked actions have
  probability 0 and drop out of every sum.

Entropy coefficient: one ``log_alpha`` per group (groups may have different target
entropies), trained by ``-log_alpha * (log pi + target_entropy)`` with ``log pi``
detached, so that loss touches only ``log_alpha``. Default targets: ``-d`` for Box
groups, ``target_entropy_scale * log(n)`` for Discrete ones.

One optimizer per loss over all groups: the critics' losses of every group are summed
into one backward and one step, likewise the actors', likewise the ``log_alpha``'s. The
actor loss is computed with the critics' ``requires_grad`` off, so it leaves no
gradients on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from marl.algos.learner_parts import (
    CheckpointParts,
    GradSync,
    LearnerOut,
    adam,
    frozen,
    gradient_step,
    learner_out,
    sync_grads,
)
from marl.algos.targets import OffPolicyBatch, critic_terms, make_target, masked_mean, soft_update, td_target
from marl.config import ModelConfig, SACConfig
from marl.multi_agent.groups import group_net
from marl.nets import MaskedCategorical, TanhGaussian, scale_action
from marl.types import EnvSpec, GroupSpec

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


def squash_log_std(raw: Tensor) -> Tensor:
    """Map an unbounded output to ``[LOG_STD_MIN, LOG_STD_MAX]`` smoothly (tanh), keeping gradients at the
    bounds' interior."""
    return LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw) + 1.0)


def vector_obs_dim(group: GroupSpec) -> int:
    """Length of one agent's flat observation; image observations are refused (critics take ``concat(obs, action)``)."""
    shape = tuple(group.obs_space.shape)
    if len(shape) != 1:
        raise ValueError(
            f"group {group.name!r}: Q(s, a) critics need vector observations, got shape {shape}; "
            "flatten the observations or use a discrete-action algorithm (dqn, or sac on a Discrete env)"
        )
    return int(shape[0])


def action_dim(group: GroupSpec) -> int:
    return int(np.prod(group.action_space.shape))


class GroupSACActor(nn.Module):
    """One group's stochastic policy: tanh-Gaussian (Box) or masked categorical (Discrete).

    Args:
        group: the group.
        model: network sizes and sharing.
    """

    def __init__(self, group: GroupSpec, model: ModelConfig) -> None:
        super().__init__()
        self.discrete = group.discrete
        obs_shape = tuple(group.obs_space.shape)
        if self.discrete:
            self.net = group_net(group, model, obs_shape, int(group.action_space.n), out_gain=0.01)
        else:
            self.net = group_net(group, model, obs_shape, 2 * action_dim(group), out_gain=0.01)
            self.register_buffer("low", torch.as_tensor(group.action_space.low, dtype=torch.float32).reshape(-1))
            self.register_buffer("high", torch.as_tensor(group.action_space.high, dtype=torch.float32).reshape(-1))

    def dist(self, obs: Tensor, mask: Tensor | None = None) -> TanhGaussian | MaskedCategorical:
        """The policy at ``obs [..., A, *obs_shape]`` (``mask [..., A, n]`` for Discrete groups)."""
        out = self.net(obs)
        if self.discrete:
            return MaskedCategorical(out, mask)
        mean, raw = out.chunk(2, dim=-1)
        return TanhGaussian(mean, squash_log_std(raw))


class SACPolicyNet(nn.ModuleDict):
    """Every group's :class:`GroupSACActor`, keyed by group name.

    Args:
        spec: the env.
        model: network sizes and sharing.
    """

    def __init__(self, spec: EnvSpec, model: ModelConfig) -> None:
        super().__init__({g.name: GroupSACActor(g, model) for g in spec.groups})

    def act(self, name: str, obs: Tensor, mask: Tensor | None, deterministic: bool,
            generator: torch.Generator) -> Tensor:
        """``[E, A]`` (Discrete) or ``[E, A, d]`` in ``[-1, 1]`` (Box): the mode or a sample."""
        dist = self[name].dist(obs, mask)
        return dist.mode() if deterministic else dist.sample(generator)

    def env_action(self, name: str, action: Tensor) -> Tensor:
        """Box actions scaled from ``[-1, 1]`` to the env's bounds; Discrete unchanged."""
        actor = self[name]
        return action if actor.discrete else scale_action(action, actor.low, actor.high)


class TwinQ(nn.Module):
    """Two independent critics of one group.

    Box groups: ``Q_i(concat(obs, action)) -> [..., A]``; Discrete groups:
    ``Q_i(obs) -> [..., A, n]`` (one value per action).
    """

    def __init__(self, group: GroupSpec, model: ModelConfig) -> None:
        super().__init__()
        self.discrete = group.discrete
        if self.discrete:
            shape, out = tuple(group.obs_space.shape), int(group.action_space.n)
        else:
            shape, out = (vector_obs_dim(group) + action_dim(group),), 1
        self.q1 = group_net(group, model, shape, out, out_gain=1.0)
        self.q2 = group_net(group, model, shape, out, out_gain=1.0)

    def forward(self, obs: Tensor, action: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.discrete:
            return self.q1(obs), self.q2(obs)
        x = torch.cat([obs.to(action.dtype), action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def twin_critics(spec: EnvSpec, model: ModelConfig, device: torch.device) -> nn.ModuleDict:
    """group -> :class:`TwinQ` for every group of ``spec``, on ``device`` (the critics of SAC and TD3)."""
    return nn.ModuleDict({g.name: TwinQ(g, model) for g in spec.groups}).to(device)


def expectation(probs: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
    """``sum_a probs[..., a] * values[..., a]`` over allowed actions only (masked terms are 0, never 0 * inf)."""
    terms = probs * values
    if mask is not None:
        terms = torch.where(mask, terms, torch.zeros_like(terms))
    return terms.sum(dim=-1)


def finite_log_probs(dist: MaskedCategorical) -> Tensor:
    """``[..., n]`` log-probabilities with masked entries set to 0 instead of about ``-3.4e38``.

    Their probability is 0 either way; this keeps ``alpha * log pi`` finite (``alpha > 1``
    would overflow to ``-inf``) and so keeps ``0 * inf = nan`` out of the gradients.
    """
    return dist.log_probs if dist.mask is None else dist.log_probs.masked_fill(~dist.mask, 0.0)


def twin_q_loss(q1: Tensor, q2: Tensor, y: Tensor, alive: Tensor, weights: Tensor) -> Tensor:
    """``0.5 * [(Q_1 - y)^2 + (Q_2 - y)^2]``, masked and weighted mean over ``[B, A]``."""
    return masked_mean(0.5 * ((q1 - y).square() + (q2 - y).square()), alive, weights)


def alpha_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float, alive: Tensor) -> Tensor:
    """``-log_alpha * (log pi + target_entropy)`` with ``log pi [B, A]`` detached (mean over alive agents).

    For Discrete groups pass ``-entropy`` as ``log_prob`` (its exact expectation).
    Its gradient raises alpha when the entropy is below the target.
    """
    return -masked_mean(log_alpha * (log_prob.detach() + target_entropy), alive)


def default_target_entropy(group: GroupSpec, cfg: SACConfig) -> float:
    """``cfg.target_entropy`` if set, else ``-d`` (Box) or ``target_entropy_scale * log(n)`` (Discrete)."""
    if cfg.target_entropy is not None:
        return float(cfg.target_entropy)
    if group.discrete:
        return cfg.target_entropy_scale * math.log(int(group.action_space.n))
    return -float(action_dim(group))


class SACLearner:
    """Updates a :class:`SACPolicyNet` and its twin critics from replay samples.

    Args:
        actor: the acting networks (trained here).
        spec: the env (critics are built per group).
        model: network sizes and sharing of the critics.
        cfg: SAC hyperparameters.
        seed: seed of the learner's torch generator (policy samples in the losses).

    Attributes:
        critics, critic_target: group -> :class:`TwinQ`, and its target copy.
        log_alpha: group -> scalar parameter; ``alpha = exp(log_alpha)``.
        target_entropy: group -> entropy target in nats.
        critic_optimizer, actor_optimizer, alpha_optimizer: one Adam per loss over all
            groups (``alpha_optimizer`` is ``None`` without ``autotune``).
    """

    def __init__(self, actor: SACPolicyNet, spec: EnvSpec, model: ModelConfig, cfg: SACConfig, seed: int) -> None:
        self.actor = actor
        self.cfg = cfg
        device = next(actor.parameters()).device
        self.critics = twin_critics(spec, model, device)
        self.critic_target = make_target(self.critics)
        self.log_alpha = nn.ParameterDict(
            {g.name: nn.Parameter(torch.tensor(math.log(cfg.ent_coef), device=device)) for g in spec.groups}
        )
        self.target_entropy = {g.name: default_target_entropy(g, cfg) for g in spec.groups}
        self.critic_optimizer = adam(self.critics.parameters(), cfg.lr, cfg.adam_eps)
        self.actor_optimizer = adam(actor.parameters(), cfg.lr, cfg.adam_eps)
        self.alpha_optimizer = adam(self.log_alpha.parameters(), cfg.lr, cfg.adam_eps) if cfg.autotune else None
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.grad_steps = 0
        self.grad_sync: GradSync | None = None  # data-parallel runs: the all-reduce of every step's gradients

    def ent_coefs(self) -> dict[str, Tensor]:
        """group -> current entropy coefficient ``alpha = exp(log_alpha)`` (detached scalar)."""
        return {g: p.detach().exp() for g, p in self.log_alpha.items()}

    # ------------------------------------------------------------------ losses
    def critic_loss(
        self, batches: Mapping[str, OffPolicyBatch]
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Summed twin-Q loss over groups, TD errors ``[B, A]`` (of ``(Q_1 + Q_2) / 2``), metrics
        (0-dim tensors)."""
        ent_coefs = self.ent_coefs()
        losses, td_error, metrics = [], {}, {}
        for name, b in batches.items():
            critic, actor = self.critics[name], self.actor[name]
            with torch.no_grad():
                next_dist = actor.dist(b.next_obs_n, b.next_action_mask_n)
                if actor.discrete:
                    tq1, tq2 = self.critic_target[name](b.next_obs_n)
                    soft_q = torch.minimum(tq1, tq2) - ent_coefs[name] * finite_log_probs(next_dist)
                    next_value = expectation(next_dist.probs, soft_q, next_dist.mask)
                else:
                    next_action, next_log_prob = next_dist.rsample_with_log_prob(self.generator)
                    tq1, tq2 = self.critic_target[name](b.next_obs_n, next_action)
                    next_value = torch.minimum(tq1, tq2) - ent_coefs[name] * next_log_prob
                y = td_target(b.reward_n, b.discount_n, b.terminated_n, next_value)
            q1, q2 = critic(b.obs, None if actor.discrete else b.action)
            if actor.discrete:
                index = b.action.long().unsqueeze(-1)
                q1, q2 = q1.gather(-1, index).squeeze(-1), q2.gather(-1, index).squeeze(-1)
            losses.append(twin_q_loss(q1, q2, y, b.alive, b.weights))
            td_error[name], group_metrics = critic_terms(name, losses[-1], 0.5 * (q1 + q2), y, b.alive)
            metrics.update(group_metrics)
        return torch.stack(losses).sum(), td_error, metrics

    def actor_losses(self, batches: Mapping[str, OffPolicyBatch]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Summed actor loss and summed ``log_alpha`` loss over groups, and metrics (0-dim tensors).

        Call with the critics' ``requires_grad`` off (as :meth:`update` does) so the
        actor loss leaves the critics without gradients.
        """
        ent_coefs = self.ent_coefs()
        actor_terms, alpha_terms, metrics = [], [], {}
        for name, b in batches.items():
            actor = self.actor[name]
            dist = actor.dist(b.obs, b.action_mask)
            if actor.discrete:
                q1, q2 = self.critics[name](b.obs)
                per_agent = expectation(
                    dist.probs, ent_coefs[name] * finite_log_probs(dist) - torch.minimum(q1, q2), dist.mask
                )
                log_prob = -dist.entropy()  # E_a[log pi(a|s)], exact
            else:
                action, log_prob = dist.rsample_with_log_prob(self.generator)
                q1, q2 = self.critics[name](b.obs, action)
                per_agent = ent_coefs[name] * log_prob - torch.minimum(q1, q2)
            actor_terms.append(masked_mean(per_agent, b.alive, b.weights))
            alpha_terms.append(alpha_loss(self.log_alpha[name], log_prob, self.target_entropy[name], b.alive))
            metrics[f"actor_loss/{name}"] = actor_terms[-1].detach()
            metrics[f"entropy/{name}"] = -masked_mean(log_prob.detach(), b.alive)
            metrics[f"ent_coef/{name}"] = ent_coefs[name]
        return torch.stack(actor_terms).sum(), torch.stack(alpha_terms).sum(), metrics

    # ------------------------------------------------------------------ update
    def update(self, batches: Mapping[str, OffPolicyBatch]) -> LearnerOut:
        """One critic step, one actor step, one ``log_alpha`` step (autotune), then targets
        every ``target_update_interval`` gradient steps."""
        cfg = self.cfg
        q_loss, td_error, metrics = self.critic_loss(batches)
        metrics["grad_norm"] = gradient_step(self.critic_optimizer, q_loss, list(self.critics.parameters()),
                                             cfg.max_grad_norm, self.grad_sync)
        with frozen(self.critics):
            actor_loss, ent_loss, actor_metrics = self.actor_losses(batches)
        metrics["actor_grad_norm"] = gradient_step(self.actor_optimizer, actor_loss, list(self.actor.parameters()),
                                                   cfg.max_grad_norm, self.grad_sync)
        if self.alpha_optimizer is not None:  # log_alpha has no clipping and no norm metric
            self.alpha_optimizer.zero_grad(set_to_none=True)
            ent_loss.backward()
            sync_grads(self.log_alpha.parameters(), self.grad_sync)
            self.alpha_optimizer.step()
            metrics["ent_coef_loss"] = ent_loss.detach()
        metrics.update(actor_metrics)
        self.grad_steps += 1
        if self.grad_steps % cfg.target_update_interval == 0:
            soft_update(self.critic_target, self.critics, cfg.tau)
        return learner_out(metrics, td_error, list(batches))

    def trainable(self) -> list[nn.Parameter]:
        return [*self.actor.parameters(), *self.critics.parameters(), *self.log_alpha.parameters()]

    def checkpoint_parts(self) -> CheckpointParts:
        """The checkpointed parts by entry name (the actor lives in the policy entry);
        ``alpha_optimizer`` is ``None`` without ``autotune``."""
        return CheckpointParts({
            "critics": self.critics, "critic_target": self.critic_target, "log_alpha": self.log_alpha,
            "critic_optimizer": self.critic_optimizer, "actor_optimizer": self.actor_optimizer,
            "alpha_optimizer": self.alpha_optimizer, "generator": self.generator,
        })

    def state_dict(self) -> dict:
        """Critics, targets, log_alpha, optimizers, generator and counter."""
        return {**self.checkpoint_parts().state_dict(), "grad_steps": self.grad_steps}

    def load_state_dict(self, state: dict) -> None:
        self.checkpoint_parts().load_state_dict(state)
        self.grad_steps = int(state["grad_steps"])
