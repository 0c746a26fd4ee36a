"""A stacked MLP as one fused autograd node, with a faster tanh.

"Fused" in this module means one thing: the layers of a stacked MLP run as a
single :class:`torch.autograd.Function` (one node in the autograd graph) instead
of a dozen. It is not the fused Adam kernel (``torch.optim.Adam(fused=True)``,
used by ``FlatAdam`` in :mod:`marl.algos.optim`), and not the holding of an
actor and a critic as one network (that is :class:`marl.nets.twin.TwinMLP`, a
"twin", which runs its towers through :func:`stacked_mlp`).

:func:`stacked_mlp` computes ``K`` MLPs at once on ``x [K, M, F]`` with stacked
weights ``[K, in, out]`` (one ``baddbmm`` per layer). With gradients enabled it
runs as a single :class:`torch.autograd.Function` whose backward is written out
(one ``bmm`` for the weight gradient, one for the input gradient, one sum for the
bias, per layer): for small networks the per-node bookkeeping of autograd is a
large share of a training step, and this replaces a dozen nodes by one.

Tanh is :func:`marl.nets.layers.fast_tanh`: ``2 sigmoid(2x) - 1`` on large
inputs, within ``1.79e-7`` (absolute) of ``torch.tanh`` over every float32 in
``[-30, 30]``, ``torch.tanh`` itself on small ones; its derivative is taken from
the output, ``1 - y^2``, as for ``torch.tanh``.

Supported activations: ``tanh`` and ``relu`` (their derivatives need only the
layer output); :func:`stacked_mlp` falls back to plain autograd for others.
The node is differentiable once (no double backward).

Two choices of matmul layout, each a named function checked against the plain
product in ``tests/nets/test_fused.py`` (one core, ``python bench/bench_fused_layout.py``):

* :func:`stacked_linear` / :func:`stacked_weight_grad`: a layer whose output is
  narrower than :data:`NARROW_OUT` columns (the policy head: 5 logits, a value) is
  computed as the transposed product ``(W^T x^T)^T``; the CPU kernel is slow on
  products with a narrow right-hand side (``[2, 19200, 64] x [2, 64, 5]``: 3.5 ms,
  as long as the 64-wide hidden layer; transposed 0.75 ms; its weight gradient
  5.4 -> 0.7 ms).
* :func:`dense_input`: an input broadcast over the ``K`` towers (a stride-0
  ``expand``, as :class:`marl.nets.twin.TwinMLP` passes it) is copied to
  contiguous memory first: ``baddbmm`` on the broadcast view takes 4.1 ms, the
  copy plus ``baddbmm`` 1.9 ms.
* :func:`linear_tanh`: a hidden layer followed by the sigmoid form of tanh takes the
  ``2x`` of ``2 sigmoid(2x) - 1`` inside the matmul (``alpha=2, beta=2``: exact, a power
  of two) and works in place: one pass over the layer output fewer, one allocation fewer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from marl.nets.layers import FAST_TANH_MIN_NUMEL, activate, fast_tanh

# fast_tanh and its threshold live in marl.nets.layers (next to activate); re-exported for old imports.
__all__ = ["FAST_TANH_MIN_NUMEL", "NARROW_OUT", "TANH_IN_MATMUL", "dense_input", "fast_tanh", "linear_tanh",
           "stacked_linear", "stacked_mlp", "stacked_weight_grad"]

TANH_IN_MATMUL = True
"""Hidden tanh layers run as :func:`linear_tanh` (on inputs where :func:`fast_tanh` takes the sigmoid form)."""

NARROW_OUT = 16
"""Layers with fewer output columns than this run as the transposed product (measured crossover: at 16 columns
both layouts take the same time, at 5-8 the transposed one is 3.5-7x faster)."""


def stacked_linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``x [K, M, in] @ w [K, in, out] + b [K, out]`` -> ``[K, M, out]``, as the transposed product when
    ``out < NARROW_OUT`` (then the result is a transposed view, not contiguous)."""
    if w.shape[2] < NARROW_OUT:
        return torch.baddbmm(b.unsqueeze(2), w.transpose(1, 2), x.transpose(1, 2)).transpose(1, 2)
    return torch.baddbmm(b.unsqueeze(1), x, w)


def stacked_weight_grad(h: Tensor, g: Tensor) -> Tensor:
    """The weight gradient ``h^T g`` -> ``[K, in, out]`` of a layer with input ``h [K, M, in]`` and output gradient
    ``g [K, M, out]``; as ``(g^T h)^T`` when ``out < NARROW_OUT`` (contiguous either way)."""
    if g.shape[2] < NARROW_OUT:
        return torch.bmm(g.transpose(1, 2), h).transpose(1, 2).contiguous()
    return torch.bmm(h.transpose(1, 2), g)


