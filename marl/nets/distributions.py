"""Action distributions and heads that act on a network's output.

* :class:`MaskedCategorical`: discrete actions with an optional ``action_mask``.
* :class:`DiagGaussian`: PPO's continuous policy: an unbounded Gaussian whose
  samples are clipped to ``[-1, 1]`` and mapped to the action bounds with
  :func:`scale_action` when sent to the env (the stored action and its
  ``log_prob`` stay the unclipped sample).
* :class:`TanhGaussian`: SAC's squashed Gaussian ``a = tanh(u)``, ``u ~ N(mean, std)``.
* :class:`AgentLogStd`: a state-independent learnable ``log_std`` per parameter set.
* :func:`dueling_q`: ``Q = V + A - mean(A)`` from a ``[..., 1 + n]`` output.

Shapes: ``[...]`` is any batch shape, typically ``[B, A]`` or ``[E, A]``;
``n`` actions, ``d`` action dimensions. Random draws take an optional
``torch.Generator`` so they can be seeded without the global RNG.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


class MaskedCategorical:
    """Categorical over ``n`` actions from ``logits [..., n]`` with an optional ``mask [..., n]``.

    Masked actions (``mask == False``) get the logit ``finfo.min``: their
    probability is exactly 0, so they are never sampled, their ``log_prob`` is
    about ``-3.4e38`` (finite), they carry no gradient, and the entropy sums over
    allowed actions only. A row with no allowed action (e.g. an agent that is not
    alive) is left unmasked so the distribution stays defined; such rows should be
    masked out of losses by ``alive``.

    Args:
        logits: ``[..., n]`` unnormalized log-probabilities.
        mask: ``[..., n]`` bool, ``True`` = allowed, or ``None`` (all allowed).
    """

    def __init__(self, logits: Tensor, mask: Tensor | None = None):
        if mask is not None:
            if mask.shape != logits.shape:
                raise ValueError(
                    f"mask shape {tuple(mask.shape)} must equal logits shape {tuple(logits.shape)}"
                )
            mask = mask.bool()
            mask = mask | ~mask.any(dim=-1, keepdim=True)
            logits = torch.where(mask, logits, torch.finfo(logits.dtype).min)
        self.mask = mask
        self.log_probs = F.log_softmax(logits, dim=-1)
        """``[..., n]`` normalized log-probabilities (``finfo.min``-ish where masked)."""

    @property
    def probs(self) -> Tensor:
        """``[..., n]`` action probabilities (0 where masked)."""
        return self.log_probs.exp()

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``[...]`` int64 actions drawn from the distribution (no gradient).

        Exponential race: with ``E_i ~ Exp(1)`` i.i.d., ``argmax_i p_i / E_i`` is
        action ``i`` with probability ``p_i`` (``E_i / p_i ~ Exp(p_i)``, and the
        smallest of independent exponentials is ``i`` with probability
        ``p_i / sum p``). Three elementwise ops instead of ``torch.multinomial``
        (half the time for small batches). ``E`` is kept above 0 so a masked
        action (``p = 0``) gives ``0 / E = 0`` and is never the maximum.
        """
        probs = self.probs.detach()
        race = torch.empty_like(probs).exponential_(generator=generator).clamp_min_(torch.finfo(probs.dtype).tiny)
        return torch.div(probs, race).argmax(dim=-1)

    def log_prob(self, action: Tensor) -> Tensor:
        """``[...]`` log-probability of integer ``action [...]``."""
        return self.log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        """``[...]`` entropy in nats, over allowed actions only."""
        terms = self.probs * self.log_probs
        if self.mask is not None:
            terms = torch.where(self.mask, terms, torch.zeros_like(terms))
        return -terms.sum(dim=-1)

    def mode(self) -> Tensor:
        """``[...]`` the most probable allowed action (greedy evaluation)."""
        return self.log_probs.argmax(dim=-1)


def _gaussian_noise(mean: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)


