"""Two MLPs of one shape on one input, run as one stacked network.

PPO's actor and critic usually read the same observation through two MLPs of
the same widths. Computed separately, a small policy pays for every layer twice
in per-operation overhead (forward and backward), which dominates when the
networks are tiny (CartPole's 64x64: the matmuls take microseconds).
:class:`TwinMLP` stores the two towers' weights stacked along a leading tower
axis (``weights.i`` is ``[K, in, out]``) and runs each layer for all towers as
one batched matmul. The towers share no parameter: the model is exactly ``K``
independent MLPs, each initialised as :func:`marl.nets.mlp` would.

The layers run through :func:`marl.nets.fused.stacked_mlp`: one fused autograd
node for the whole network, and a faster tanh. Names: a *twin* is this holding
of two networks as one module (``GroupActorCritic`` holds its actor and critic as
a twin when it can); *fused* is only the single autograd node of
:mod:`marl.nets.fused` (and, elsewhere, PyTorch's fused Adam kernel).

Towers may differ in output width (``n`` logits vs one value): the output layer
is stored ``max(out_dims)`` wide; a tower's extra columns are zero, never read,
and get no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from marl.nets.fused import stacked_mlp
from marl.nets.layers import (
    HIDDEN_GAIN,
    CachedParamLists,
    check_activation,
    make_activation,
    orthogonal_stacked_,
)


class TwinMLP(CachedParamLists):
    """``K`` independent MLP towers over one per-agent input: ``[..., A, *in_shape]`` -> ``K`` outputs
    ``[..., A, d_k]``.

    Tower ``k``: ``Linear(F (+A), hidden[0]), act, ..., Linear(hidden[-1], out_dims[k])``.
    With ``agent_id`` and ``A > 1``, the one-hot agent id is appended to the
    flattened input (one parameter set shared by all agents, as
    :class:`~marl.nets.AgentNet` with ``sharing: shared``).

    Args:
        in_shape: one agent's input shape (flattened to ``F``).
        out_dims: output width of each tower, e.g. ``(n_actions, 1)``.
        n_agents: ``A``.
        hidden: hidden widths, default ``(64, 64)``.
        activation: ``tanh | relu | elu | silu`` (default ``tanh``).
        agent_id: append one-hot agent ids when ``A > 1``.
        out_gains: orthogonal gain of each tower's output layer (e.g. ``(0.01, 1.0)``).
        hidden_gain: orthogonal gain of the hidden layers (default ``sqrt(2)``).

    Example:
        >>> net = TwinMLP((4,), (2, 1), 1, out_gains=(0.01, 1.0))
        >>> logits, value = net(torch.zeros(8, 1, 4))
        >>> logits.shape, value.shape
        (torch.Size([8, 1, 2]), torch.Size([8, 1, 1]))
    """

    cached_lists = ("weights", "biases")

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_dims: Sequence[int],
        n_agents: int,
        *,
        hidden: Sequence[int] | None = None,
        activation: str | None = None,
        agent_id: bool = True,
        out_gains: Sequence[float] | None = None,
        hidden_gain: float = HIDDEN_GAIN,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(int(d) for d in in_shape)
        self.out_dims = tuple(int(d) for d in out_dims)
        if n_agents < 1 or not self.out_dims or min(self.out_dims) < 1:
            raise ValueError(f"need n_agents >= 1 and out_dims >= 1, got n_agents={n_agents}, out_dims={out_dims}")
        gains = tuple(out_gains) if out_gains is not None else (1.0,) * len(self.out_dims)
        if len(gains) != len(self.out_dims):
            raise ValueError(f"out_gains {gains} must give one gain per tower ({len(self.out_dims)})")
        self.n_agents = int(n_agents)
        self.hidden = tuple(int(h) for h in (hidden if hidden is not None else (64, 64)))
        self.activation = check_activation(activation or "tanh")
        self.uses_agent_id = bool(agent_id) and self.n_agents > 1
        self._features = math.prod(self.in_shape)
        k = len(self.out_dims)
        width = max(self.out_dims)
        dims = [self._features + (self.n_agents if self.uses_agent_id else 0), *self.hidden]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            self.weights.append(
                nn.Parameter(orthogonal_stacked_(torch.empty(k, d_in, d_out), hidden_gain, in_first=True))
            )
            self.biases.append(nn.Parameter(torch.zeros(k, d_out)))
        out_w = torch.zeros(k, dims[-1], width)
        for t, (d, gain) in enumerate(zip(self.out_dims, gains)):
            out_w[t, :, :d] = orthogonal_stacked_(torch.empty(1, dims[-1], d), gain, in_first=True)[0]
        self.weights.append(nn.Parameter(out_w))
        self.biases.append(nn.Parameter(torch.zeros(k, width)))
        self.register_buffer("agent_eye", torch.eye(self.n_agents), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x [..., A, *in_shape]`` -> one ``[..., A, out_dims[k]]`` tensor per tower."""
        k = len(self.in_shape) + 1
        if x.dim() < k or tuple(x.shape[-k:]) != (self.n_agents, *self.in_shape):
            raise ValueError(f"TwinMLP expects input [..., A={self.n_agents}, *{self.in_shape}], got {tuple(x.shape)}")
        lead = x.shape[:-k]
        n, a = math.prod(lead), self.n_agents
        weights, biases = self.param_lists()
        h = x.reshape(n, a, self._features).to(weights[0].dtype)
        if self.uses_agent_id:
            h = torch.cat([h, self.agent_eye.to(h.dtype).expand(n, a, a)], dim=-1)
        # [K, N*A, F]: every tower reads the same rows (a stride-0 view, no copy).
        z = h.reshape(1, n * a, h.shape[-1]).expand(len(self.out_dims), n * a, h.shape[-1])
        z = stacked_mlp(z, weights, biases, self.activation)
        return [z[t, :, :d].reshape(*lead, a, d) for t, d in enumerate(self.out_dims)]

    @torch.no_grad()
    def tower_module(self, t: int) -> nn.Sequential:
        """A standalone ``nn.Sequential`` copy of tower ``t``: ``[B, F (+A)] -> [B, out_dims[t]]``
        (the input with the one-hot id appended when :attr:`uses_agent_id`); for export and as a
        reference for the stacked computation."""
        if not 0 <= t < len(self.out_dims):
            raise IndexError(f"tower {t} out of range 0..{len(self.out_dims) - 1}")
        layers: list[nn.Module] = []
        weights, biases = self.param_lists()
        for i, (w, b) in enumerate(zip(weights, biases)):
            d_out = self.out_dims[t] if i == len(weights) - 1 else w.shape[2]
            lin = nn.Linear(w.shape[1], d_out)
            lin.weight.copy_(w[t, :, :d_out].T)
            lin.bias.copy_(b[t, :d_out])
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(make_activation(self.activation))
        return nn.Sequential(*layers).to(weights[0].device)
