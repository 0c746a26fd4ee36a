"""stacked_mlp: one autograd node with a hand-written backward, checked against autograd."""

from __future__ import annotations

import pytest
import torch

from marl.nets.fused import (
    FAST_TANH_MIN_NUMEL,
    NARROW_OUT,
    dense_input,
    fast_tanh,
    linear_tanh,
    stacked_linear,
    stacked_mlp,
    stacked_weight_grad,
)


def _reference(x, weights, biases, activation):
    act = torch.tanh if activation == "tanh" else torch.relu
    z = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        z = torch.baddbmm(b.unsqueeze(1), z, w)
        if i < len(weights) - 1:
            z = act(z)
    return z


def _params(dims, k, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(k, a, b, generator=g, dtype=dtype, requires_grad=True) for a, b in zip(dims[:-1], dims[1:])]
    bs = [torch.randn(k, b, generator=g, dtype=dtype, requires_grad=True) for b in dims[1:]]
    return ws, bs


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("rows", [5, 400])  # 400 x 32 x 2 = 25,600 elements: the sigmoid form of tanh
def test_values_and_gradients_match_autograd(activation, rows):
    ws, bs = _params([3, 32, 32, 4], 2, torch.float32, 0)
    x = torch.randn(1, rows, 3).expand(2, rows, 3).requires_grad_(True)
    g = torch.randn(2, rows, 4)
    out = stacked_mlp(x, ws, bs, activation)
    grads = torch.autograd.grad(out, [x, *ws, *bs], g)
    ref = _reference(x, ws, bs, activation)
    ref_grads = torch.autograd.grad(ref, [x, *ws, *bs], g)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_gradcheck_in_float64():
    ws, bs = _params([3, 5, 2], 2, torch.float64, 1)
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: stacked_mlp(x, p[:2], p[2:], "tanh"), (x, *ws, *bs))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradcheck_in_float64_on_inputs_large_enough_for_the_sigmoid_form(activation, monkeypatch):
    # Hidden layers of 2 x 520 x 8 = 8,320 >= FAST_TANH_MIN_NUMEL elements: inside the autograd node (no history)
    # tanh takes the sigmoid form, and the hand-written backward must match finite differences through it.
    k, rows, hidden = 2, 520, 8
    assert k * rows * hidden >= FAST_TANH_MIN_NUMEL
    ws, bs = _params([3, hidden, hidden, 2], k, torch.float64, 4)
    x = torch.randn(k, rows, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    calls = []
    sigmoid = torch.sigmoid
    monkeypatch.setattr(torch, "sigmoid", lambda t: calls.append(t.numel()) or sigmoid(t))
    fn = lambda x, *p: stacked_mlp(x, p[:3], p[3:], activation)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, *ws, *bs), atol=1e-8, rtol=1e-6, fast_mode=True)  # float64: tight
    if activation == "tanh":
        assert calls and min(calls) >= FAST_TANH_MIN_NUMEL  # the sigmoid form was taken, on both hidden layers
    else:
        assert not calls
    torch.testing.assert_close(fn(x, *ws, *bs), _reference(x, ws, bs, activation), rtol=1e-12, atol=1e-12)


def test_only_requested_gradients_are_computed_and_inference_needs_no_graph():
    ws, bs = _params([3, 8, 2], 1, torch.float32, 2)
    x = torch.randn(1, 6, 3)  # no grad wanted for the input
    stacked_mlp(x, ws, bs, "tanh").sum().backward()
    assert x.grad is None and all(w.grad is not None for w in ws + bs)
    with torch.no_grad():
        out = stacked_mlp(x, ws, bs, "tanh")
    assert out.grad_fn is None
    torch.testing.assert_close(out, _reference(x, ws, bs, "tanh").detach())


def test_fast_tanh_is_within_float_precision_of_tanh():
    x = torch.linspace(-30, 30, 4 * FAST_TANH_MIN_NUMEL)
    assert (fast_tanh(x) - torch.tanh(x)).abs().max() <= 2e-7  # the bound marl/nets/fused.py documents
    x64 = torch.linspace(-30, 30, 4 * FAST_TANH_MIN_NUMEL, dtype=torch.float64)
    assert 0 < (fast_tanh(x64) - torch.tanh(x64)).abs().max() < 1e-15  # > 0: the sigmoid form, not torch.tanh
    small = torch.linspace(-3, 3, 100)
    assert torch.equal(fast_tanh(small), torch.tanh(small))  # small inputs: torch.tanh itself
    big = torch.linspace(-3, 3, 2 * FAST_TANH_MIN_NUMEL, requires_grad=True)
    fast_tanh(big).sum().backward()  # with autograd history: torch.tanh, differentiable
    torch.testing.assert_close(big.grad, 1 - torch.tanh(big.detach()) ** 2)


