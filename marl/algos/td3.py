"""Twin Delayed DDPG (Fujimoto et al. 2018) for Box action groups.

* Deterministic actor ``mu(s) = tanh(f(s))`` in ``[-1, 1]``, scaled to the env's bounds on
  the way out; while collecting, Gaussian noise of std ``exploration_noise`` is added
  and the result clipped to ``[-1, 1]``.
* Twin critics ``Q_i(concat(obs, action))`` (:class:`marl.algos.sac.TwinQ`, built by
  :func:`marl.algos.sac.twin_critics`).
* Target policy smoothing: ``a' = clip(mu'(s') + clip(eps, -c, c), -1, 1)``,
  ``eps ~ N(0, policy_noise^2)``; ``y = r_n + gamma^n (1 - term) min_i Q'_i(s', a')``.
  The noise smooths the value estimate around the target action, so the actor cannot
  exploit a narrow peak of the critic.
* Delayed updates: the actor (loss ``-Q_1(s, mu(s))``) every ``policy_delay`` gradient
  steps; actor and critic targets move by ``tau`` every ``target_update_interval``
  gradient steps (default 2, with the actor as in the paper).

Noise scales are in the ``[-1, 1]`` action units, i.e. fractions of the half-range of
the env's action box. One optimizer per loss over all groups, as in SAC.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from marl.algos.learner_parts import CheckpointParts, GradSync, LearnerOut, adam, frozen, gradient_step, learner_out
from marl.algos.sac import action_dim, twin_critics, twin_q_loss
from marl.algos.targets import OffPolicyBatch, critic_terms, make_target, masked_mean, soft_update, td_target
from marl.config import ConfigError, ModelConfig, TD3Config
from marl.multi_agent.groups import group_net
from marl.nets import scale_action
from marl.types import EnvSpec, GroupSpec


class GroupTD3Actor(nn.Module):
    """One group's deterministic policy ``obs [..., A, D] -> tanh(.) [..., A, d]``."""

    def __init__(self, group: GroupSpec, model: ModelConfig) -> None:
        super().__init__()
        if group.discrete:
            raise ConfigError(
                f"algo.name=td3 needs Box actions; group {group.name!r} has {group.action_space}. "
                "Use algo.name=dqn or sac"
            )
        self.net = group_net(group, model, tuple(group.obs_space.shape), action_dim(group), out_gain=0.01)
        self.register_buffer("low", torch.as_tensor(group.action_space.low, dtype=torch.float32).reshape(-1))
        self.register_buffer("high", torch.as_tensor(group.action_space.high, dtype=torch.float32).reshape(-1))

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.net(obs))