class DiagGaussian:
    """Diagonal Gaussian over ``d`` action dimensions.

    Args:
        mean: ``[..., d]``.
        log_std: ``[..., d]`` or broadcastable to ``mean`` (e.g. ``[A, d]`` from
            :class:`AgentLogStd` against a ``[B, A, d]`` mean).
    """

    def __init__(self, mean: Tensor, log_std: Tensor):
        self.mean = mean
        self.log_std = log_std.expand_as(mean)

    @property
    def std(self) -> Tensor:
        return self.log_std.exp()

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """``[..., d]`` reparameterized sample ``mean + std * eps`` (gradient flows to mean and log_std)."""
        return self.mean + self.std * _gaussian_noise(self.mean, generator)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``[..., d]`` sample without gradient."""
        with torch.no_grad():
            return self.rsample(generator)

    def log_prob(self, action: Tensor) -> Tensor:
        """``[...]`` log-density of ``action [..., d]``, summed over the action dimension."""
        z = (action - self.mean) / self.std
        return (-0.5 * z.square() - self.log_std - 0.5 * _LOG_2PI).sum(dim=-1)

    def entropy(self) -> Tensor:
        """``[...]`` differential entropy in nats, ``sum(0.5 + 0.5 log(2 pi) + log_std)``."""
        return (0.5 + 0.5 * _LOG_2PI + self.log_std).sum(dim=-1)

    def mode(self) -> Tensor:
        """``[..., d]`` the mean."""
        return self.mean


def tanh_log_abs_det(u: Tensor) -> Tensor:
    """Elementwise ``log(1 - tanh(u)^2)`` in the stable form ``2 (log 2 - u - softplus(-2u))``.

    The direct form loses all precision once ``|tanh(u)|`` rounds to 1 (``|u| > 9``
    in float32); this one stays exact for any ``u``.
    """
    return 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))


class TanhGaussian:
    """Squashed Gaussian ``a = tanh(u)``, ``u ~ N(mean, exp(log_std))``, with actions in ``(-1, 1)``.

    ``log p(a) = sum_d [log N(u_d) - log(1 - tanh(u_d)^2)]`` (change of
    variables). The log-density is that of the ``(-1, 1)`` action; mapping to
    ``[low, high]`` with :func:`scale_action` subtracts the constant
    ``sum(log((high - low) / 2))``, which SAC's losses do not need.

    Args:
        mean: ``[..., d]`` mean of ``u``.
        log_std: ``[..., d]`` or broadcastable; clamp it in the caller (SAC
            commonly uses ``[-5, 2]``).
    """

    def __init__(self, mean: Tensor, log_std: Tensor):
        self.base = DiagGaussian(mean, log_std)

    def rsample_with_log_prob(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Reparameterized ``(action [..., d], log_prob [...])``, the log-prob computed from ``u``."""
        u = self.base.rsample(generator)
        return torch.tanh(u), self.log_prob_pre_tanh(u)

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """``[..., d]`` reparameterized action in ``(-1, 1)``."""
        return torch.tanh(self.base.rsample(generator))

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``[..., d]`` action without gradient."""
        with torch.no_grad():
            return self.rsample(generator)

    def log_prob_pre_tanh(self, u: Tensor) -> Tensor:
        """``[...]`` log-density of the action ``tanh(u)`` given the pre-squash ``u [..., d]``."""
        return self.base.log_prob(u) - tanh_log_abs_det(u).sum(dim=-1)

    def log_prob(self, action: Tensor, eps: float = 1e-6) -> Tensor:
        """``[...]`` log-density of ``action [..., d]`` in ``(-1, 1)``.

        Inverts the squash with ``atanh`` after clamping to ``[-1 + eps, 1 - eps]``;
        prefer :meth:`rsample_with_log_prob`, exact for saturated actions.
        """
        u = torch.atanh(action.clamp(-1.0 + eps, 1.0 - eps))
        return self.log_prob_pre_tanh(u)

    def mode(self) -> Tensor:
        """``[..., d]`` ``tanh(mean)``, the deterministic action."""
        return torch.tanh(self.base.mean)


ArrayLike = np.ndarray | Tensor


def _clip(x: ArrayLike, low: ArrayLike | float, high: ArrayLike | float) -> ArrayLike:
    if isinstance(x, Tensor):
        low = torch.as_tensor(low, dtype=x.dtype, device=x.device)
        high = torch.as_tensor(high, dtype=x.dtype, device=x.device)
        return torch.minimum(torch.maximum(x, low), high)
    return np.clip(x, low, high)


def scale_action(a_unit: ArrayLike, low: ArrayLike, high: ArrayLike) -> ArrayLike:
    """Map actions from ``[-1, 1]`` to ``[low, high]``: ``low + (clip(a, -1, 1) + 1) / 2 * (high - low)``.

    Values outside ``[-1, 1]`` (an unbounded Gaussian sample) are clipped first,
    and the result is clipped to ``[low, high]`` again, since the affine map can
    round one ulp past a bound; the env always receives an action inside its box.

    Args:
        a_unit: ``[..., d]`` numpy array or tensor.
        low, high: ``[d]`` bounds of the action box (finite), same kind as ``a_unit``.
    """
    return _clip(low + (_clip(a_unit, -1.0, 1.0) + 1.0) * 0.5 * (high - low), low, high)


def unscale_action(action: ArrayLike, low: ArrayLike, high: ArrayLike) -> ArrayLike:
    """Inverse of :func:`scale_action`: ``[low, high]`` -> ``[-1, 1]``, clipping values outside the bounds.

    ``unscale_action(scale_action(a, low, high), low, high) == clip(a, -1, 1)``.
    """
    return _clip(2.0 * (action - low) / (high - low) - 1.0, -1.0, 1.0)


class AgentLogStd(nn.Module):
    """State-independent learnable ``log_std``, one vector per parameter set.

    Args:
        n_agents: ``A``.
        action_dim: ``d``.
        param_sets: agent -> set index as in :class:`marl.nets.AgentNet`; ``None`` = one set.
        init: initial value of every entry (``0.0`` = std 1).
    """

    def __init__(
        self, n_agents: int, action_dim: int, param_sets: Sequence[int] | None = None, init: float = 0.0
    ):
        super().__init__()
        sets = [0] * n_agents if param_sets is None else [int(p) for p in param_sets]
        n_sets = max(sets) + 1
        if len(sets) != n_agents or len(Counter(sets)) != n_sets or min(sets) < 0:
            raise ValueError(f"param_sets {sets} must give one index per agent and use every index 0..P-1")
        self.log_std = nn.Parameter(torch.full((n_sets, action_dim), float(init)))
        self.register_buffer("param_index", torch.tensor(sets, dtype=torch.long), persistent=False)

    def forward(self) -> Tensor:
        """``[A, d]`` log standard deviation per agent, broadcastable against ``[..., A, d]``."""
        return self.log_std.index_select(0, self.param_index)


def dueling_q(out: Tensor, mask: Tensor | None = None) -> Tensor:
    """Dueling Q values ``Q = V + A - mean(A)`` (Wang et al., 2016).

    Args:
        out: ``[..., 1 + n]`` network output, ``out[..., 0]`` the value stream and
            ``out[..., 1:]`` the advantage stream (an :class:`AgentNet` with
            ``out_dim = 1 + n``).
        mask: ``[..., n]`` bool allowed actions or ``None``; the mean is then
            taken over allowed actions only (rows with none use all actions).
            Masked entries of Q are left as computed: mask them in the argmax.

    Returns:
        ``[..., n]`` Q values.
    """
    value, adv = out[..., :1], out[..., 1:]
    if mask is None:
        return value + adv - adv.mean(dim=-1, keepdim=True)
    mask = mask.bool()
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    weights = mask.to(adv.dtype)
    mean = (adv * weights).sum(dim=-1, keepdim=True) / weights.sum(dim=-1, keepdim=True)
    return value + adv - mean
