"""Mixing networks of value decomposition: per-agent Q values ``[B, A]`` -> one team value ``[B]``.

* :class:`VDNMixer` (Sunehag et al. 2018, "Value-Decomposition Networks for Cooperative
  Multi-Agent Learning"): ``Q_tot = sum_a Q_a``; no parameters.
* :class:`QMixer` (Rashid et al. 2018, "QMIX: Monotonic Value Function Factorisation for Deep
  Multi-Agent Reinforcement Learning", section 4.2): a two-layer mixing network whose weights
  are produced by hypernetworks of the global state ``s`` and made non-negative by ``abs``, so
  ``dQ_tot / dQ_a >= 0`` for every agent and every state (the per-agent greedy actions are then
  greedy for ``Q_tot``)::

      hidden = elu(Q @ |W_1(s)| + b_1(s))           W_1(s) [A, E], b_1(s) [E]
      Q_tot  = hidden @ |W_2(s)| + V(s)              W_2(s) [E, 1], V(s) = Linear(ReLU(Linear(s)))

  The biases are not constrained (they do not depend on ``Q``); ``V(s)`` is the state-dependent
  final bias of the paper.

Both take ``alive [B, A]``: an agent that is not alive (dead, or terminated at the bootstrap
state) enters the mixer as ``Q_a = 0`` (it contributes nothing to a sum, and the same constant
input to the monotonic mixer whatever it would choose).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from marl.nets.layers import HIDDEN_GAIN, orthogonal_init


def masked_q(q: Tensor, alive: Tensor | None) -> Tensor:
    """``q [B, A]`` with the entries of agents that are not alive (``alive [B, A]`` bool) set to 0."""
    return q if alive is None else q * alive.to(q.dtype)


class VDNMixer(nn.Module):
    """``Q_tot [B] = sum_a alive_a * Q_a``; no parameters (the state is ignored)."""

    def forward(self, q: Tensor, state: Tensor | None = None, alive: Tensor | None = None) -> Tensor:
        """Args: ``q [B, A]``, ``state`` unused, ``alive [B, A]`` bool or ``None`` (all alive). Returns ``[B]``."""
        del state
        return masked_q(q, alive).sum(dim=-1)


HYPERNET_OUT_GAIN = 0.1
"""Orthogonal gain of the weight hypernetworks' output layers. With gain 1 a fresh mixer on
simple_spread's state had ``dQ_tot / dQ_a`` of about 6 per agent: the agents' Q values stayed near 0, the
max over next actions was amplified into ``Q_tot`` and the team value drifted to +5 while every reward was
negative (returns fell below the random policy's); with 0.1 the gain starts near 0.4 and grows as the
mixer learns, and QMIX learns as fast as VDN there (``bench/bench_value_decomposition.py``)."""


def hypernet(state_dim: int, out_dim: int, layers: int, embed: int) -> nn.Module:
    """A hypernetwork ``s [B, S] -> [B, out_dim]``: one linear layer, or two with a ReLU between
    (``layers=2``, hidden width ``embed``); output layer initialised with :data:`HYPERNET_OUT_GAIN`."""
    if layers == 1:
        return orthogonal_init(nn.Linear(state_dim, out_dim), HYPERNET_OUT_GAIN)
    if layers == 2:
        return nn.Sequential(orthogonal_init(nn.Linear(state_dim, embed), HIDDEN_GAIN), nn.ReLU(),
                             orthogonal_init(nn.Linear(embed, out_dim), HYPERNET_OUT_GAIN))
    raise ValueError(f"hypernet layers must be 1 or 2, got {layers}")


class QMixer(nn.Module):
    """QMIX's monotonic mixing network (Rashid et al. 2018), conditioned on the global state.

    Args:
        n_agents: ``A``, the agents mixed (every group of the team, in group order).
        state_dim: ``S``, width of the (flat) global state.
        embed: ``E``, width of the mixing network's hidden layer (paper: 32).
        hypernet_layers: 1 or 2 layers in the weight hypernetworks (paper: 1; PyMARL's default: 2).
        hypernet_embed: hidden width of two-layer weight hypernetworks (PyMARL: 64).
    """

    def __init__(self, n_agents: int, state_dim: int, embed: int = 32, hypernet_layers: int = 2,
                 hypernet_embed: int = 64) -> None:
        super().__init__()
        self.n_agents, self.embed = int(n_agents), int(embed)
        self.hyper_w1 = hypernet(state_dim, self.n_agents * self.embed, hypernet_layers, hypernet_embed)
        self.hyper_w2 = hypernet(state_dim, self.embed, hypernet_layers, hypernet_embed)
        self.hyper_b1 = orthogonal_init(nn.Linear(state_dim, self.embed), 1.0)
        self.value = nn.Sequential(orthogonal_init(nn.Linear(state_dim, self.embed), HIDDEN_GAIN), nn.ReLU(),
                                   orthogonal_init(nn.Linear(self.embed, 1), 1.0))

    def forward(self, q: Tensor, state: Tensor, alive: Tensor | None = None) -> Tensor:
        """``Q_tot [B]`` of ``q [B, A]`` in states ``state [B, S]`` (``alive [B, A]``: others enter as 0)."""
        b = q.shape[0]
        s = state.reshape(b, -1).to(q.dtype)
        w1 = self.hyper_w1(s).abs().view(b, self.n_agents, self.embed)
        hidden = F.elu(masked_q(q, alive).unsqueeze(1).bmm(w1).squeeze(1) + self.hyper_b1(s))  # [B, E]
        w2 = self.hyper_w2(s).abs()  # [B, E]
        return (hidden * w2).sum(dim=-1) + self.value(s).squeeze(-1)
