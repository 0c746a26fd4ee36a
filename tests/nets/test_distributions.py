"""Masked categorical, Gaussian and tanh-Gaussian distributions, action scaling, dueling Q."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from marl.nets import (
    AgentLogStd,
    DiagGaussian,
    MaskedCategorical,
    TanhGaussian,
    dueling_q,
    scale_action,
    tanh_log_abs_det,
    unscale_action,
)

LOGITS = torch.tensor([[0.5, 3.0, -1.0, 0.0, 1.0], [2.0, -0.5, 0.3, 4.0, 0.0]])
MASK = torch.tensor([[True, False, True, True, False], [True, True, True, False, True]])


# ------------------------------------------------------------- categorical
def test_masked_actions_are_never_sampled_and_frequencies_match():
    n = 20_000
    logits = LOGITS.repeat(n, 1)
    mask = MASK.repeat(n, 1)
    dist = MaskedCategorical(logits, mask)
    actions = dist.sample(torch.Generator().manual_seed(0)).view(n, 2)
    for row in range(2):
        counts = torch.bincount(actions[:, row], minlength=5).double() / n
        allowed = MASK[row]
        assert counts[~allowed].sum() == 0  # includes the largest logit of each row
        expected = torch.softmax(LOGITS[row][allowed].double(), dim=0)
        torch.testing.assert_close(counts[allowed], expected, atol=0.02, rtol=0.0)


def test_masked_log_prob_entropy_and_mode_against_softmax_over_allowed_actions():
    dist = MaskedCategorical(LOGITS, MASK)
    for row in range(2):
        allowed = MASK[row].nonzero().squeeze(1)
        p = torch.softmax(LOGITS[row, allowed], dim=0)
        torch.testing.assert_close(dist.log_prob(torch.tensor([0, 0]))[row], p[0].log())
        torch.testing.assert_close(dist.entropy()[row], -(p * p.log()).sum())
        torch.testing.assert_close(dist.mode()[row], allowed[p.argmax()])
    masked_lp = dist.log_prob(torch.tensor([1, 3]))
    assert torch.isfinite(masked_lp).all() and (masked_lp < -1e30).all()


def test_masked_logits_get_no_gradient_and_everything_stays_finite():
    logits = LOGITS.clone().requires_grad_(True)
    dist = MaskedCategorical(logits, MASK)
    (dist.log_prob(torch.tensor([2, 4])).sum() + dist.entropy().sum()).backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.count_nonzero(logits.grad[~MASK]) == 0
    assert torch.count_nonzero(logits.grad[MASK]) > 0


def test_no_mask_and_all_masked_rows_are_plain_softmax():
    plain = MaskedCategorical(LOGITS)
    torch.testing.assert_close(plain.probs, torch.softmax(LOGITS, dim=-1))
    none_allowed = MaskedCategorical(LOGITS, torch.zeros_like(MASK))
    torch.testing.assert_close(none_allowed.probs, torch.softmax(LOGITS, dim=-1))
    with pytest.raises(ValueError, match="mask shape"):
        MaskedCategorical(LOGITS, MASK[:, :3])


# ---------------------------------------------------------------- gaussian
def test_diag_gaussian_against_torch_normal():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(4, 3, 2, generator=gen)
    log_std = torch.randn(3, 2, generator=gen) * 0.3
    action = torch.randn(4, 3, 2, generator=gen)
    dist = DiagGaussian(mean, log_std)
    ref = torch.distributions.Normal(mean, log_std.exp().expand_as(mean))
    torch.testing.assert_close(dist.log_prob(action), ref.log_prob(action).sum(-1))
    torch.testing.assert_close(dist.entropy(), ref.entropy().sum(-1))
    torch.testing.assert_close(dist.mode(), mean)


def test_diag_gaussian_samples_are_seeded_and_have_the_right_moments():
    mean, log_std = torch.tensor([1.0, -2.0]), torch.tensor([0.0, math.log(0.5)])
    dist = DiagGaussian(mean.expand(50_000, 2), log_std)
    a = dist.sample(torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, dist.sample(torch.Generator().manual_seed(3)))
    torch.testing.assert_close(a.mean(0), mean, atol=0.02, rtol=0.0)
    torch.testing.assert_close(a.std(0), torch.tensor([1.0, 0.5]), atol=0.02, rtol=0.0)


def test_agent_log_std_shares_per_parameter_set():
    log_std = AgentLogStd(3, 2, param_sets=[0, 0, 1], init=-0.5)
    out = log_std()
    assert out.shape == (3, 2)
    torch.testing.assert_close(out, torch.full((3, 2), -0.5))
    out[1].sum().backward()
    torch.testing.assert_close(log_std.log_std.grad, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="every index"):
        AgentLogStd(2, 1, param_sets=[0, 2])


# ----------------------------------------------------------- tanh gaussian
def test_tanh_gaussian_density_matches_the_derivative_of_its_cdf():
    # P(tanh(u) <= y) = Phi((atanh(y) - mu) / sigma); its derivative is the density of the action
    mu, sigma = 0.3, 0.8
    y = torch.linspace(-0.995, 0.995, 81, dtype=torch.float64)
    h = 1e-6

    def cdf(v):
        return torch.special.ndtr((torch.atanh(v) - mu) / sigma)

    numeric = (cdf(y + h) - cdf(y - h)) / (2 * h)
    mean = torch.full((81, 1), mu, dtype=torch.float64)
    dist = TanhGaussian(mean, torch.tensor([math.log(sigma)], dtype=torch.float64))
    analytic = dist.log_prob(y.unsqueeze(1)).exp()
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_tanh_gaussian_log_prob_sums_over_dimensions_and_matches_the_sampled_u():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(1000, 2, generator=gen, dtype=torch.float64) * 0.5
    log_std = torch.tensor([-0.3, 0.2], dtype=torch.float64)
    dist = TanhGaussian(mean, log_std)
    action, log_prob = dist.rsample_with_log_prob(gen)
    assert ((action > -1) & (action < 1)).all()
    torch.testing.assert_close(log_prob, dist.log_prob(action), rtol=1e-6, atol=1e-6)
    per_dim = [
        TanhGaussian(mean[:, i : i + 1], log_std[i : i + 1]).log_prob(action[:, i : i + 1]) for i in range(2)
    ]
    torch.testing.assert_close(log_prob, per_dim[0] + per_dim[1])


def test_tanh_log_abs_det_is_exact_and_stable():
    u = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.5], dtype=torch.float64)
    torch.testing.assert_close(tanh_log_abs_det(u), torch.log(1 - torch.tanh(u) ** 2))
    big = torch.tensor([-30.0, 30.0])  # float32 tanh rounds to +-1 here: the naive form gives -inf
    assert torch.isinf(torch.log(1 - torch.tanh(big) ** 2)).all()
    torch.testing.assert_close(tanh_log_abs_det(big), torch.tensor([2 * math.log(2) - 60.0] * 2))


def test_tanh_gaussian_mode_and_reparameterized_gradient():
    mean = torch.tensor([[0.4, -1.0]], requires_grad=True)
    dist = TanhGaussian(mean, torch.zeros(2))
    torch.testing.assert_close(dist.mode(), torch.tanh(mean.detach()))
    action, _ = dist.rsample_with_log_prob(torch.Generator().manual_seed(0))
    action.sum().backward()
    expected = 1 - action.detach() ** 2  # d tanh(mean + eps) / d mean
    torch.testing.assert_close(mean.grad, expected)


# ----------------------------------------------------------------- scaling
def test_scale_action_maps_bounds_and_clips():
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 10.0])
    np.testing.assert_allclose(scale_action(np.array([-1.0, 1.0]), low, high), [-2.0, 10.0])
    np.testing.assert_allclose(scale_action(np.array([0.0, 0.0]), low, high), [0.0, 5.0])
    np.testing.assert_allclose(scale_action(np.array([3.0, -7.0]), low, high), [2.0, 0.0])
    np.testing.assert_allclose(unscale_action(np.array([5.0, 20.0]), low, high), [1.0, 1.0])


def test_scale_action_round_trip_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    low, high = np.array([-2.0, 0.0, -0.1]), np.array([2.0, 10.0, 0.3])
    a = rng.uniform(-1.5, 1.5, size=(100, 3))
    scaled = scale_action(a, low, high)
    assert (scaled >= low).all() and (scaled <= high).all()
    np.testing.assert_allclose(unscale_action(scaled, low, high), np.clip(a, -1, 1), atol=1e-12)
    t = scale_action(torch.from_numpy(a), torch.from_numpy(low), torch.from_numpy(high))
    np.testing.assert_allclose(t.numpy(), scaled)


# ------------------------------------------------------------------ dueling
def test_dueling_q_by_hand():
    out = torch.tensor([[1.0, 1.0, 2.0, 6.0]])
    torch.testing.assert_close(dueling_q(out), torch.tensor([[-1.0, 0.0, 4.0]]))
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(dueling_q(out, mask), torch.tensor([[0.5, 1.5, 5.5]]))
    torch.testing.assert_close(dueling_q(out, torch.zeros_like(mask)), dueling_q(out))
