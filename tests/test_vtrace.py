"""V-trace against the paper's definition (a naive forward sum), a hand computation and GAE."""

import numpy as np
import pytest
import torch

from marl.returns import compute_gae, compute_vtrace


def naive_vtrace(r, v, log_rho, term, trunc, fv, last, gamma, lam, rho_bar, c_bar):
    """Espeholt et al. (2018) eq. (1) read literally, one sequence ``[T]`` at a time, every agent alive:
    ``v_s = V(x_s) + sum_t gamma^(t-s) (prod_{i<t} c_i) rho_t delta_t``, the sum stopping at the episode end;
    the advantage ``rho_s (r_s + gamma ((1 - lam) V(x_{s+1}) + lam v_{s+1}) - V(x_s))``."""
    steps = len(r)
    ratio = np.exp(log_rho)
    rho, c = np.minimum(rho_bar, ratio), lam * np.minimum(c_bar, ratio)

    def next_v(t):  # V(x_{t+1}) of the same episode
        if term[t]:
            return 0.0
        if trunc[t]:
            return fv[t]
        return v[t + 1] if t + 1 < steps else last

    targets = np.zeros(steps)
    for s in range(steps):
        total, weight = v[s], 1.0
        for t in range(s, steps):
            total += (gamma ** (t - s)) * weight * rho[t] * (r[t] + gamma * next_v(t) - v[t])
            if term[t] or trunc[t]:
                break
            weight *= c[t]
        targets[s] = total
    adv = np.zeros(steps)
    for s in range(steps):
        if term[s]:
            nxt = 0.0
        elif trunc[s]:
            nxt = fv[s]
        else:
            nxt = (1 - lam) * next_v(s) + lam * (targets[s + 1] if s + 1 < steps else last)
        adv[s] = rho[s] * (r[s] + gamma * nxt - v[s])
    return targets, adv


def vtrace(r, v, log_rho, term, trunc, fv, last, alive=None, **kw):
    f = torch.as_tensor
    r = f(r, dtype=torch.float32)
    alive = torch.ones_like(r, dtype=torch.bool) if alive is None else f(alive, dtype=torch.bool)
    return compute_vtrace(r, f(v, dtype=torch.float32), f(log_rho, dtype=torch.float32),
                          terminated=f(term, dtype=torch.bool), truncated=f(trunc, dtype=torch.bool), alive=alive,
                          final_value=f(fv, dtype=torch.float32), last_value=f(last, dtype=torch.float32), **kw)


@pytest.mark.parametrize("lam, rho_bar, c_bar", [(1.0, 1.0, 1.0), (0.9, 1.0, 1.0), (1.0, 2.0, 0.5), (0.95, 1.5, 1.0)])
def test_matches_the_paper_definition_on_random_sequences_with_episode_ends(lam, rho_bar, c_bar):
    rng = np.random.default_rng(int(lam * 100 + rho_bar * 10 + c_bar))
    steps, envs, gamma = 12, 5, 0.93
    r = rng.normal(size=(steps, envs))
    v = rng.normal(size=(steps, envs))
    log_rho = rng.normal(scale=0.7, size=(steps, envs))  # ratios on both sides of the clips
    term = rng.random((steps, envs)) < 0.12
    trunc = (rng.random((steps, envs)) < 0.12) & ~term
    term[:, 0], trunc[:, 0] = False, False  # one sequence without an end: bootstraps from last_value
    fv = np.where(trunc, rng.normal(size=(steps, envs)), 0.0)
    last = rng.normal(size=envs)
    out = vtrace(r, v, log_rho, term, trunc, fv, last, gamma=gamma, lam=lam, rho_bar=rho_bar, c_bar=c_bar)
    assert term.any() and trunc.any()
    for e in range(envs):
        targets, adv = naive_vtrace(r[:, e], v[:, e], log_rho[:, e], term[:, e], trunc[:, e], fv[:, e], last[e],
                                    gamma, lam, rho_bar, c_bar)
        np.testing.assert_allclose(out.target[:, e].numpy(), targets, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.advantage[:, e].numpy(), adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.rho.numpy(), np.minimum(rho_bar, np.exp(log_rho)), rtol=1e-6)


def test_on_policy_is_the_bootstrapped_return_by_hand():
    # step: 0    1(trunc)  2    3(term)  4     then V(x_5) = last
    r = [1.0, 2.0, 3.0, 4.0, 5.0]
    v = [0.5, 0.6, 0.7, 0.8, 0.9]
    term = [0, 0, 0, 1, 0]
    trunc = [0, 1, 0, 0, 0]
    fv = [0, 1.5, 0, 0, 0]
    g, last = 0.9, 2.0
    out = vtrace(r, v, [0.0] * 5, term, trunc, fv, last, gamma=g)
    g4 = 5.0 + g * last                # bootstraps from V(x_T)
    g3 = 4.0                           # terminal
    g2 = 3.0 + g * g3
    g1 = 2.0 + g * 1.5                 # truncated: V(real final obs)
    g0 = 1.0 + g * g1
    expected = np.array([g0, g1, g2, g3, g4])
    np.testing.assert_allclose(out.target.numpy(), expected, rtol=1e-6)
    # advantage = r + gamma v_{s+1} - V(x_s) = G_s - V(x_s) on-policy with lambda 1
    np.testing.assert_allclose(out.advantage.numpy(), expected - np.array(v), rtol=1e-6)
    np.testing.assert_allclose(out.rho.numpy(), np.ones(5))


@pytest.mark.parametrize("lam", [1.0, 0.9])
def test_on_policy_equals_gae_with_dead_and_waiting_agents(lam):
    """Ratios 1: targets and advantages are GAE(lam)'s, with alive masks, pending rewards and episode ends
    while waiting (the alive-aware path of compute_gae)."""
    rng = np.random.default_rng(7)
    shape = (16, 4, 3)
    f = torch.as_tensor
    r = f(rng.normal(size=shape), dtype=torch.float32)
    v = f(rng.normal(size=shape), dtype=torch.float32)
    term = f(rng.random(shape) < 0.1)
    trunc = f(rng.random(shape) < 0.1) & ~term
    alive = f(rng.random(shape) < 0.7)
    fv = torch.where(trunc, f(rng.normal(size=shape), dtype=torch.float32), torch.zeros(shape))
    last = f(rng.normal(size=shape[1:]), dtype=torch.float32)
    common = dict(terminated=term, truncated=trunc, alive=alive, final_value=fv, last_value=last, gamma=0.97)
    adv, ret = compute_gae(r, v, gae_lambda=lam, **common)
    out = compute_vtrace(r, v, torch.zeros(shape), lam=lam, **common)
    assert (~alive).any()
    torch.testing.assert_close(out.target, ret, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.advantage, adv, rtol=1e-5, atol=1e-5)
    assert not out.target[~alive].any() and not out.advantage[~alive].any()


def test_off_policy_ratios_change_the_targets_and_are_clipped():
    r, v = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
    zeros = [0, 0, 0]
    on = vtrace(r, v, [0.0] * 3, zeros, zeros, [0.0] * 3, 0.0, gamma=1.0)
    big = vtrace(r, v, [3.0] * 3, zeros, zeros, [0.0] * 3, 0.0, gamma=1.0)  # pi/mu = e^3, clipped to 1
    small = vtrace(r, v, [-1.0] * 3, zeros, zeros, [0.0] * 3, 0.0, gamma=1.0)
    torch.testing.assert_close(big.target, on.target)
    assert (small.target < on.target).all()
    np.testing.assert_allclose(small.rho.numpy(), np.exp(-1.0), rtol=1e-6)
