"""Observation encoders: the conv stacks, the rule that picks one, and single-network encoders.

Image observations are ``uint8`` ``[H, W, C]`` (channels last, as environments
return them); the CNN divides pixels by 255 and permutes to ``[C, H, W]`` inside
the network, so buffers keep the compact ``uint8`` form.

Which conv stack (:func:`choose_conv_stack`):

* ``min(H, W) >= 36`` (:data:`NATURE_MIN_SIZE`): the Nature-DQN stack (Mnih et
  al., 2015): 32 filters 8x8 stride 4, 64 4x4 stride 2, 64 3x3 stride 1, no
  padding; 84x84 frames give ``64 * 7 * 7 = 3136`` features.
* smaller images, e.g. 7x7 or 11x11 local grid views, for which the Nature stack
  would shrink the image below one pixel: :data:`SMALL_CONV`, 32 filters 3x3
  stride 1, 64 3x3 stride 2, 64 3x3 stride 1, all with padding 1, which works for
  any size and gives ``64 * ceil(H/2) * ceil(W/2)`` features (1024 for 7x7).

Both stacks use ReLU after every conv, and the flattened conv output then goes
through fully connected layers (``Linear(.., 512), ReLU`` by default).
Per-agent networks (:class:`marl.nets.AgentNet`) use the same stacks with
stacked parameters; :class:`CNNEncoder` and :class:`MLPEncoder` here are single
networks, e.g. for a centralized critic on the global state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from marl.nets.layers import HIDDEN_GAIN, check_activation, make_activation, orthogonal_init


class ConvSpec(NamedTuple):
    """One conv layer: ``out_channels`` filters ``kernel x kernel``, ``stride``, zero ``padding``."""

    out_channels: int
    kernel: int
    stride: int
    padding: int


NATURE_CONV: tuple[ConvSpec, ...] = (ConvSpec(32, 8, 4, 0), ConvSpec(64, 4, 2, 0), ConvSpec(64, 3, 1, 0))
"""The Nature-DQN conv stack, for images of at least :data:`NATURE_MIN_SIZE` pixels a side."""

SMALL_CONV: tuple[ConvSpec, ...] = (ConvSpec(32, 3, 1, 1), ConvSpec(64, 3, 2, 1), ConvSpec(64, 3, 1, 1))
"""The conv stack for small images (local grid views); works for any size."""

NATURE_MIN_SIZE: int = 36
"""Smallest side for which the Nature stack leaves at least one pixel (36 -> 8 -> 3 -> 1)."""

ENCODERS = ("auto", "mlp", "cnn")


def conv_output_hw(height: int, width: int, stack: Sequence[ConvSpec]) -> tuple[int, int]:
    """Spatial size ``(h, w)`` after ``stack``: ``floor((n + 2 pad - kernel) / stride) + 1`` per layer."""
    for spec in stack:
        height = (height + 2 * spec.padding - spec.kernel) // spec.stride + 1
        width = (width + 2 * spec.padding - spec.kernel) // spec.stride + 1
    return height, width


def choose_conv_stack(height: int, width: int) -> tuple[ConvSpec, ...]:
    """:data:`NATURE_CONV` when ``min(height, width) >= 36``, else :data:`SMALL_CONV`."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return NATURE_CONV if min(height, width) >= NATURE_MIN_SIZE else SMALL_CONV


def conv_flat_dim(height: int, width: int, stack: Sequence[ConvSpec]) -> int:
    """Number of features after flattening the output of ``stack`` on a ``height x width`` image."""
    h, w = conv_output_hw(height, width, stack)
    return stack[-1].out_channels * h * w


def resolve_encoder(encoder: str, in_shape: tuple[int, ...]) -> str:
    """``"mlp"`` or ``"cnn"`` for ``encoder`` in ``auto | mlp | cnn``.

    ``auto`` picks ``cnn`` for 3-D inputs, taken as images ``[H, W, C]``, and
    ``mlp`` otherwise (an MLP flattens any input shape). A 3-D input that is not
    an image (no pixels in 0..255) needs ``encoder="mlp"``.
    """
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")
    if encoder == "cnn" and len(in_shape) != 3:
        raise ValueError(f"encoder='cnn' needs an image shape [H, W, C], got {in_shape}")
    if encoder == "auto":
        return "cnn" if len(in_shape) == 3 else "mlp"
    return encoder


def conv_layers(in_channels: int, stack: Sequence[ConvSpec], gain: float = HIDDEN_GAIN) -> list[nn.Module]:
    """``[Conv2d, ReLU, ...]`` for ``stack`` on ``in_channels`` channels, orthogonally initialised."""
    layers: list[nn.Module] = []
    for spec in stack:
        conv = nn.Conv2d(in_channels, spec.out_channels, spec.kernel, spec.stride, spec.padding)
        layers += [orthogonal_init(conv, gain), nn.ReLU()]
        in_channels = spec.out_channels
    return layers


class CNNEncoder(nn.Module):
    """Single image encoder ``[B, H, W, C]`` raw pixels -> ``[B, features]``.

    Pixels are divided by 255 and permuted to channels-first inside; then the
    conv stack of :func:`choose_conv_stack`, a flatten, ``Linear(.., features)``
    and ReLU, all orthogonal with gain ``hidden_gain`` and zero biases.

    Args:
        in_shape: ``(H, W, C)`` of one image.
        features: width of the output (default 512, as in Nature-DQN).
        hidden_gain: orthogonal gain of every layer (default ``sqrt(2)``).
    """

    def __init__(self, in_shape: tuple[int, int, int], features: int = 512, hidden_gain: float = HIDDEN_GAIN):
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"CNNEncoder needs an image shape [H, W, C], got {in_shape}")
        height, width, channels = in_shape
        stack = choose_conv_stack(height, width)
        self.in_shape = tuple(in_shape)
        self.features = features
        self.net = nn.Sequential(
            *conv_layers(channels, stack, hidden_gain),
            nn.Flatten(),
            orthogonal_init(nn.Linear(conv_flat_dim(height, width, stack), features), hidden_gain),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, H, W, C]`` pixels in 0..255 (any dtype) -> ``[B, features]``."""
        return self.net(x.permute(0, 3, 1, 2).float() / 255.0)


class MLPEncoder(nn.Module):
    """Single vector encoder ``[B, *in_shape]`` -> ``[B, hidden[-1]]`` (flattens the input).

    Args:
        in_shape: shape of one observation; flattened.
        hidden: widths of the layers, each followed by the activation (non-empty).
        activation: ``tanh | relu | elu | silu``.
        hidden_gain: orthogonal gain (default ``sqrt(2)``).
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        hidden_gain: float = HIDDEN_GAIN,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("MLPEncoder needs at least one hidden layer width")
        check_activation(activation)
        self.in_shape = tuple(in_shape)
        self.features = int(hidden[-1])
        dims = [math.prod(in_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [orthogonal_init(nn.Linear(d_in, d_out), hidden_gain), make_activation(activation)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, *in_shape]`` -> ``[B, hidden[-1]]``."""
        return self.net(x.to(torch.get_default_dtype()) if not x.is_floating_point() else x)
