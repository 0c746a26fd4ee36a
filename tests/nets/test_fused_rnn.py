"""The fused recurrent loop (one autograd node, hand-written BPTT) against the plain loop and finite differences."""

from __future__ import annotations

import pytest
import torch

from marl.nets.fused_rnn import fused_scan
from marl.nets.recurrent import StackedRNN, scan_together

SETS = {"shared": (0, 0, 0), "independent": (0, 1, 2), "selective": (1, 0, 1)}


def _masks(n_steps: int, n: int, a: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deaths and resets inside the sequence (a death carried over two steps; resets of one copy and of all)."""
    alive = torch.ones(n_steps, n, a, dtype=torch.bool)
    alive[2:4, 0, 1] = False
    alive[5, 1, 0] = False
    reset = torch.zeros(n_steps, n, a, dtype=torch.bool)
    reset[1, 0, 1] = True
    reset[4, :, 2] = True
    reset[6, 1, 0] = True
    return alive, reset


def _run(cores, xs, states, alive, reset, fused: bool, weights):
    """Outputs and the gradients of a loss on every output and final state, for all parameters, inputs and states."""
    together = scan_together(cores, xs, states, alive, reset, fused=fused)
    loss = sum((out * w_o).sum() + (h * w_h).sum() for (out, h), (w_o, w_h) in zip(together, weights))
    leaves = [p for core in cores for p in core.parameters()] + list(xs) + list(states)
    return [t for pair in together for t in pair], torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("sharing", list(SETS))
@pytest.mark.parametrize("n_cores", [1, 2])
@pytest.mark.parametrize("with_masks", [True, False])
def test_fused_equals_plain_outputs_and_gradients(cell: str, sharing: str, n_cores: int, with_masks: bool) -> None:
    torch.manual_seed(0)
    cores = [StackedRNN(cell, 5, 7, SETS[sharing]) for _ in range(n_cores)]
    with torch.no_grad():  # non-zero biases so that their gradients are checked too
        for core in cores:
            core.bias_ih.normal_()
            core.bias_hh.normal_()
    n_steps, n = 8, 3
    xs = [torch.randn(n_steps, n, 3, 5, requires_grad=True) for _ in cores]
    states = [torch.randn(n, 3, cores[0].state_size, requires_grad=True) for _ in cores]
    alive, reset = _masks(n_steps, n, 3) if with_masks else (None, None)
    weights = [(torch.randn(n_steps, n, 3, 7), torch.randn(n, 3, cores[0].state_size)) for _ in cores]
    plain_out, plain_grad = _run(cores, xs, states, alive, reset, False, weights)
    fused_out, fused_grad = _run(cores, xs, states, alive, reset, True, weights)
    for a, b in zip(plain_out, fused_out):
        torch.testing.assert_close(b, a, rtol=0, atol=0)  # the forward does the same float32 operations
    for a, b in zip(plain_grad, fused_grad):  # the backward sums in another order: float32 rounding
        assert a.abs().sum() > 0
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fused_scan_gradients_match_finite_differences(cell: str) -> None:
    torch.manual_seed(1)
    g, n_steps, rows, width = 2, 4, 2, 3
    gates = 3 if cell == "gru" else 4
    size = width * (2 if cell == "lstm" else 1)
    gi = torch.randn(g, n_steps, rows, gates * width, dtype=torch.float64, requires_grad=True)
    h = torch.randn(g, rows, size, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(g, width, gates * width, dtype=torch.float64, requires_grad=True)
    b_hh = torch.randn(g, gates * width, dtype=torch.float64, requires_grad=True)
    keep_alive = torch.rand(g, n_steps, rows, 1) > 0.3
    keep = (torch.rand(g, n_steps, rows, 1) > 0.25).double()
    for masks in ((keep_alive, keep), (None, None)):
        assert torch.autograd.gradcheck(lambda *t: fused_scan(cell, width, *t, *masks), (gi, h, w_hh, b_hh),
                                        fast_mode=True)


def _graph_nodes(t: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``t``."""
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(f for f, _ in node.next_functions)
    return names


def test_default_is_fused_with_gradients_and_plain_without() -> None:
    core = StackedRNN("lstm", 5, 7, (0, 0))
    x, state = torch.randn(4, 2, 2, 5), core.zero_state(2)
    out, _ = core(x, state)
    names = _graph_nodes(out)
    assert "_FusedScanBackward" in names and "SigmoidBackward0" not in names  # one node, no per-step gate nodes
    plain, _ = scan_together([core], [x], [state], fused=False)[0]
    assert "SigmoidBackward0" in _graph_nodes(plain)
    with torch.no_grad():
        ref, _ = core(x, state)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