@pytest.mark.parametrize("out", [1, 5, NARROW_OUT - 1, NARROW_OUT, 64])  # both layouts, either side of the switch
def test_stacked_linear_and_weight_grad_equal_the_plain_products(out):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 300, 64, generator=g)
    w, b = torch.randn(2, 64, out, generator=g), torch.randn(2, out, generator=g)
    y = stacked_linear(x, w, b)
    assert y.shape == (2, 300, out) and (y.is_contiguous() or out < NARROW_OUT)  # narrow: a transposed view
    torch.testing.assert_close(y, torch.baddbmm(b.unsqueeze(1), x, w), rtol=1e-5, atol=1e-5)
    grad_out = torch.randn(2, 300, out, generator=g)
    gw = stacked_weight_grad(x, grad_out)
    assert gw.shape == (2, 64, out) and gw.is_contiguous()
    torch.testing.assert_close(gw, torch.bmm(x.transpose(1, 2), grad_out), rtol=1e-4, atol=1e-4)


def test_dense_input_copies_only_a_broadcast_input():
    x = torch.randn(1, 7, 3)
    wide = x.expand(2, 7, 3)
    dense = dense_input(wide)
    assert dense.is_contiguous() and dense.stride(0) == 21 and torch.equal(dense, wide)
    own = torch.randn(2, 7, 3)
    assert dense_input(own) is own and dense_input(x) is x  # already dense, or one tower: no copy


def test_a_policy_head_of_5_logits_matches_autograd_on_a_twin_sized_batch():
    # The layout of a shared simple_spread policy: 2 towers (actor, critic) reading one broadcast input,
    # 21 -> 64 -> 64 -> 5: the broadcast input is made dense and the head runs as the transposed product.
    ws, bs = _params([21, 64, 64, 5], 2, torch.float32, 7)
    x = torch.randn(1, 3000, 21).expand(2, 3000, 21)
    g = torch.randn(2, 3000, 5)
    out = stacked_mlp(x, ws, bs, "tanh")
    grads = torch.autograd.grad(out, [*ws, *bs], g)
    ref = _reference(x, ws, bs, "tanh")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, torch.autograd.grad(ref, [*ws, *bs], g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-3)  # sums of 3,000 rows in float32


def test_linear_tanh_equals_fast_tanh_of_the_layer():
    g = torch.Generator().manual_seed(8)
    x, w, b = torch.randn(2, 500, 21, generator=g), torch.randn(2, 21, 64, generator=g), torch.randn(2, 64, generator=g)
    z = torch.baddbmm(b.unsqueeze(1), x, w)
    y = linear_tanh(x, w, b)
    assert z.numel() >= FAST_TANH_MIN_NUMEL
    torch.testing.assert_close(y, fast_tanh(z), rtol=0, atol=1e-6)  # 2 x inside the matmul: the same sums, scaled
    assert (y - torch.tanh(z)).abs().max() <= 1e-6


def test_the_trick_switches_leave_the_mlp_and_its_gradients_unchanged(monkeypatch):
    # TANH_IN_MATMUL and NARROW_OUT only choose how the same values are computed.
    import marl.nets.fused as fused

    ws, bs = _params([21, 64, 64, 5], 2, torch.float32, 9)
    x = torch.randn(1, 2000, 21).expand(2, 2000, 21)
    g = torch.randn(2, 2000, 5)

    def run():
        out = stacked_mlp(x, ws, bs, "tanh")
        return [out, *torch.autograd.grad(out, [*ws, *bs], g)]

    tricks = run()
    monkeypatch.setattr(fused, "TANH_IN_MATMUL", False)
    monkeypatch.setattr(fused, "NARROW_OUT", 0)
    monkeypatch.setattr(fused, "dense_input", lambda t: t)
    for a, b in zip(tricks, run()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-3)
