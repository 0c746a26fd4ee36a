"""Initialisation helpers, activations and the plain MLP builder.

Every layer of the package is initialised orthogonally (Saxe et al., 2014) with
zero biases: gain ``sqrt(2)`` for hidden layers followed by a ReLU-like
activation, a small gain (``0.01``) for policy output layers so the initial
policy is close to uniform, ``1.0`` for value outputs. Orthogonal init gives more
stable RL training than the default uniform init (Rao et al., 2020).

Stacked parameters (one slice per parameter set, see :mod:`marl.nets.ensemble`)
are initialised slice by slice with :func:`orthogonal_stacked_`, so that every
parameter set gets the same distribution as an independently built layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HIDDEN_GAIN: float = math.sqrt(2.0)
"""Orthogonal gain of hidden layers (the gain for ReLU in ``nn.init.calculate_gain``)."""

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}
"""Activation names accepted everywhere in :mod:`marl.nets`."""

_INIT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_activation(name: str) -> str:
    """Return ``name`` if it is a known activation, else raise ``ValueError`` listing the choices."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return name


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (``tanh | relu | elu | silu``)."""
    return ACTIVATIONS[check_activation(name)]()


FAST_TANH_MIN_NUMEL = 8192
"""Inputs with at least this many elements use the sigmoid form of tanh (measured crossover on CPU)."""


def fast_tanh(x: Tensor, min_numel: int = FAST_TANH_MIN_NUMEL) -> Tensor:
    """``tanh(x)``: ``2 sigmoid(2x) - 1`` for inputs of at least ``min_numel`` elements without
    autograd history, else ``torch.tanh``.

    The sigmoid form takes 0.4 to 0.65 of the time of ``torch.tanh`` on 8,192 to
    262,144 float32 elements on one CPU thread, and 1.6 times as long on 2,048
    (``timeit``; the vectorized sigmoid kernel is faster than the tanh one), hence
    the threshold. Its error is absolute, not relative: over every float32 in
    ``[-30, 30]`` it differs from ``torch.tanh`` by at most ``1.79e-7``
    (``1.5 * 2**-23``, at ``x ~ 0.55``), but near 0, where ``2 s - 1`` cancels, the
    relative error is large (``x = 1e-6`` gives ``1.07e-6``; ``|x| < 3e-8`` gives 0).

    It works in place, which autograd could not differentiate, so inputs with
    autograd history keep ``torch.tanh``. The threshold is an argument, not a
    global, because TorchScript (which compiles this through :func:`activate`)
    cannot read an int global.
    """
    if x.numel() < min_numel or (x.requires_grad and torch.is_grad_enabled()):
        return torch.tanh(x)
    return torch.sigmoid(x * 2.0).mul_(2.0).sub_(1.0)


def activate(x: Tensor, name: str, fast: bool = False) -> Tensor:
    """The activation ``name`` (``tanh | relu | elu | silu``, already checked) applied to ``x``.

    The functional form of :func:`make_activation`, for stacked networks that run
    their layers by hand. ``fast=True`` computes ``tanh`` with :func:`fast_tanh`
    (not bit-identical to ``torch.tanh`` on large inputs); the other activations
    ignore it. Written in the TorchScript subset: :mod:`marl.nets.ensemble`
    compiles it inside its ``fork`` strategy.
    """
    if name == "tanh":
        return fast_tanh(x) if fast else torch.tanh(x)
    if name == "relu":
        return torch.relu(x)
    if name == "elu":
        return F.elu(x)
    return F.silu(x)


def orthogonal_init(module: nn.Module, gain: float) -> nn.Module:
    """Orthogonal weights with ``gain`` and zero biases for every Linear/Conv layer in ``module``.

    ``module`` itself may be the layer, or a container whose ``nn.Linear`` and
    ``nn.Conv{1,2,3}d`` layers all get the same gain. A conv weight
    ``[out, in, *kernel]`` is treated as the matrix ``[out, in * prod(kernel)]``.

    Args:
        module: the layer or container to initialise, changed in place.
        gain: scale of the orthogonal matrix: for a square weight ``W W^T = gain^2 I``.

    Returns:
        ``module``, so that ``orthogonal_init(nn.Linear(4, 4), 1.0)`` can be used inline.

    Raises:
        TypeError: ``module`` holds no Linear or Conv layer (nothing would be initialised).
    """
    layers = [m for m in module.modules() if isinstance(m, _INIT_TYPES)]
    if not layers:
        raise TypeError(
            f"orthogonal_init found no nn.Linear/nn.Conv layer in {type(module).__name__}; "
            "pass the layer itself or a container holding it"
        )
    for layer in layers:
        nn.init.orthogonal_(layer.weight, gain)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return module


@torch.no_grad()
def orthogonal_stacked_(weight: Tensor, gain: float, *, in_first: bool) -> Tensor:
    """Initialise each slice ``weight[p]`` of a stacked weight orthogonally, in place.

    Args:
        weight: ``[P, in, out]`` for a stacked linear layer (``in_first=True``), or
            ``[P, out, in, *kernel]`` for a stacked conv layer (``in_first=False``).
        gain: orthogonal gain, as in :func:`orthogonal_init`.
        in_first: whether the slices are stored ``[in, out]`` (the transpose of
            ``nn.Linear.weight``); they are then drawn as ``[out, in]`` and
            transposed, so each slice has exactly the law of an ``nn.Linear`` init.

    Returns:
        ``weight``.
    """
    for p in range(weight.shape[0]):
        if in_first:
            tmp = torch.empty(weight.shape[2], weight.shape[1], dtype=weight.dtype, device=weight.device)
            nn.init.orthogonal_(tmp, gain)
            weight[p].copy_(tmp.T)
        else:
            tmp = torch.empty_like(weight[p])
            nn.init.orthogonal_(tmp, gain)
            weight[p].copy_(tmp)
    return weight


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    *,
    activation: str = "tanh",
    hidden_gain: float = HIDDEN_GAIN,
    out_gain: float = 1.0,
) -> nn.Sequential:
    """A single (not per-agent) MLP ``[B, in_dim] -> [B, out_dim]`` with orthogonal init.

    Layers: ``Linear(in_dim, hidden[0]), act, ..., Linear(hidden[-1], out_dim)``;
    no activation after the output layer. ``hidden=()`` gives one linear layer.
    Use it for networks that are not per agent, e.g. a centralized critic on the
    global state; per-agent networks are :class:`marl.nets.AgentNet`.

    Args:
        in_dim: input features.
        hidden: widths of the hidden layers.
        out_dim: output features.
        activation: ``tanh | relu | elu | silu``.
        hidden_gain: orthogonal gain of the hidden layers (default ``sqrt(2)``).
        out_gain: orthogonal gain of the output layer (``0.01`` policy, ``1.0`` value).
    """
    check_activation(activation)
    dims = [in_dim, *hidden]
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers += [orthogonal_init(nn.Linear(d_in, d_out), hidden_gain), make_activation(activation)]
    layers.append(orthogonal_init(nn.Linear(dims[-1], out_dim), out_gain))
    return nn.Sequential(*layers)


class CachedParamLists(nn.Module):
    """A module that keeps plain-list copies of its ``ParameterList`` contents for fast forwards.

    Iterating an ``nn.ParameterList`` costs microseconds per element, a large share
    of a small network's forward. Subclasses list the ``ParameterList`` attributes
    in :attr:`cached_lists`; :meth:`param_lists` returns them as plain lists, built
    once and dropped after ``.to()`` / ``.float()`` and in copies (deepcopy, pickle),
    so they always hold the module's current parameters (``load_state_dict`` copies
    values in place and keeps the parameters themselves).
    """

    cached_lists: tuple[str, ...] = ()

    def param_lists(self) -> tuple[list[Tensor], ...]:
        cache = self.__dict__.get("_param_cache")
        if cache is None:
            cache = tuple(list(getattr(self, name)) for name in self.cached_lists)
            self.__dict__["_param_cache"] = cache
        return cache

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        self.__dict__["_param_cache"] = None
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_param_cache"] = None
        return state
