"""The recurrent time loop as one fused autograd node with a hand-written BPTT backward.

:func:`fused_scan` computes what :func:`marl.nets.recurrent.scan_rows` computes (the GRU or
LSTM step of :mod:`marl.nets.recurrent` over ``L`` steps, with its carry rules: the state kept
where an agent is not alive, zeroed where it resets), but as a single
:class:`torch.autograd.Function`: the forward runs the same operations without recording a
graph and saves the gate activations of every step; the backward walks the steps in reverse
with the derivatives written out, collects the hidden-gate gradients of all steps and forms the
weight gradient ``dW_hh`` as one batched matmul over all ``L`` steps at the end.

Why: for the project's small cores (64 wide, a few hundred rows) the loop's cost is per
operation (dispatch and autograd bookkeeping, a few microseconds each) more than arithmetic. The
plain loop records about 10 autograd nodes per step and replays them, with a weight-gradient
matmul per step; this node records none and does one. Gain: 1.07-1.36x less CPU for the loop's
forward + backward at the shipped shapes, a few percent of a whole training
(``bench/README.md``, ``bench/bench_rnn_scan.py``).

Numerics: the forward performs the same float32 operations in the same order as the plain loop
(equal outputs); the backward sums some terms in another order (e.g. ``dW_hh`` over all steps in
one matmul instead of step by step), so gradients agree with autograd's to float32 rounding
(``tests/nets/test_fused_rnn.py`` checks both against the plain loop). The node is differentiable
once (no double backward).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_sigmoid_backward = torch.ops.aten.sigmoid_backward
_tanh_backward = torch.ops.aten.tanh_backward


def _step_views(mask: Tensor | None, n_steps: int) -> list[Tensor | None]:
    """A ``[G, L, R, 1]`` carry mask as one ``[G, R, 1]`` view per step (``None`` at every step without a mask)."""
    return [None] * n_steps if mask is None else list(mask.unbind(1))


def _gru_forward(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, keep_alive: list[Tensor | None],
                 keep: list[Tensor | None]) -> tuple[Tensor, Tensor, list[list[Tensor]]]:
    """GRU loop: the same operations as :func:`marl.nets.recurrent.gru_update` per step.
    Returns ``(out [G, L, R, H], state [G, R, H], saved)``, ``saved`` the per-step tensors the backward reads
    (lists over steps: input state, ``[r, z]``, ``n``, ``h_n``)."""
    width = h.shape[-1]
    b = b_hh.unsqueeze(1)
    hs, rzs, ns, ghns, outs = [], [], [], [], []
    for t, gi_t in enumerate(gi.unbind(1)):
        gh = torch.baddbmm(b, h, w_hh)
        gi_rz, gi_n = gi_t.split((2 * width, width), -1)
        gh_rz, gh_n = gh.split((2 * width, width), -1)
        rz = torch.sigmoid(gi_rz + gh_rz)
        r, z = rz.chunk(2, -1)
        n = torch.tanh(torch.addcmul(gi_n, r, gh_n))
        new = torch.lerp(n, h, z)
        hs.append(h)
        rzs.append(rz)
        ns.append(n)
        ghns.append(gh_n)
        outs.append(new)
        h = new if keep_alive[t] is None else torch.where(keep_alive[t], new, h)
        if keep[t] is not None:
            h = h * keep[t]
    return torch.stack(outs, 1), h, [hs, rzs, ns, ghns]


def _lstm_forward(gi: Tensor, state: Tensor, w_hh: Tensor, b_hh: Tensor, keep_alive: list[Tensor | None],
                  keep: list[Tensor | None]) -> tuple[Tensor, Tensor, list[list[Tensor]]]:
    """LSTM loop: the same operations as :func:`marl.nets.recurrent.lstm_update` per step; ``saved`` holds per
    step the input state, the sigmoid of all gates, ``tanh(g)`` and ``tanh(c')``."""
    b = b_hh.unsqueeze(1)
    states, sigs, tgs, tcs, outs = [], [], [], [], []
    for t, gi_t in enumerate(gi.unbind(1)):
        h, c = state.chunk(2, -1)
        gates = gi_t + torch.baddbmm(b, h, w_hh)
        g = gates.chunk(4, -1)[2]
        sig = torch.sigmoid(gates)
        s_i, s_f, _, s_o = sig.chunk(4, -1)
        tg = torch.tanh(g)
        c2 = torch.addcmul(s_f * c, s_i, tg)
        tc = torch.tanh(c2)
        h2 = s_o * tc
        new = torch.cat([h2, c2], -1)
        states.append(state)
        sigs.append(sig)
        tgs.append(tg)
        tcs.append(tc)
        outs.append(h2)
        state = new if keep_alive[t] is None else torch.where(keep_alive[t], new, state)
        if keep[t] is not None:
            state = state * keep[t]
    return torch.stack(outs, 1), state, [states, sigs, tgs, tcs]


def _carry_backward(dstate: Tensor, keep_alive: Tensor | None, keep: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Gradient at the state leaving a step, with that step's masks ``[G, R, 1]``
    -> ``(d new state of the cell, d kept old state or None)``."""
    if keep is not None:
        dstate = dstate * keep
    if keep_alive is None:
        return dstate, None
    d_new = torch.where(keep_alive, dstate, 0.0)
    return d_new, dstate - d_new



def _gru_backward(grad_out: Tensor, grad_state: Tensor, w_hh: Tensor, saved: list[list[Tensor]],
                  keep_alive: list[Tensor | None], keep: list[Tensor | None]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> ``(d gi [G, L, R, 3H], d h0 [G, R, H], d w_hh [G, H, 3H], d b_hh [G, 3H])``."""
    hs, rzs, ns, ghns = saved
    n_steps = len(hs)
    g, rows, width = hs[0].shape
    w_t = w_hh.transpose(1, 2)
    dghs: list[Tensor] = [None] * n_steps  # type: ignore[list-item]  # d (h W_hh + b_hh) per step
    dans: list[Tensor] = [None] * n_steps  # type: ignore[list-item]  # d (i_n + r h_n) per step
    dstate = grad_state
    for t, d_out, alive_t, keep_t in zip(range(n_steps - 1, -1, -1), reversed(grad_out.unbind(1)),
                                         reversed(keep_alive), reversed(keep)):
        d_new, carried = _carry_backward(dstate, alive_t, keep_t)
        d_new = d_new + d_out
        rz, n, h = rzs[t], ns[t], hs[t]
        r, z = rz.chunk(2, -1)
        # new = n + z (h - n)
        d_h = d_new * z
        d_an = _tanh_backward(d_new - d_h, n)  # d (i_n + r h_n)
        d_arz = _sigmoid_backward(torch.cat([d_an * ghns[t], d_new * (h - n)], -1), rz)
        dgh_t = torch.cat([d_arz, d_an * r], -1)
        dghs[t] = dgh_t
        dans[t] = d_an
        dstate = torch.baddbmm(d_h, dgh_t, w_t)
        if carried is not None:
            dstate = dstate + carried
    dgh = torch.stack(dghs, 1)  # [G, L, R, 3H]
    dgi = torch.cat([dgh[..., :2 * width], torch.stack(dans, 1)], -1)  # d i_rz = d h_rz; d i_n from its list
    dgh = dgh.view(g, n_steps * rows, 3 * width)
    dw = torch.bmm(torch.cat(hs, 1).transpose(1, 2), dgh)
    return dgi, dstate, dw, dgh.sum(1)


def _lstm_backward(grad_out: Tensor, grad_state: Tensor, w_hh: Tensor, saved: list[list[Tensor]],
                   keep_alive: list[Tensor | None], keep: list[Tensor | None]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> ``(d gi [G, L, R, 4H], d state0 [G, R, 2H], d w_hh [G, H, 4H], d b_hh [G, 4H])``."""
    states, sigs, tgs, tcs = saved
    n_steps = len(states)
    width = states[0].shape[-1] // 2
    w_t = w_hh.transpose(1, 2)
    dgates: list[Tensor] = [None] * n_steps  # type: ignore[list-item]
    dstate = grad_state
    for t, d_out, alive_t, keep_t in zip(range(n_steps - 1, -1, -1), reversed(grad_out.unbind(1)),
                                         reversed(keep_alive), reversed(keep)):
        d_new, carried = _carry_backward(dstate, alive_t, keep_t)
        d_h2, d_c2 = d_new.chunk(2, -1)
        d_h2 = d_h2 + d_out
        sig, tg, tc = sigs[t], tgs[t], tcs[t]
        s_i, s_f, _, s_o = sig.chunk(4, -1)
        c = states[t][..., width:]
        # h2 = s_o tanh(c2), c2 = s_f c + s_i tanh(g)
        d_c2 = d_c2 + _tanh_backward(d_h2 * s_o, tc)
        d_if = _sigmoid_backward(torch.cat([d_c2 * tg, d_c2 * c], -1), sig[..., :2 * width])
        d_g = _tanh_backward(d_c2 * s_i, tg)
        d_o = _sigmoid_backward(d_h2 * tc, s_o)
        dg_t = torch.cat([d_if, d_g, d_o], -1)
        dgates[t] = dg_t
        dstate = torch.cat([torch.bmm(dg_t, w_t), d_c2 * s_f], -1)
        if carried is not None:
            dstate = dstate + carried
    dg = torch.cat(dgates, 1)  # [G, L*R, 4H]
    h_in = torch.cat([s[..., :width] for s in states], 1)
    dw = torch.bmm(h_in.transpose(1, 2), dg)
    return torch.stack(dgates, 1), dstate, dw, dg.sum(1)


class _FusedScan(torch.autograd.Function):
    """The fused node: the forward of the whole loop and its hand-written backward."""

    @staticmethod
    def forward(ctx, cell: str, gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor,  # type: ignore[override]
                keep_alive: Tensor | None, keep: Tensor | None) -> tuple[Tensor, Tensor]:
        run = _gru_forward if cell == "gru" else _lstm_forward
        n_steps = gi.shape[1]
        masks = _step_views(keep_alive, n_steps), _step_views(keep, n_steps)
        out, state, saved = run(gi, h, w_hh, b_hh, *masks)
        ctx.cell = cell
        ctx.save_for_backward(w_hh)
        # per-step intermediates and mask views (none of them needs a gradient): held on ctx
        ctx.steps, ctx.masks = saved, masks
        return out, state

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, grad_state: Tensor):  # type: ignore[override]
        w_hh, = ctx.saved_tensors
        run = _gru_backward if ctx.cell == "gru" else _lstm_backward
        dgi, dh, dw, db = run(grad_out, grad_state, w_hh, ctx.steps, *ctx.masks)
        return None, dgi, dh, dw, db, None, None


def fused_scan(cell: str, hidden_size: int, gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor,
               keep_alive: Tensor | None, keep: Tensor | None) -> tuple[Tensor, Tensor]:
    """The time loop of :func:`marl.nets.recurrent.scan_rows` as one autograd node (same arguments, same result).

    Args:
        cell: ``gru | lstm``; hidden_size: ``H``.
        gi: ``[G, L, R, g*H]`` input gates ``x W_ih + b_ih`` of every step.
        h: ``[G, R, S]`` state before step 0; w_hh: ``[G, H, g*H]``; b_hh: ``[G, g*H]``.
        keep_alive: ``[G, L, R, 1]`` bool or ``None``; keep: ``[G, L, R, 1]`` float (0 where the state resets) or
            ``None``.

    Returns:
        ``(out [G, L, R, H], state [G, R, S])``.
    """
    if h.shape[-1] != (2 if cell == "lstm" else 1) * hidden_size:
        raise ValueError(f"fused_scan: state width {h.shape[-1]} does not fit a {cell} of {hidden_size}")
    return _FusedScan.apply(cell, gi, h, w_hh, b_hh, keep_alive, keep)
