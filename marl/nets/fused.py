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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from marl.nets.layers import FAST_TANH_MIN_NUMEL, activate, fast_tanh

# fast_tanh and its threshold live in marl.nets.layers (next to activate); re-exported for old imports.
__all__ = ["FAST_TANH_MIN_NUMEL", "fast_tanh", "stacked_mlp"]


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
                grad_w[i] = torch.bmm(hs[i].transpose(1, 2), g)
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
