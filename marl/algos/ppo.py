"""Proximal Policy Optimization: the loss as a pure function and a learner that updates.

The learner owns the optimizer(s), never an env. One update is
``update_epochs`` passes over the rollout in ``num_minibatches`` shuffled minibatches
of env-step rows (all agents of a row stay together, so per-agent networks see
``[B, A, ...]``). Every group's loss is a masked mean over its alive agents; the
groups' losses are summed and back-propagated once; the common optimizer (default)
steps over every parameter of every group, each tensor once.

Recurrent models update on *sequence batches* (:meth:`marl.data.rollout.GroupRollout.sequences`):
a minibatch is a set of whole chunks of ``bptt_len`` steps, each run from its stored initial
hidden state with the collection's carry rules (alive agents update their state, ended ones
restart from zero inside the chunk), and the loss is back-propagated through the chunk (BPTT).
The loss itself is unchanged: the same masked means, over ``[L, B, A]`` instead of ``[B, A]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from marl.algos.learner_parts import team_means
from marl.algos.optim import FlatAdam
from marl.algos.targets import masked_mean
from marl.config import PPOConfig
from marl.data.rollout import GroupBatch
from marl.health import check_finite_update
from marl.normalization import normalize_advantage
from marl.returns import explained_variance

if TYPE_CHECKING:
    from marl.on_policy.policy import ActorCriticPolicy


class PPOLossOut(NamedTuple):
    """Loss terms of one group on one minibatch (scalars; ``log_ratio`` detached, shaped like the inputs;
    ``approx_kl`` / ``clip_fraction`` are ``None`` when not asked for, see :func:`ppo_stats`)."""

    loss: Tensor
    policy_loss: Tensor
    value_loss: Tensor
    entropy: Tensor
    approx_kl: Tensor | None
    clip_fraction: Tensor | None
    log_ratio: Tensor


def ppo_loss(
    new_log_prob: Tensor,
    old_log_prob: Tensor,
    advantage: Tensor,
    new_value: Tensor,
    old_value: Tensor,
    ret: Tensor,
    entropy: Tensor,
    *,
    mask: Tensor | None,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    clip_value_loss: bool,
    with_stats: bool = True,
) -> PPOLossOut:
    """Clipped-surrogate PPO loss, masked to the alive entries.

    All tensors share one shape (e.g. ``[B, A]``); ``advantage`` is already
    normalized if that is wanted; ``mask=None`` means every entry counts (no dead
    or waiting agent in the batch: fewer operations, same value). Value loss is ``0.5 (V - R)^2``, or with
    ``clip_value_loss`` the max of the unclipped and clipped (``V_old ± clip_coef``) errors.
    ``with_stats=False`` skips ``approx_kl`` and ``clip_fraction`` (pure diagnostics: the
    learner computes them for all minibatches at once with :func:`ppo_stats`).
    """
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    pg1 = -advantage * ratio
    pg2 = -advantage * ratio.clamp(1 - clip_coef, 1 + clip_coef)
    policy_loss = masked_mean(torch.maximum(pg1, pg2), mask)
    if clip_value_loss:
        v_clipped = old_value + (new_value - old_value).clamp(-clip_coef, clip_coef)
        v_err = torch.maximum((new_value - ret) ** 2, (v_clipped - ret) ** 2)
    else:
        v_err = (new_value - ret) ** 2
    value_loss = 0.5 * masked_mean(v_err, mask)
    ent = masked_mean(entropy, mask)
    loss = policy_loss + vf_coef * value_loss
    if ent_coef:
        loss = loss - ent_coef * ent
    log_ratio = log_ratio.detach()
    approx_kl = clip_fraction = None
    if with_stats:
        approx_kl, clip_fraction = ppo_stats(log_ratio, mask, clip_coef)
    return PPOLossOut(loss, policy_loss, value_loss, ent, approx_kl, clip_fraction, log_ratio)


@torch.no_grad()
def ppo_stats(log_ratio: Tensor, mask: Tensor | None, clip_coef: float, dims: int = 0) -> tuple[Tensor, Tensor]:
    """``approx_kl`` and ``clip_fraction`` from ``log_ratio = log pi_new - log pi_old``, masked.

    ``approx_kl`` is the low-variance estimator ``E[(r - 1) - log r]``
    (http://joschu.net/blog/kl-approx.html); ``clip_fraction`` the share of
    entries with ``|r - 1| > clip_coef``. ``dims`` leading axes are kept (e.g.
    ``dims=1`` on ``[S, B, A]`` stacked minibatches gives one value per minibatch).
    """
    ratio = log_ratio.exp()
    kl = (ratio - 1) - log_ratio
    clipped = ((ratio - 1).abs() > clip_coef).to(log_ratio.dtype)
    if dims == 0:
        return masked_mean(kl, mask), masked_mean(clipped, mask)
    if mask is None:
        return kl.flatten(dims).mean(-1), clipped.flatten(dims).mean(-1)
    m = mask.to(log_ratio.dtype).flatten(dims)
    n = m.sum(-1).clamp_min(1.0)
    return (kl.flatten(dims) * m).sum(-1) / n, (clipped.flatten(dims) * m).sum(-1) / n


def linear_schedule(start: float, progress: float) -> float:
    """``start * (1 - progress)`` for ``progress`` in [0, 1] (linear annealing to 0)."""
    return start * max(0.0, 1.0 - progress)


class PPOLearner:
    """Updates a :class:`Policy`'s networks from rollouts.

    Args:
        policy: the policy whose ``net`` is trained.
        cfg: PPO hyperparameters.
    """

    def __init__(self, policy: ActorCriticPolicy, cfg: PPOConfig) -> None:
        self.policy = policy
        self.cfg = cfg
        net = policy.net
        # Parameters in one flat buffer per optimizer: zeroing, norm, clip and Adam are one op each.
        if cfg.optimizer == "common":
            self.optimizers = {"all": FlatAdam(net.parameters(), cfg.lr, cfg.adam_eps)}
        else:
            self.optimizers = {g: FlatAdam(net[g].parameters(), cfg.lr, cfg.adam_eps) for g in net.keys()}
        self.grad_steps = 0
        self.clip_coef = cfg.clip_coef  # annealed by the trainer when algo.anneal_clip
        # Data-parallel runs (marl.distributed.Ranks.average_grads): averages the flat gradient buffers over
        # ranks with one all-reduce per step, before clipping, with the step's KLs as extras; None = one process.
        self.grad_sync: Callable[[list[Tensor], Tensor | None], Tensor | None] | None = None

    def set_lr(self, lr: float) -> None:
        for opt in self.optimizers.values():
            opt.lr = lr

    @property
    def lr(self) -> float:
        return next(iter(self.optimizers.values())).lr

    def update(self, batches: dict[str, GroupBatch], num_minibatches: int, norm_advantage: bool,
               generator: torch.Generator) -> dict[str, float]:
        """Run ``update_epochs`` x ``num_minibatches`` gradient steps; return mean metrics.

        Args:
            batches: group -> all rollout rows ``[N, A, ...]`` (N = T*E, same N for all groups), or for
                recurrent models a sequence batch ``[L, C, A, ...]`` (``hidden`` set): minibatches of whole chunks.
            num_minibatches: minibatches per epoch.
            norm_advantage: standardize advantages per minibatch and group.
            generator: torch RNG of the minibatch shuffles.
        """
        cfg = self.cfg
        net = self.policy.net
        first = next(iter(batches.values()))
        sequences = first.hidden is not None
        n_rows = first.obs.shape[1] if sequences else first.obs.shape[0]  # chunks, or rows
        keys = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
        # Per update, not per step: groups with every agent alive skip the masks (same values, fewer
        # ops); with one minibatch the per-minibatch advantage normalization is the same every epoch.
        all_alive = {name: bool(full.alive.all()) for name, full in batches.items()}
        if num_minibatches == 1 and norm_advantage:
            batches = {name: full._replace(advantage=normalize_advantage(full.advantage, full.alive))
                       for name, full in batches.items()}
            norm_advantage = False
        # Per-minibatch statistics stay tensors (no host sync per step); converted once at the end.
        # Without target_kl, approx_kl and clip_fraction are diagnostics only: computed after the
        # loop for all minibatches at once from the saved log-ratios.
        per_step_kl = cfg.target_kl > 0
        stats: dict[str, list[tuple[Tensor, ...]]] = {name: [] for name in batches}
        log_ratios: dict[str, list[Tensor]] = {name: [] for name in batches}
        masks: dict[str, list[Tensor | None]] = {name: [] for name in batches}
        grad_norms: list[Tensor] = []
        epochs_done = 0
        for _epoch in range(cfg.update_epochs):
            perm = None if num_minibatches == 1 else torch.randperm(n_rows, generator=generator).to(first.obs.device)
            # num_minibatches parts (as equal as the rows allow): the same number of steps on every rank even when
            # their rollouts differ in length (distributed.preempt_fraction)
            parts = [None] if perm is None else perm.tensor_split(num_minibatches)
            stop = False
            for part in parts:
                total = None
                kls = []
                for name, full in batches.items():
                    if sequences:
                        mb = full if part is None else full.index_chunks(part)
                    else:
                        mb = full if part is None else full.index(part)
                    mask = None if all_alive[name] else mb.alive
                    if sequences:
                        dist, value = net[name].sequence_dist_and_value(mb.obs, mb.critic_in, mb.action_mask,
                                                                        mb.hidden, mask, mb.reset)
                    else:
                        dist, value = net[name].dist_and_value(mb.obs, mb.critic_in, mb.action_mask)
                    adv = normalize_advantage(mb.advantage, mb.alive) if norm_advantage else mb.advantage
                    with torch.set_grad_enabled(bool(cfg.ent_coef)):  # without a bonus: a diagnostic only
                        entropy = dist.entropy()
                    out = ppo_loss(dist.log_prob(mb.action), mb.log_prob, adv, value, mb.value, mb.ret, entropy,
                                   mask=mask, clip_coef=self.clip_coef, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef,
                                   clip_value_loss=cfg.clip_value_loss, with_stats=per_step_kl)
                    total = out.loss if total is None else total + out.loss
                    if per_step_kl:
                        stats[name].append(tuple(getattr(out, k).detach() for k in keys))
                        kls.append(out.approx_kl)
                    else:
                        stats[name].append((out.policy_loss.detach(), out.value_loss.detach(), out.entropy.detach()))
                        log_ratios[name].append(out.log_ratio)
                        masks[name].append(mask)
                for opt in self.optimizers.values():
                    opt.zero_grad()
                total.backward()
                if self.grad_sync is not None:  # every rank then clips and steps the same averaged gradient
                    kl_mean = self.grad_sync([opt.grad for opt in self.optimizers.values()],
                                             torch.stack(kls) if per_step_kl else None)
                    if kl_mean is not None:
                        kls = list(kl_mean)  # the early stop below must be the same decision on every rank
                grad_norms.append(self._clip(total))
                for opt in self.optimizers.values():
                    opt.step()
                self.grad_steps += 1
                if per_step_kl and max(float(k) for k in kls) > cfg.target_kl:
                    stop = True  # approx KL past target_kl: stop this update early
                    break
            epochs_done += 1
            if stop:
                break
        metrics: dict[str, float] = {}
        if not per_step_kl:
            for name in batches:
                m = None if masks[name][0] is None else torch.stack(masks[name])
                kl, clip = ppo_stats(torch.stack(log_ratios[name]), m, self.clip_coef, dims=1)
                stats[name] = [(*row, kl[i], clip[i]) for i, row in enumerate(stats[name])]
        means = {name: torch.stack([torch.stack(row) for row in rows]).mean(0).tolist() for name, rows in stats.items()}
        metrics.update(team_means({f"{key}/{name}": means[name][i] for i, key in enumerate(keys) for name in batches},
                                  list(batches)))
        metrics["grad_norm"] = float(torch.stack(grad_norms).mean())
        ev = []
        for name, full in batches.items():
            mask = full.alive
            e = explained_variance(full.value[mask], full.ret[mask])
            ev.append(e)
            if len(batches) > 1:
                metrics[f"explained_variance/{name}"] = e
        metrics["explained_variance"] = float(np.nanmean(ev)) if not all(np.isnan(ev)) else float("nan")
        metrics["lr"] = self.lr
        metrics["epochs"] = float(epochs_done)
        return metrics

    def _clip(self, loss: Tensor) -> Tensor:
        """Stop on a non-finite update, then clip the global gradient norm (per optimizer); return the
        pre-clip norm over all of them. The check comes first: clipping would spread one NaN to every gradient."""
        norms = {k: opt.grad_norm() for k, opt in self.optimizers.items()}
        total = (
            next(iter(norms.values())) if len(norms) == 1
            else torch.stack(list(norms.values())).square().sum().sqrt()
        )
        check_finite_update(loss, total, self.policy.net)
        if self.cfg.max_grad_norm > 0:
            for k, opt in self.optimizers.items():
                opt.clip_grad_norm_(self.cfg.max_grad_norm, norms[k])
        return total

    def state_dict(self) -> dict:
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}, "grad_steps": self.grad_steps}

    def load_state_dict(self, state: dict) -> None:
        if set(state["optimizers"]) != set(self.optimizers):
            raise ValueError(
                f"checkpoint optimizers {sorted(state['optimizers'])} do not match the config's "
                f"{sorted(self.optimizers)} (algo.optimizer changed?)"
            )
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.grad_steps = int(state["grad_steps"])