def gaussian_noise(like: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """``N(0, std^2)`` noise shaped like ``like``, drawn from ``generator``."""
    return std * torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def smoothed_target_action(action: Tensor, noise: Tensor, noise_clip: float) -> Tensor:
    """TD3 target policy smoothing: ``clip(action + clip(noise, -noise_clip, noise_clip), -1, 1)``."""
    return (action + noise.clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)


class TD3PolicyNet(nn.ModuleDict):
    """Every group's :class:`GroupTD3Actor`, keyed by group name.

    Args:
        spec: the env (every group must have Box actions).
        model: network sizes and sharing.
        exploration_noise: std of the Gaussian noise of stochastic (collecting) actions.
    """

    def __init__(self, spec: EnvSpec, model: ModelConfig, exploration_noise: float) -> None:
        super().__init__({g.name: GroupTD3Actor(g, model) for g in spec.groups})
        self.exploration_noise = float(exploration_noise)

    def act(self, name: str, obs: Tensor, mask: Tensor | None, deterministic: bool,
            generator: torch.Generator) -> Tensor:
        """``[E, A, d]`` in ``[-1, 1]``: ``mu(s)``, plus clipped Gaussian noise unless ``deterministic``."""
        del mask
        action = self[name](obs)
        if deterministic or self.exploration_noise == 0:
            return action
        return (action + gaussian_noise(action, self.exploration_noise, generator)).clamp(-1.0, 1.0)

    def env_action(self, name: str, action: Tensor) -> Tensor:
        actor = self[name]
        return scale_action(action, actor.low, actor.high)


class TD3Learner:
    """Updates a :class:`TD3PolicyNet` and its twin critics from replay samples.

    Args:
        actor: the acting networks (trained here).
        spec: the env.
        model: network sizes and sharing of the critics.
        cfg: TD3 hyperparameters.
        seed: seed of the learner's torch generator (target smoothing noise).
    """

    def __init__(self, actor: TD3PolicyNet, spec: EnvSpec, model: ModelConfig, cfg: TD3Config, seed: int) -> None:
        self.actor = actor
        self.cfg = cfg
        device = next(actor.parameters()).device
        self.actor_target = make_target(actor)
        self.critics = twin_critics(spec, model, device)
        self.critic_target = make_target(self.critics)
        self.critic_optimizer = adam(self.critics.parameters(), cfg.lr, cfg.adam_eps)
        self.actor_optimizer = adam(actor.parameters(), cfg.lr, cfg.adam_eps)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.grad_steps = 0
        self.grad_sync: GradSync | None = None  # data-parallel runs: the all-reduce of every step's gradients

    def critic_loss(
        self, batches: Mapping[str, OffPolicyBatch]
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Summed twin-Q loss over groups, TD errors ``[B, A]`` of ``(Q_1 + Q_2) / 2``, metrics
        (0-dim tensors)."""
        cfg = self.cfg
        losses, td_error, metrics = [], {}, {}
        for name, b in batches.items():
            with torch.no_grad():
                target_action = self.actor_target[name](b.next_obs_n)
                noise = gaussian_noise(target_action, cfg.policy_noise, self.generator)
                next_action = smoothed_target_action(target_action, noise, cfg.noise_clip)
                tq1, tq2 = self.critic_target[name](b.next_obs_n, next_action)
                y = td_target(b.reward_n, b.discount_n, b.terminated_n, torch.minimum(tq1, tq2))
            q1, q2 = self.critics[name](b.obs, b.action)
            losses.append(twin_q_loss(q1, q2, y, b.alive, b.weights))
            td_error[name], group_metrics = critic_terms(name, losses[-1], 0.5 * (q1 + q2), y, b.alive)
            metrics.update(group_metrics)
        return torch.stack(losses).sum(), td_error, metrics

    def actor_loss(self, batches: Mapping[str, OffPolicyBatch]) -> tuple[Tensor, dict[str, Tensor]]:
        """Summed ``-Q_1(s, mu(s))`` over groups and metrics (call with the critics' ``requires_grad`` off)."""
        terms, metrics = [], {}
        for name, b in batches.items():
            q1, _ = self.critics[name](b.obs, self.actor[name](b.obs))
            terms.append(masked_mean(-q1, b.alive, b.weights))
            metrics[f"actor_loss/{name}"] = terms[-1].detach()
        return torch.stack(terms).sum(), metrics

    def update(self, batches: Mapping[str, OffPolicyBatch]) -> LearnerOut:
        """One critic step; an actor step every ``policy_delay`` steps; targets every ``target_update_interval``."""
        cfg = self.cfg
        q_loss, td_error, metrics = self.critic_loss(batches)
        metrics["grad_norm"] = gradient_step(self.critic_optimizer, q_loss, list(self.critics.parameters()),
                                             cfg.max_grad_norm, self.grad_sync)
        self.grad_steps += 1
        if self.grad_steps % cfg.policy_delay == 0:
            with frozen(self.critics):
                loss, actor_metrics = self.actor_loss(batches)
            metrics["actor_grad_norm"] = gradient_step(self.actor_optimizer, loss, list(self.actor.parameters()),
                                                       cfg.max_grad_norm, self.grad_sync)
            metrics.update(actor_metrics)
        if self.grad_steps % cfg.target_update_interval == 0:
            soft_update(self.critic_target, self.critics, cfg.tau)
            soft_update(self.actor_target, self.actor, cfg.tau)
        return learner_out(metrics, td_error, list(batches))

    def trainable(self) -> list[nn.Parameter]:
        return [*self.actor.parameters(), *self.critics.parameters()]

    def checkpoint_parts(self) -> CheckpointParts:
        """The checkpointed parts by entry name (the actor lives in the policy entry)."""
        return CheckpointParts({
            "critics": self.critics, "critic_target": self.critic_target, "actor_target": self.actor_target,
            "critic_optimizer": self.critic_optimizer, "actor_optimizer": self.actor_optimizer,
            "generator": self.generator,
        })

    def state_dict(self) -> dict:
        """Critics, both targets, optimizers, generator and counter."""
        return {**self.checkpoint_parts().state_dict(), "grad_steps": self.grad_steps}

    def load_state_dict(self, state: dict) -> None:
        self.checkpoint_parts().load_state_dict(state)
        self.grad_steps = int(state["grad_steps"])