def linear_tanh(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``fast_tanh(x @ w + b)`` in its sigmoid form, ``2 sigmoid(2 (x w + b)) - 1``, with the ``2`` inside the matmul
    and the rest in place (no autograd: for the fused node's forward and for inference)."""
    z = torch.baddbmm(b.unsqueeze(1), x, w, beta=2.0, alpha=2.0)
    return torch.sigmoid_(z).mul_(2.0).sub_(1.0)


def dense_input(x: Tensor) -> Tensor:
    """``x [K, M, F]`` in contiguous memory when it is one ``[M, F]`` block broadcast over ``K > 1`` towers
    (stride 0 on the tower axis); ``x`` itself otherwise."""
    if x.dim() == 3 and x.shape[0] > 1 and x.stride(0) == 0:
        return x.contiguous()
    return x


def _activation_grad(grad: Tensor, y: Tensor, activation: str) -> Tensor:
    """``d loss / d pre-activation`` from the gradient at the output ``y`` of the activation."""
    if activation == "tanh":
        return torch.ops.aten.tanh_backward(grad, y)
    return torch.ops.aten.threshold_backward(grad, y, 0.0)  # relu


def _forward(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], activation: str) -> list[Tensor]:
    """Inputs of every layer, then the output: ``[x, h_1, ..., h_L, out]``."""
    x = dense_input(x)
    hs = [x]
    last = len(weights) - 1
    z = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        if (i < last and activation == "tanh" and TANH_IN_MATMUL and w.shape[2] >= NARROW_OUT
                and z.shape[0] * z.shape[1] * w.shape[2] >= FAST_TANH_MIN_NUMEL):
            z = linear_tanh(z, w, b)  # (without autograd: the node's forward, or inference)
        else:
            z = stacked_linear(z, w, b)
            if i < last:
                z = activate(z, activation, fast=True)
        hs.append(z)
    return hs


class _StackedMLP(torch.autograd.Function):
    """The fused node: forward and hand-written backward of the whole stacked MLP."""

    @staticmethod
    def forward(ctx, x: Tensor, activation: str, *params: Tensor) -> Tensor:  # type: ignore[override]
        n = len(params) // 2
        weights, biases = params[:n], params[n:]
        hs = _forward(x, weights, biases, activation)
        ctx.activation = activation
        ctx.save_for_backward(*hs[:-1], *weights)
        return hs[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        saved = ctx.saved_tensors
        n = len(saved) // 2
        hs, weights = saved[:n], saved[n:]
        grad_w: list[Tensor | None] = [None] * n
        grad_b: list[Tensor | None] = [None] * n
        g = grad.contiguous()
        grad_x = None
        for i in range(n - 1, -1, -1):
            if ctx.needs_input_grad[2 + i]:
                grad_w[i] = stacked_weight_grad(hs[i], g)
            if ctx.needs_input_grad[2 + n + i]:
                grad_b[i] = g.sum(1)
            if i > 0:
                g = _activation_grad(torch.bmm(g, weights[i].transpose(1, 2)), hs[i], ctx.activation)
            elif ctx.needs_input_grad[0]:
                grad_x = torch.bmm(g, weights[0].transpose(1, 2))
        return (grad_x, None, *grad_w, *grad_b)


def stacked_mlp(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], activation: str) -> Tensor:
    """``K`` MLPs on ``x [K, M, in]`` with ``weights[i] [K, d_i, d_{i+1}]``, ``biases[i] [K, d_{i+1}]``
    -> ``[K, M, out]``.

    ``activation`` follows every layer but the last. One fused autograd node when
    gradients are needed and the activation is ``tanh`` or ``relu``; plain
    operations otherwise: without gradients (tanh by :func:`fast_tanh`), or for
    ``elu`` / ``silu`` with gradients (autograd through ``baddbmm`` and the activation).
    """
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights))
    if needs_grad and activation in ("tanh", "relu"):
        return _StackedMLP.apply(x, activation, *weights, *biases)
    if needs_grad:  # elu / silu: autograd through plain ops
        z = x
        for i, (w, b) in enumerate(zip(weights, biases)):
            z = torch.baddbmm(b.unsqueeze(1), z, w)
            if i < len(weights) - 1:
                z = activate(z, activation)
        return z
    return _forward(x, weights, biases, activation)[-1]
