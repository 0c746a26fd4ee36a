"""GAE against hand computations and reference estimators."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.returns import compute_gae, discounted_returns, explained_variance


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def gae(reward, value, term, trunc, final_value, last_value, gamma, lam, alive=None):
    r = t(reward)
    alive = torch.ones_like(r, dtype=torch.bool) if alive is None else t(alive, torch.bool)
    return compute_gae(r, t(value), terminated=t(term, torch.bool), truncated=t(trunc, torch.bool), alive=alive,
                       final_value=t(final_value), last_value=t(last_value), gamma=gamma, gae_lambda=lam)


def test_five_steps_with_one_terminated_and_one_truncated_step_by_hand():
    # step: 0    1     2(term)  3    4(trunc)
    r = [1.0, 2.0, 3.0, 4.0, 5.0]
    v = [0.5, 0.6, 0.7, 0.8, 0.9]
    term = [0, 0, 1, 0, 0]
    trunc = [0, 0, 0, 0, 1]
    fv = [0, 0, 0, 0, 2.0]  # V(real final obs) at the truncation
    g, lam = 0.9, 0.8
    adv, ret = gae(r, v, term, trunc, fv, 100.0, g, lam)  # last_value must be ignored (episode cut at 4)
    d4 = 5.0 + g * 2.0 - 0.9           # bootstrap from final obs, not from last_value
    d3 = 4.0 + g * 0.9 - 0.8
    d2 = 3.0 - 0.7                     # terminal: no bootstrap
    d1 = 2.0 + g * 0.7 - 0.6
    d0 = 1.0 + g * 0.6 - 0.5
    a4 = d4
    a3 = d3 + g * lam * a4
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    expected = np.array([a0, a1, a2, a3, a4])
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(ret.numpy(), expected + np.array(v), rtol=1e-6)


def test_lambda_one_is_monte_carlo_with_bootstrap():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=6), rng.normal(size=6)
    term = [0, 0, 1, 0, 0, 0]
    adv, ret = gae(r, v, term, [0] * 6, [0] * 6, 3.0, 0.95, 1.0)
    mc = discounted_returns(t(r), t(term, torch.bool), 0.95, last=t(3.0))
    np.testing.assert_allclose(ret.numpy(), mc.numpy(), rtol=1e-5)


def test_lambda_zero_is_td0():
    rng = np.random.default_rng(1)
    r, v = rng.normal(size=5), rng.normal(size=5)
    term = [0, 1, 0, 0, 0]
    adv, _ = gae(r, v, term, [0] * 5, [0] * 5, 0.3, 0.9, 0.0)
    nxt = np.append(v[1:], 0.3)
    td = r + 0.9 * (1 - np.array(term)) * nxt - v
    np.testing.assert_allclose(adv.numpy(), td, rtol=1e-5)


def test_turn_based_reward_reaches_the_previous_move():
    # Two agents alternate; agent 0 moves at t=0,2; agent 1 at t=1,3. Agent 1 wins at t=3:
    # agent 0 (waiting) gets -1 and terminated at t=3 -> credited to its move at t=2.
    alive = [[1, 0], [0, 1], [1, 0], [0, 1]]
    reward = [[0, 0], [0, 0], [0, 0], [-1, 1]]
    term = [[0, 0], [0, 0], [0, 0], [1, 1]]
    value = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]]
    zeros = [[0, 0]] * 4
    adv, ret = gae(reward, value, term, zeros, zeros, [9.0, 9.0], 0.9, 1.0, alive=alive)
    # agent 0: move at t=2 ends the game for it: delta = -1 - 0.5; move at t=0 bootstraps from V at t=2
    a0_t2 = -1 - 0.5
    a0_t0 = (0 + 0.9 * 0.5 - 0.1) + 0.9 * a0_t2
    a1_t3 = 1 - 0.8
    a1_t1 = (0 + 0.9 * 0.8 - 0.4) + 0.9 * a1_t3
    np.testing.assert_allclose(adv[:, 0].numpy(), [a0_t0, 0, a0_t2, 0], rtol=1e-6)
    np.testing.assert_allclose(adv[:, 1].numpy(), [0, a1_t1, 0, a1_t3], rtol=1e-6)
    assert ret[1, 0] == 0 and ret[0, 1] == 0  # non-alive entries are zero


def test_dead_agent_steps_do_not_leak_into_its_last_step():
    # Agent dies (terminated) at t=1, stays dead at t=2..3; its advantage at t=1 is r - V.
    alive = [[1], [1], [0], [0]]
    reward = [[1.0], [2.0], [0.0], [0.0]]
    term = [[0], [1], [0], [0]]
    value = [[0.5], [0.25], [7.0], [7.0]]
    zeros = [[0]] * 4
    adv, _ = gae(reward, value, term, zeros, zeros, [5.0], 0.9, 0.95, alive=alive)
    assert adv[1, 0].item() == 2.0 - 0.25
    np.testing.assert_allclose(adv[0, 0].item(), (1 + 0.9 * 0.25 - 0.5) + 0.9 * 0.95 * 1.75, rtol=1e-6)
    assert adv[2, 0] == 0 and adv[3, 0] == 0


def naive_gae(r, v, term, trunc, fv, last, gamma, lam):
    """Per-step loop with explicit next-value lookup (all agents alive)."""
    T = len(r)
    adv = np.zeros(T)
    nxt_adv = 0.0
    for i in reversed(range(T)):
        if term[i]:
            nv = 0.0
        elif trunc[i]:
            nv = fv[i]
        else:
            nv = last if i == T - 1 else v[i + 1]
        delta = r[i] + gamma * nv - v[i]
        cont = 0.0 if (term[i] or trunc[i]) else 1.0
        adv[i] = delta + gamma * lam * cont * nxt_adv
        nxt_adv = adv[i]
    return adv


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**31 - 1), st.floats(0.5, 1.0), st.floats(0.0, 1.0))
def test_vectorized_gae_equals_loop(T, seed, gamma, lam):
    rng = np.random.default_rng(seed)
    r, v, fv = rng.normal(size=(3, T))
    term = rng.random(T) < 0.2
    trunc = (rng.random(T) < 0.2) & ~term
    last = float(rng.normal())
    adv, ret = gae(r, v, term, trunc, fv, last, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), naive_gae(r, v, term, trunc, fv, last, gamma, lam), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), adv.numpy() + v, rtol=1e-5, atol=1e-5)


def test_explained_variance():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == 1.0
    assert abs(explained_variance(torch.full_like(y, 2.5), y)) < 1e-6
    assert explained_variance(-y, y) < 0


def compact_gae(r, v, term, trunc, alive, fv, last, gamma, lam):
    """Oracle for one agent: keep its alive steps only; what reaches it while waiting is credited
    to its previous alive step; then ordinary GAE on the compacted sequence."""
    steps = [t for t in range(len(r)) if alive[t]]
    rows = []
    for j, t in enumerate(steps):
        nxt = steps[j + 1] if j + 1 < len(steps) else len(r)
        rew, te, tr, boot = r[t], term[t], trunc[t], fv[t] if trunc[t] else None
        for w in range(t + 1, nxt):  # waiting steps up to the agent's next move
            if te or tr:
                break
            rew += r[w]
            te, tr = term[w], trunc[w]
            if tr and not te:
                boot = fv[w]
        nv = 0.0 if te else (boot if tr else (v[nxt] if nxt < len(r) else last))
        rows.append((t, rew + gamma * nv - v[t], te or tr))
    adv = np.zeros(len(r))
    carry = 0.0
    for t, delta, cut in reversed(rows):
        carry = delta + (0.0 if cut else gamma * lam * carry)
        adv[t] = carry
    return adv


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 14), st.integers(0, 2**31 - 1))
def test_alive_aware_gae_equals_compacted_oracle(T, seed):
    rng = np.random.default_rng(seed)
    r, v, fv = rng.normal(size=(3, T))
    alive = rng.random(T) < 0.6
    term = rng.random(T) < 0.15
    trunc = (rng.random(T) < 0.15) & ~term
    last = float(rng.normal())
    adv, _ = gae(r, v, term, trunc, fv, last, 0.9, 0.8, alive=alive)
    np.testing.assert_allclose(adv.numpy(), compact_gae(r, v, term, trunc, alive, fv, last, 0.9, 0.8), atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), st.integers(0, 2**31 - 1))
def test_all_alive_fast_path_equals_the_general_recursion(T, seed):
    # compute_gae takes a vectorized path when every agent is alive; it must agree with the
    # general alive-aware recursion on [T, E, A] data, including steps both terminated and truncated.
    from marl.returns import _gae_alive_aware, _gae_all_alive

    g = torch.Generator().manual_seed(seed)
    shape = (T, 3, 2)
    r, v, fv = (torch.randn(shape, generator=g) for _ in range(3))
    term = torch.rand(shape, generator=g) < 0.2
    trunc = torch.rand(shape, generator=g) < 0.2
    last = torch.randn(shape[1:], generator=g)
    alive = torch.ones(shape, dtype=torch.bool)
    fast = _gae_all_alive(r, v, term, trunc, fv, last, 0.97, 0.9)
    slow = _gae_alive_aware(r, v, term, trunc, alive, fv, last, 0.97, 0.9)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
