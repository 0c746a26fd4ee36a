"""A stacked MLP as one autograd node, with a faster tanh.

:func:`stacked_mlp` computes ``K`` MLPs at once on ``x [K, M, F]`` with stacked
weights ``[K, in, out]`` (one ``baddbmm`` per layer). With gradients enabled it
runs as a single :class:`torch.autograd.Function` whose backward is written out
(one ``bmm`` for the weight gradient, one for the input gradient, one sum for the
bias, per layer): for small networks the per-node bookkeeping of autograd is a
large share of a training step, and this replaces a dozen nodes by one.

Tanh is computed as ``2 sigmoid(2x) - 1``, which equals ``tanh(x)`` to within
2e-7 and costs a third of ``torch.tanh`` on large inputs on CPU (the vectorized
sigmoid is much faster than the tanh kernel); its derivative is taken from the
output, ``1 - y^2``, as for ``torch.tanh``. Small inputs keep ``torch.tanh``
(there the extra operations cost more than they save).

Supported activations: ``tanh`` and ``relu`` (their derivatives need only the
layer output); :func:`stacked_mlp` falls back to plain autograd for others.
The node is differentiable once (no double backward).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

FAST_TANH_MIN_NUMEL = 8192
"""Inputs with at least this many elements use the sigmoid form of tanh (measured crossover on CPU)."""


def fast_tanh(x: Tensor) -> Tensor:
    """``tanh(x)``: ``2 sigmoid(2x) - 1`` for large inputs without autograd history, else ``torch.tanh``
    (the sigmoid form works in place, which autograd could not differentiate)."""
    if x.numel() < FAST_TANH_MIN_NUMEL or (x.requires_grad and torch.is_grad_enabled()):
        return torch.tanh(x)
    return torch.sigmoid(x * 2.0).mul_(2.0).sub_(1.0)


def _activate(z: Tensor, activation: str) -> Tensor:
    if activation == "tanh":
        return fast_tanh(z)
    if activation == "relu":
        return torch.relu(z)
    if activation == "elu":
        return F.elu(z)
    return F.silu(z)


def _activation_grad(grad: Tensor, y: Tensor, activation: str) -> Tensor:
    """``d loss / d pre-activation`` from the gradient at the output ``y`` of the activation."""
    if activation == "tanh":
        return torch.ops.aten.tanh_backward(grad, y)
    return torch.ops.aten.threshold_backward(grad, y, 0.0)  # relu


def _forward(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], activation: str) -> list[Tensor]:
    """Inputs of every layer, then the output: ``[x, h_1, ..., h_L, out]``."""
    hs = [x]
    last = len(weights) - 1
    z = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        z = torch.baddbmm(b.unsqueeze(1), z, w)
        if i < last:
            z = _activate(z, activation)
        hs.append(z)
    return hs


class _StackedMLP(torch.autograd.Function):
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
                grad_w[i] = torch.bmm(hs[i].transpose(1, 2), g)
            if ctx.needs_input_grad[2 + n + i]:
                grad_b[i] = g.sum(1)
            if i > 0:
                g = _activation_grad(torch.bmm(g, weights[i].transpose(1, 2)), hs[i], ctx.activation)
            elif ctx.needs_input_grad[0]:
                grad_x = torch.bmm(g, weights[0].transpose(1, 2))
        return (grad_x, None, *grad_w, *grad_b)


def stacked_mlp(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], activation: str) -> Tensor:
    """``K`` MLPs on ``x [K, M, in]`` with ``weights[i] [K, d_i, d_{i+1}]``, ``biases[i] [K, d_{i+1}]`` -> ``[K, M, out]``.

    ``activation`` follows every layer but the last. One autograd node when
    gradients are needed and the activation is ``tanh`` or ``relu``; plain
    operations otherwise (inference, other activations).
    """
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights))
    if needs_grad and activation in ("tanh", "relu"):
        return _StackedMLP.apply(x, activation, *weights, *biases)
    if needs_grad:  # autograd through plain ops (torch.tanh keeps its own backward)
        z = x
        for i, (w, b) in enumerate(zip(weights, biases)):
            z = torch.baddbmm(b.unsqueeze(1), z, w)
            if i < len(weights) - 1:
                z = torch.tanh(z) if activation == "tanh" else _activate(z, activation)
        return z
    return _forward(x, weights, biases, activation)[-1]
