"""Per-agent networks over an agent axis, with parameter sharing modes and forward strategies.

One :class:`AgentNet` serves the ``A`` agents of a group. Its weights are held
as stacked tensors, one slice per parameter set (``P`` sets):

* ``shared``: ``P = 1``; a one-hot agent id is appended to the input so one
  network can still act differently per agent (for images: ``A`` constant planes).
* ``independent``: ``P = A``; each agent its own slice, no id needed.
* selective: an agent -> set map (``param_sets``), e.g. both adversaries on one
  set and the good agent on another; ids are appended when a set serves more
  than one agent (:func:`marl.multi_agent.groups.param_sets_for` builds the map from names).

Forward strategies, which give the same outputs and gradients on the same
parameters (only speed differs, see ``bench/bench_forward.py``):

* ``batched`` (default): one batched matmul (``torch.baddbmm``) per layer over
  the agent axis, and grouped convolutions (``groups=A``) for images. With
  ``P < A`` the weights are gathered per agent (``index_select``, whose backward
  sums the gradients of agents sharing a set). With ``P = 1`` the rows of all
  agents form one batch ``[1, N * A, in]`` and each layer is one ``baddbmm``
  with the whole ``[1, in, out]`` weight (no ``w[0]`` select, whose backward
  would add a zero-filled copy per tensor), and images run as ordinary
  convolutions over ``N * A`` frames.
* ``fork``: one task per parameter set with ``torch.jit.fork`` inside a
  TorchScript-compiled function (in eager mode fork runs sequentially). The
  tasks read slices of the same stacked parameters. TorchScript is deprecated in
  current torch; its deprecation warnings are silenced where it is compiled.
* ``loop``: a Python loop over parameter sets, the baseline.

Parameters are registered once (``weights.i``, ``biases.i``, ``conv_weights.i``,
``conv_biases.i``), independent of the strategy, so a ``state_dict`` saved under
one strategy loads under another and an optimizer sees each tensor once.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marl.nets.encoders import choose_conv_stack, conv_flat_dim, resolve_encoder
from marl.nets.fused import stacked_mlp
from marl.nets.layers import (
    HIDDEN_GAIN,
    CachedParamLists,
    activate,
    check_activation,
    make_activation,
    orthogonal_stacked_,
)

STRATEGIES = ("batched", "fork", "loop")


def _set_forward(
    x: Tensor,
    conv_w: List[Tensor],
    conv_b: List[Tensor],
    conv_stride: List[int],
    conv_pad: List[int],
    fc_w: List[Tensor],
    fc_b: List[Tensor],
    p: int,
    activation: str,
) -> Tensor:
    """Parameter set ``p`` on its rows: ``x [n, in]`` or ``[n, C, H, W]`` -> ``[n, out]``.

    Written in the TorchScript subset (``typing.List`` annotations) so that the
    ``fork`` strategy can compile it; the ``loop`` strategy runs it eagerly.
    """
    h = x
    for i in range(len(conv_w)):
        h = torch.relu(F.conv2d(h, conv_w[i][p], conv_b[i][p], conv_stride[i], conv_pad[i]))
    if len(conv_w) > 0:
        h = h.flatten(1)
    n_fc = len(fc_w)
    for i in range(n_fc):
        h = torch.addmm(fc_b[i][p], h, fc_w[i][p])
        if i < n_fc - 1:
            h = activate(h, activation)
    return h


def _fork_sets(
    xs: List[Tensor],
    conv_w: List[Tensor],
    conv_b: List[Tensor],
    conv_stride: List[int],
    conv_pad: List[int],
    fc_w: List[Tensor],
    fc_b: List[Tensor],
    activation: str,
) -> List[Tensor]:
    futures = [
        torch.jit.fork(_set_forward, xs[p], conv_w, conv_b, conv_stride, conv_pad, fc_w, fc_b, p, activation)
        for p in range(len(xs))
    ]
    return [torch.jit.wait(f) for f in futures]


@functools.cache
def _compiled_fork_sets():
    # torch.jit.script/fork/wait are deprecated in torch >= 2.9 but still the only
    # way to run forks in parallel; compile once, without the warnings.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        return torch.jit.script(_fork_sets)


class AgentNet(CachedParamLists):
    """Per-agent network over an agent axis: input ``[..., A, *in_shape]`` -> output ``[..., A, out_dim]``.

    Architecture per parameter set: for vector inputs, ``Linear, act`` for each
    width in ``hidden``, then ``Linear(.., out_dim)``. For images ``[H, W, C]``:
    pixels ``/ 255``, the conv stack of :func:`marl.nets.encoders.choose_conv_stack`
    (ReLU), flatten, ``Linear, act`` per width in ``hidden``, then the output layer.

    Agent ids (when ``agent_id`` and some set serves more than one agent): the
    one-hot ``[A]`` of the agent index is concatenated to the vector input, or
    added as ``A`` constant channels (1.0 on the agent's plane) after the ``/255``
    so the ids are never scaled. :meth:`agent_input` returns that input.

    Init: orthogonal weights, zero biases, for every parameter set independently;
    gain ``hidden_gain`` for conv and hidden layers, ``out_gain`` for the output.

    Args:
        in_shape: one agent's observation shape; vector inputs should already be normalized.
        out_dim: output width (logits, action mean, Q values, or 1 for a value).
        n_agents: ``A``, the size of the agent axis.
        hidden: fully connected widths; default ``(64, 64)`` for vectors, ``(512,)`` for images.
        activation: ``tanh | relu | elu | silu`` after each hidden layer; default
            ``tanh`` for vectors, ``relu`` for images.
        param_sets: agent index -> set index (values ``0..P-1``, each used);
            ``None`` = one set for all agents (shared). See :func:`marl.multi_agent.groups.param_sets_for`.
        agent_id: append the one-hot agent id when a parameter set serves more than one agent.
        strategy: ``batched | fork | loop``, how several parameter sets are run; the
            attribute can be changed later without changing the model.
        encoder: ``auto | mlp | cnn``; ``auto`` is ``cnn`` for 3-D inputs ``[H, W, C]``.
        input_scale: the CNN divides its input by this (255 for uint8 pixels; 1 for board planes).
        out_gain: orthogonal gain of the output layer (0.01 policy head, 1.0 value head).
        hidden_gain: orthogonal gain of conv and hidden layers (default ``sqrt(2)``).

    Attributes:
        n_agents: ``A``.
        n_param_sets: ``P``.
        param_sets: tuple of ``A`` set indices.
        uses_agent_id: whether one-hot ids are part of the input.
        encoder: ``"mlp"`` or ``"cnn"`` (resolved).

    Example:
        >>> from marl.multi_agent.groups import param_sets_for
        >>> net = AgentNet((18,), 5, 3, param_sets=param_sets_for("independent", ["a", "b", "c"]))
        >>> net(torch.zeros(8, 4, 3, 18)).shape  # [T, E, A, obs] -> [T, E, A, out]
        torch.Size([8, 4, 3, 5])
        >>> (net.n_param_sets, net.uses_agent_id, net.weights[0].shape)
        (3, False, torch.Size([3, 18, 64]))
    """

    cached_lists = ("conv_weights", "conv_biases", "weights", "biases")

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_dim: int,
        n_agents: int,
        *,
        hidden: Sequence[int] | None = None,
        activation: str | None = None,
        param_sets: Sequence[int] | None = None,
        agent_id: bool = True,
        strategy: str = "batched",
        encoder: str = "auto",
        out_gain: float = 1.0,
        hidden_gain: float = HIDDEN_GAIN,
        input_scale: float = 255.0,
    ):
        super().__init__()
        self.input_scale = float(input_scale)
        if n_agents < 1 or out_dim < 1:
            raise ValueError(f"n_agents and out_dim must be >= 1, got n_agents={n_agents}, out_dim={out_dim}")
        self.in_shape = tuple(int(d) for d in in_shape)
        self.out_dim = int(out_dim)
        self.n_agents = int(n_agents)
        self.encoder = resolve_encoder(encoder, self.in_shape)
        is_cnn = self.encoder == "cnn"
        default_hidden = (512,) if is_cnn else (64, 64)
        self.hidden = tuple(int(h) for h in (hidden if hidden is not None else default_hidden))
        self.activation = check_activation(activation or ("relu" if is_cnn else "tanh"))
        self.strategy = strategy

        sets = [0] * n_agents if param_sets is None else [int(p) for p in param_sets]
        if len(sets) != n_agents:
            raise ValueError(
                f"param_sets has {len(sets)} entries but n_agents={n_agents}; give one per agent"
            )
        counts = Counter(sets)
        n_sets = max(sets) + 1
        if min(sets) < 0 or len(counts) != n_sets:
            raise ValueError(
                f"param_sets {sets} must use every index 0..P-1 (a set serving no agent would never train)"
            )
        self.param_sets = tuple(sets)
        self.n_param_sets = n_sets
        self.uses_agent_id = bool(agent_id) and max(counts.values()) > 1
        id_dim = n_agents if self.uses_agent_id else 0
        self._identity_sets = sets == list(range(n_agents))

        self.conv_weights = nn.ParameterList()
        self.conv_biases = nn.ParameterList()
        self.conv_stride: list[int] = []
        self.conv_pad: list[int] = []
        if is_cnn:
            height, width, channels = self.in_shape
            stack = choose_conv_stack(height, width)
            c_in = channels + id_dim
            for spec in stack:
                w = torch.empty(n_sets, spec.out_channels, c_in, spec.kernel, spec.kernel)
                self.conv_weights.append(nn.Parameter(orthogonal_stacked_(w, hidden_gain, in_first=False)))
                self.conv_biases.append(nn.Parameter(torch.zeros(n_sets, spec.out_channels)))
                self.conv_stride.append(spec.stride)
                self.conv_pad.append(spec.padding)
                c_in = spec.out_channels
            self._fc_in = conv_flat_dim(height, width, stack)
            self._fc_id_dim = 0
        else:
            self._fc_in = math.prod(self.in_shape)
            self._fc_id_dim = id_dim

        dims = [self._fc_in + self._fc_id_dim, *self.hidden, self.out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            gain = out_gain if i == len(dims) - 2 else hidden_gain
            w = orthogonal_stacked_(torch.empty(n_sets, d_in, d_out), gain, in_first=True)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(n_sets, d_out)))

        order = sorted(range(n_agents), key=lambda a: sets[a])
        self._set_sizes = [counts[p] for p in range(n_sets)]
        self._sorted_sets = order == list(range(n_agents))
        self.register_buffer("param_index", torch.tensor(sets, dtype=torch.long), persistent=False)
        self.register_buffer("agent_order", torch.tensor(order, dtype=torch.long), persistent=False)
        self.register_buffer(
            "agent_order_inverse", torch.argsort(torch.tensor(order, dtype=torch.long)), persistent=False
        )
        self.register_buffer("agent_eye", torch.eye(n_agents), persistent=False)

    @property
    def strategy(self) -> str:
        """``batched | fork | loop``; may be reassigned at any time."""
        return self._strategy

    @strategy.setter
    def strategy(self, value: str) -> None:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; choose one of {STRATEGIES}")
        self._strategy = value

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_dim={self.out_dim}, n_agents={self.n_agents}, "
            f"n_param_sets={self.n_param_sets}, encoder={self.encoder!r}, hidden={self.hidden}, "
            f"activation={self.activation!r}, agent_id={self.uses_agent_id}, strategy={self.strategy!r}"
        )

    # ----------------------------------------------------------------- input
    def _flat(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """``x [..., A, *in_shape]`` -> ``([N, A, *in_shape] float, leading shape)``."""
        k = len(self.in_shape) + 1
        if x.dim() < k or tuple(x.shape[-k:]) != (self.n_agents, *self.in_shape):
            raise ValueError(
                f"AgentNet expects input [..., A={self.n_agents}, *{self.in_shape}], got {tuple(x.shape)}"
            )
        lead = tuple(x.shape[:-k])
        dtype = self.param_lists()[2][0].dtype
        x = x.reshape(math.prod(lead), self.n_agents, *self.in_shape).to(dtype)
        return x, lead

    def _image_input(self, x: Tensor) -> Tensor:
        """``[N, A, H, W, C]`` -> ``[N, A, C (+A id planes), H, W]`` divided by :attr:`input_scale` (pixels to
        [0, 1])."""
        x = x.permute(0, 1, 4, 2, 3) / self.input_scale
        if not self.uses_agent_id:
            return x
        n, a, _, height, width = x.shape
        planes = self.agent_eye.to(x.dtype)[:, :, None, None].expand(a, a, height, width)
        return torch.cat([x, planes.unsqueeze(0).expand(n, -1, -1, -1, -1)], dim=2)

    def _explicit_input(self, x: Tensor) -> Tensor:
        """``[N, A, *in_shape]`` -> the network input ``[N, A, F (+A)]`` or ``[N, A, C (+A), H, W]``."""
        if self.encoder == "cnn":
            return self._image_input(x)
        x = x.reshape(x.shape[0], self.n_agents, self._fc_in)
        if not self.uses_agent_id:
            return x
        ids = self.agent_eye.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([x, ids], dim=-1)

    def agent_input(self, x: Tensor) -> Tensor:
        """The input the parameter sets see, ids included.

        Args:
            x: ``[..., A, *in_shape]`` observations.

        Returns:
            ``[..., A, F + A]`` for vector inputs (``F = prod(in_shape)``, the
            last ``A`` entries the one-hot id when :attr:`uses_agent_id`), or
            ``[..., A, C + A, H, W]`` for images (pixels / 255, then the id planes).
        """
        flat, lead = self._flat(x)
        built = self._explicit_input(flat)
        return built.reshape(*lead, *built.shape[1:])

    # --------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        """``x [..., A, *in_shape]`` (float, or uint8 pixels for images) -> ``[..., A, out_dim]``."""
        flat, lead = self._flat(x)
        if self.strategy == "batched":
            out = self._forward_batched(flat)
        else:
            out = self._forward_per_set(flat, fork=self.strategy == "fork")
        return out.reshape(*lead, self.n_agents, self.out_dim)

    def _per_agent(self, stacked: Tensor) -> Tensor:
        """Stacked ``[P, ...]`` -> per-agent ``[A, ...]`` (no copy when each agent has its own set)."""
        return stacked if self._identity_sets else stacked.index_select(0, self.param_index)

    def _forward_batched(self, x: Tensor) -> Tensor:
        n, a = x.shape[0], self.n_agents
        if self.encoder == "cnn":
            h = self._image_input(x)
            c, height, width = h.shape[2:]
            conv_w, conv_b = self.param_lists()[:2]
            if self.n_param_sets == 1:
                h = h.reshape(n * a, c, height, width)
                for w, b, s, p in zip(conv_w, conv_b, self.conv_stride, self.conv_pad):
                    h = torch.relu(F.conv2d(h, w[0], b[0], s, p))
            else:
                # agents as conv groups: [N, A * C, H, W] with weights [A * out, C, k, k]
                h = h.reshape(n, a * c, height, width)
                for w, b, s, p in zip(conv_w, conv_b, self.conv_stride, self.conv_pad):
                    wa, ba = self._per_agent(w), self._per_agent(b)
                    h = torch.relu(F.conv2d(h, wa.flatten(0, 1), ba.flatten(), s, p, groups=a))
            h = h.reshape(n, a, self._fc_in)
        else:
            h = x.reshape(n, a, self._fc_in)
        return self._fc_batched(h)

    def _fc_batched(self, h: Tensor) -> Tensor:
        """Fully connected layers on ``h [N, A, F]`` -> ``[N, A, out_dim]``.

        With one parameter set the one-hot ids are concatenated to the input; with
        several, the id part of the first layer is applied as a per-agent bias (row
        ``F + a`` of agent ``a``'s weight), which equals concatenating the id.
        """
        n, a, f = h.shape
        weights, biases = self.param_lists()[2:]
        n_layers = len(weights)
        if self.n_param_sets == 1:
            # Rows of all agents as one batch of N*A, kept 3-D ([1, N*A, F]) so the [1, in, out]
            # weights are used whole: indexing w[0] would add a select (and, in backward, a
            # zero-filled copy) per tensor, which costs more than the matmuls of a small net.
            if self._fc_id_dim:
                h = torch.cat([h, self.agent_eye.to(h.dtype).expand(n, a, a)], dim=-1)
            # The layers as one stacked MLP of one tower (marl.nets.fused.stacked_mlp: one fused autograd node,
            # narrow heads as the transposed product, tanh in its sigmoid form): a shared MAPPO critic and actor
            # on 1,024 copies of simple_spread update faster than through autograd per layer (bench/README.md,
            # "Batched environments": python bench/bench_batched_ppo_parts.py ... model.critic=central).
            z = stacked_mlp(h.reshape(1, n * a, h.shape[-1]), weights, biases, self.activation)
            return z.reshape(n, a, -1)
        z = h.transpose(0, 1)  # [A, N, F]
        agents = torch.arange(a, device=h.device)
        for i, (w, b) in enumerate(zip(weights, biases)):
            wa, ba = self._per_agent(w), self._per_agent(b)
            if i == 0 and self._fc_id_dim:
                bias = ba + wa[agents, f + agents]
                z = torch.baddbmm(bias.unsqueeze(1), z, wa[:, :f])
            else:
                z = torch.baddbmm(ba.unsqueeze(1), z, wa)
            if i < n_layers - 1:
                z = activate(z, self.activation)
        return z.transpose(0, 1)

    def _forward_per_set(self, x: Tensor, fork: bool) -> Tensor:
        n = x.shape[0]
        h = self._explicit_input(x)
        if not self._sorted_sets:
            h = h.index_select(1, self.agent_order)
        chunks = h.split(self._set_sizes, dim=1)
        xs = [c.reshape(n * c.shape[1], *c.shape[2:]) for c in chunks]
        conv_w, conv_b, weights, biases = self.param_lists()
        args = (conv_w, conv_b, self.conv_stride, self.conv_pad, weights, biases)
        if fork:
            outs = _compiled_fork_sets()(xs, *args, self.activation)
        else:
            outs = [_set_forward(xp, *args, p, self.activation) for p, xp in enumerate(xs)]
        out = torch.cat([o.view(n, size, self.out_dim) for o, size in zip(outs, self._set_sizes)], dim=1)
        if not self._sorted_sets:
            out = out.index_select(1, self.agent_order_inverse)
        return out

    # ---------------------------------------------------------------- export
    @torch.no_grad()
    def set_module(self, p: int) -> nn.Sequential:
        """A standalone copy of parameter set ``p`` built from ``nn.Linear``/``nn.Conv2d``.

        It maps one agent's row of :meth:`agent_input` (``[B, F (+A)]`` or
        ``[B, C (+A), H, W]``) to ``[B, out_dim]``; useful to export one agent's
        network, and as an independent reference for the stacked computation.
        """
        if not 0 <= p < self.n_param_sets:
            raise IndexError(f"parameter set {p} out of range 0..{self.n_param_sets - 1}")
        layers: list[nn.Module] = []
        for w, b, s, pad in zip(self.conv_weights, self.conv_biases, self.conv_stride, self.conv_pad):
            conv = nn.Conv2d(w.shape[2], w.shape[1], w.shape[3], s, pad)
            conv.weight.copy_(w[p])
            conv.bias.copy_(b[p])
            layers += [conv, nn.ReLU()]
        if self.conv_weights:
            layers.append(nn.Flatten())
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            lin = nn.Linear(w.shape[1], w.shape[2])
            lin.weight.copy_(w[p].T)
            lin.bias.copy_(b[p])
            layers.append(lin)
            if i < len(self.weights) - 1:
                layers.append(make_activation(self.activation))
        return nn.Sequential(*layers).to(self.weights[0].device)
