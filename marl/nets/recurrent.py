"""Recurrent per-agent networks: encoder -> GRU/LSTM core -> head, batched over the agent axis.

One :class:`RecurrentAgentNet` serves the ``A`` agents of a group, like
:class:`~marl.nets.AgentNet`, with the same parameter sets (``P``): shared (one core, the
one-hot agent id in its input), independent, or selective. The core's weights are stacked
per set (``weight_ih [P, in, G*H]``, ``weight_hh [P, H, G*H]``; ``G = 3`` gates for a GRU,
``4`` for an LSTM, in ``torch.nn.GRUCell`` / ``torch.nn.LSTMCell`` order) and run as one
batched matmul per time step over every agent (no per-agent loop): with one set, the
rows of all agents form one batch; with several, each agent's set is gathered
(``index_select``, whose backward sums the gradients of agents sharing a set).

Hidden state: one tensor ``[..., A, S]`` per network, ``S = H`` (GRU) or ``2H`` (LSTM,
``[h, c]`` concatenated). Over a sequence of ``L`` steps (:meth:`RecurrentAgentNet.forward`)
the state of step ``t + 1`` is::

    h_new = cell(x_t, h_t)                 # the head reads h_new (h part)
    h_{t+1} = where(alive_t, h_new, h_t)   # an agent that does not act keeps its state
    h_{t+1} = 0 where reset_t              # its episode (or its life) ended at step t

which is exactly what acting one step at a time does (the collector applies the same two
rules after each env step), so BPTT over a stored chunk recomputes the collection's outputs.

The input gates of all ``L`` steps are one matmul before the time loop; where gradients are
needed the loop runs as one fused autograd node with a hand-written backward
(:mod:`marl.nets.fused_rnn`), elsewhere (acting) as plain operations (:func:`scan_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from marl.nets.ensemble import AgentNet
from marl.nets.fused_rnn import fused_scan
from marl.nets.layers import HIDDEN_GAIN, activate, check_activation

CELLS = ("gru", "lstm")
"""Recurrent cells: ``gru`` (state ``[h]``) and ``lstm`` (state ``[h, c]``)."""

_GATES = {"gru": 3, "lstm": 4}


def gru_update(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """One GRU step from its gate pre-activations (the equations of ``torch.nn.GRUCell``).

    Args:
        gi: ``[..., 3H]`` input part ``x W_ih + b_ih``, gates in order ``r, z, n``.
        gh: ``[..., 3H]`` hidden part ``h W_hh + b_hh``.
        h: ``[..., H]`` previous state.

    Returns:
        ``h' = (1 - z) n + z h`` with ``r = s(i_r + h_r)``, ``z = s(i_z + h_z)``, ``n = tanh(i_n + r h_n)``.
    """
    # Written with few operations (each one an autograd node inside the BPTT loop): r and z in one
    # sigmoid, i_n + r h_n as one addcmul, (1 - z) n + z h as one lerp.
    width = h.shape[-1]
    gi_rz, gi_n = gi.split((2 * width, width), -1)  # split, not slices: one backward node, no zero-filled copies
    gh_rz, gh_n = gh.split((2 * width, width), -1)
    r, z = torch.sigmoid(gi_rz + gh_rz).chunk(2, -1)
    n = torch.tanh(torch.addcmul(gi_n, r, gh_n))
    return torch.lerp(n, h, z)


def lstm_update(gi: Tensor, gh: Tensor, state: Tensor) -> Tensor:
    """One LSTM step (the equations of ``torch.nn.LSTMCell``) on the concatenated state ``[..., 2H] = [h, c]``.

    Args:
        gi: ``[..., 4H]`` input part, gates in order ``i, f, g, o``.
        gh: ``[..., 4H]`` hidden part (computed from ``h``).
        state: ``[..., 2H]`` previous ``[h, c]``.

    Returns:
        ``[h', c']`` with ``c' = s(f) c + s(i) tanh(g)``, ``h' = s(o) tanh(c')``.
    """
    c = state.chunk(2, -1)[1]
    gates = gi + gh
    i, f, g, o = gates.chunk(4, -1)
    s_i, s_f, _, s_o = torch.sigmoid(gates).chunk(4, -1)  # one sigmoid for the three sigmoid gates
    c2 = torch.addcmul(s_f * c, s_i, torch.tanh(g))
    return torch.cat([s_o * torch.tanh(c2), c2], -1)


class StackedRNN(nn.Module):
    """A GRU or LSTM cell per parameter set, run over the agent axis with stacked weights.

    Args:
        cell: ``gru | lstm``.
        in_dim: input width ``F`` of one agent's row.
        hidden_size: ``H``.
        param_sets: agent index -> set index (``0..P-1``).

    Init: each gate block of ``weight_ih`` and ``weight_hh`` orthogonal (gain 1), biases zero.

    Example:
        >>> rnn = StackedRNN("gru", 5, 8, param_sets=(0, 1, 2))
        >>> out, h = rnn(torch.zeros(4, 2, 3, 5), rnn.zero_state(2))   # [L, N, A, F], state [N, A, S]
        >>> out.shape, h.shape, rnn.weight_ih.shape
        (torch.Size([4, 2, 3, 8]), torch.Size([2, 3, 8]), torch.Size([3, 5, 24]))
    """

    def __init__(self, cell: str, in_dim: int, hidden_size: int, param_sets: Sequence[int]) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell {cell!r}; choose one of {CELLS}")
        self.cell = cell
        self.in_dim = int(in_dim)
        self.hidden_size = int(hidden_size)
        self.param_sets = tuple(int(p) for p in param_sets)
        self.n_agents = len(self.param_sets)
        self.n_param_sets = max(self.param_sets) + 1
        self.state_size = self.hidden_size * (2 if cell == "lstm" else 1)
        g, h, p = _GATES[cell], self.hidden_size, self.n_param_sets
        self.weight_ih = nn.Parameter(torch.empty(p, self.in_dim, g * h))
        self.weight_hh = nn.Parameter(torch.empty(p, h, g * h))
        self.bias_ih = nn.Parameter(torch.zeros(p, g * h))
        self.bias_hh = nn.Parameter(torch.zeros(p, g * h))
        with torch.no_grad():
            for w in (self.weight_ih, self.weight_hh):
                for s in range(p):
                    for k in range(g):
                        block = torch.empty(h, w.shape[1])
                        nn.init.orthogonal_(block, 1.0)
                        w[s, :, k * h:(k + 1) * h].copy_(block.T)
        self._identity_sets = list(self.param_sets) == list(range(self.n_agents))
        self.register_buffer("param_index", torch.tensor(self.param_sets, dtype=torch.long), persistent=False)

    def extra_repr(self) -> str:
        return (f"cell={self.cell!r}, in_dim={self.in_dim}, hidden_size={self.hidden_size}, "
                f"n_agents={self.n_agents}, n_param_sets={self.n_param_sets}")

    def zero_state(self, *lead: int) -> Tensor:
        """A zero state ``[*lead, A, S]`` on the module's device."""
        return torch.zeros(*lead, self.n_agents, self.state_size, device=self.weight_hh.device,
                           dtype=self.weight_hh.dtype)

    # Rows layout: [G, L, R, F] with G = 1, R = N*A (one set: all agents in one batch) or
    # G = A, R = N (one gathered weight per agent).
    def _to_rows(self, x: Tensor) -> Tensor:
        """``[L, N, A, F]`` -> ``[G, L, R, F]``."""
        n_steps, n, a = x.shape[:3]
        if self.n_param_sets == 1:
            return x.reshape(1, n_steps, n * a, *x.shape[3:])
        return x.movedim(2, 0)

    def _from_rows(self, x: Tensor, n: int) -> Tensor:
        """``[G, L, R, F]`` -> ``[L, N, A, F]``."""
        if self.n_param_sets == 1:
            return x.reshape(x.shape[1], n, self.n_agents, x.shape[-1])
        return x.movedim(0, 2)

    def _weights(self, w: Tensor) -> Tensor:
        """Stacked ``[P, ...]`` -> one slice per row group ``[G, ...]``."""
        if self.n_param_sets == 1 or self._identity_sets:
            return w
        return w.index_select(0, self.param_index)

    def forward(
        self, x: Tensor, state: Tensor, alive: Tensor | None = None, reset: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run ``L`` steps.

        Args:
            x: ``[L, N, A, F]`` inputs.
            state: ``[N, A, S]`` state before step 0.
            alive: ``[L, N, A]`` bool; where false the state is carried unchanged (``None`` = all alive).
            reset: ``[L, N, A]`` bool; where true the state is zeroed after the step (``None`` = never).

        Returns:
            ``(out [L, N, A, H], state [N, A, S])``: ``out[t]`` is the cell's new ``h`` at step ``t``
            (before the alive/reset rules), ``state`` the state after step ``L - 1`` (after them).
        """
        (out, state), = scan_together([self], [x], [state], alive, reset)
        return out, state

    @torch.no_grad()
    def set_cell(self, p: int) -> nn.GRUCell | nn.LSTMCell:
        """A standalone ``torch.nn.GRUCell`` / ``LSTMCell`` copy of parameter set ``p`` (export, reference)."""
        if not 0 <= p < self.n_param_sets:
            raise IndexError(f"parameter set {p} out of range 0..{self.n_param_sets - 1}")
        cls = nn.GRUCell if self.cell == "gru" else nn.LSTMCell
        cell = cls(self.in_dim, self.hidden_size).to(self.weight_ih.device)
        cell.weight_ih.copy_(self.weight_ih[p].T)
        cell.weight_hh.copy_(self.weight_hh[p].T)
        cell.bias_ih.copy_(self.bias_ih[p])
        cell.bias_hh.copy_(self.bias_hh[p])
        return cell


def scan_rows(
    cell: str, hidden_size: int, gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor,
    keep_alive: Tensor | None, keep: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """The plain time loop on the rows layout (autograd records every step): ``gi [G, L, R, G*H]`` input gates,
    ``h [G, R, S]`` state, ``w_hh [G, H, G*H]``, ``b_hh [G, G*H]``, masks ``[G, L, R, 1]`` (``keep_alive`` bool,
    ``keep`` float, 0 where the state resets) -> ``(out [G, L, R, H], state [G, R, S])``.
    :func:`marl.nets.fused_rnn.fused_scan` computes the same as one autograd node."""
    update = gru_update if cell == "gru" else lstm_update
    lstm = cell == "lstm"
    b_hh = b_hh.unsqueeze(1)
    outs = []
    # unbind, not gi[:, t]: indexing one step per iteration would zero-fill a gradient of all L steps in each
    # step's backward (quadratic in L; it was more than half of the loop's time at L = 25)
    for t, gi_t in enumerate(gi.unbind(1)):
        gh = torch.baddbmm(b_hh, h[..., :hidden_size] if lstm else h, w_hh)
        new = update(gi_t, gh, h)
        outs.append(new[..., :hidden_size] if lstm else new)
        h = new if keep_alive is None else torch.where(keep_alive[:, t], new, h)
        if keep is not None:
            h = h * keep[:, t]
    return torch.stack(outs, 1), h


def scan_together(
    rnns: Sequence[StackedRNN], xs: Sequence[Tensor], states: Sequence[Tensor], alive: Tensor | None = None,
    reset: Tensor | None = None, *, fused: bool | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """Run several :class:`StackedRNN` of one shape over their own inputs with one time loop.

    The cores (e.g. an actor's and a critic's) must have the same cell, widths and parameter sets;
    their weights and rows are concatenated along the row-group axis, so each time step is one
    batched matmul and one set of gate operations for all of them instead of one per core. The BPTT
    loop dominates a recurrent update; forward + backward of a GRU actor and critic (64 wide) over 8
    chunks of 25 steps of 3 agents (simple_spread's shapes) took 1.25-1.28x less CPU time this way
    than with one loop per core (1.33x for LSTMs; 10 interleaved repeats, one thread). The result
    equals calling each core on its input (``tests/nets/test_recurrent.py``).

    Args:
        rnns: the cores; xs: ``[L, N, A, F]`` per core; states: ``[N, A, S]`` per core.
        alive / reset: ``[L, N, A]`` masks shared by all cores (see :meth:`StackedRNN.forward`).
        fused: run the loop as one autograd node (:func:`marl.nets.fused_rnn.fused_scan`, same values, gradients
            equal to float32 rounding) or as plain operations (:func:`scan_rows`); ``None`` (default) = fused when
            gradients are needed (where it pays: ``bench/README.md``), plain otherwise.

    Returns:
        ``(out [L, N, A, H], state [N, A, S])`` per core.
    """
    first = rnns[0]
    for rnn in rnns[1:]:
        if (rnn.cell, rnn.in_dim, rnn.hidden_size, rnn.param_sets) != (first.cell, first.in_dim, first.hidden_size,
                                                                      first.param_sets):
            raise ValueError("scan_together needs cores of one cell, widths and parameter sets")
    n_steps, n, a = xs[0].shape[:3]
    for x in xs:
        if tuple(x.shape) != (n_steps, n, first.n_agents, first.in_dim):
            raise ValueError(f"StackedRNN expects input [L, N, A={first.n_agents}, {first.in_dim}], "
                             f"got {tuple(x.shape)}")
    k = len(rnns)

    def cat(tensors: list[Tensor]) -> Tensor:
        return tensors[0] if k == 1 else torch.cat(tensors, 0)

    w_ih = cat([r._weights(r.weight_ih) for r in rnns])
    w_hh = cat([r._weights(r.weight_hh) for r in rnns])
    b_ih = cat([r._weights(r.bias_ih) for r in rnns])
    b_hh = cat([r._weights(r.bias_hh) for r in rnns])
    rows = cat([first._to_rows(x.to(w_ih.dtype)) for x in xs])  # [k*G, L, R, F]
    g, r = rows.shape[0], rows.shape[2]
    # input gates of every step at once: [k*G, L*R, F] @ [k*G, F, G*H]
    gi = torch.baddbmm(b_ih.unsqueeze(1), rows.reshape(g, n_steps * r, first.in_dim), w_ih).view(g, n_steps, r, -1)
    h = cat([first._to_rows(st.unsqueeze(0))[:, 0] for st in states])  # [k*G, R, S]
    keep_alive = None if alive is None else cat([first._to_rows(alive.unsqueeze(-1))] * k)
    keep = None if reset is None else cat([first._to_rows((~reset).unsqueeze(-1).to(h.dtype))] * k)
    if fused is None:
        fused = torch.is_grad_enabled() and any(t.requires_grad for t in (gi, h, w_hh, b_hh))
    scan = fused_scan if fused else scan_rows
    out, h = scan(first.cell, first.hidden_size, gi, h, w_hh, b_hh, keep_alive, keep)
    return [(first._from_rows(o, n), first._from_rows(s.unsqueeze(1), n)[0])
            for o, s in zip(out.chunk(k, 0), h.chunk(k, 0))]


class RecurrentAgentNet(nn.Module):
    """Per-agent recurrent network: ``[L, N, A, *in_shape]`` and a state ``[N, A, S]`` -> ``[L, N, A, out_dim]``.

    Layout per parameter set: encoder (:class:`~marl.nets.AgentNet` with widths ``hidden[:-1]``
    and output ``hidden[-1]``, i.e. the feed-forward MLP or the CNN for images without its
    output layer), activation, :class:`StackedRNN` core of width ``rnn_hidden`` (its input
    also holds the one-hot agent id when the encoder does), then a linear head.

    Args:
        in_shape: one agent's input shape.
        out_dim: output width.
        n_agents: ``A``.
        cell: ``gru | lstm``.
        rnn_hidden: ``H``, the core's width.
        hidden: encoder widths (at least one).
        activation: after each encoder layer; default as :class:`~marl.nets.AgentNet`.
        param_sets: agent -> set map (``None`` = shared).
        agent_id: one-hot ids where a set serves several agents.
        strategy: the encoder's and head's forward strategy (the core is always batched).
        encoder: ``auto | mlp | cnn``.
        input_scale: the CNN divides its input by this (see :class:`~marl.nets.AgentNet`).
        out_gain: orthogonal gain of the head.
        hidden_gain: orthogonal gain of the encoder layers.

    Attributes:
        state_size: ``S`` (``H`` or ``2H``).

    Example:
        >>> net = RecurrentAgentNet((6,), 4, 3, cell="lstm", rnn_hidden=8, hidden=(16,))
        >>> out, h = net(torch.zeros(5, 2, 3, 6), net.zero_state(2))
        >>> out.shape, h.shape
        (torch.Size([5, 2, 3, 4]), torch.Size([2, 3, 16]))
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_dim: int,
        n_agents: int,
        *,
        cell: str = "gru",
        rnn_hidden: int = 64,
        hidden: Sequence[int] = (64,),
        activation: str | None = None,
        param_sets: Sequence[int] | None = None,
        agent_id: bool = True,
        strategy: str = "batched",
        encoder: str = "auto",
        out_gain: float = 1.0,
        hidden_gain: float = HIDDEN_GAIN,
        input_scale: float = 255.0,
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("a recurrent network needs at least one encoder width in hidden (e.g. [64])")
        self.encoder = AgentNet(in_shape, hidden[-1], n_agents, hidden=hidden[:-1], activation=activation,
                                param_sets=param_sets, agent_id=agent_id, strategy=strategy, encoder=encoder,
                                out_gain=hidden_gain, hidden_gain=hidden_gain, input_scale=input_scale)
        self.activation = check_activation(activation or self.encoder.activation)
        sets = self.encoder.param_sets
        self.id_dim = n_agents if self.encoder.uses_agent_id else 0
        self.core = StackedRNN(cell, hidden[-1] + self.id_dim, rnn_hidden, sets)
        self.head = AgentNet((int(rnn_hidden),), out_dim, n_agents, hidden=(), param_sets=sets, agent_id=False,
                             strategy=strategy, out_gain=out_gain)
        self.in_shape = self.encoder.in_shape
        self.n_agents = int(n_agents)
        self.out_dim = int(out_dim)
        self.state_size = self.core.state_size
        self.register_buffer("agent_eye", torch.eye(n_agents), persistent=False)

    def zero_state(self, *lead: int) -> Tensor:
        """A zero state ``[*lead, A, S]``."""
        return self.core.zero_state(*lead)

    def forward(
        self, x: Tensor, state: Tensor, alive: Tensor | None = None, reset: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``x [L, N, A, *in_shape]``, ``state [N, A, S]`` -> ``(out [L, N, A, out_dim], state [N, A, S])``.

        ``alive`` / ``reset`` ``[L, N, A]`` bool as in :meth:`StackedRNN.forward` (the module docstring
        gives the rule). The encoder and the head run on all ``L * N`` rows at once; only the core
        steps through time.
        """
        out, state = self.core(self.features(x), state, alive, reset)
        return self.head(out), state

    def features(self, x: Tensor) -> Tensor:
        """The core's input ``[L, N, A, hidden[-1] (+A ids)]``: the activated encoder output of ``x [L, N, A, ...]``."""
        n_steps, n = x.shape[:2]
        feats = activate(self.encoder(x), self.activation)
        if self.id_dim:
            ids = self.agent_eye.to(feats.dtype).expand(n_steps, n, self.n_agents, self.n_agents)
            feats = torch.cat([feats, ids], -1)
        return feats
