"""Recurrent nets: the stacked cells against torch's cells per set; a chunk forward against a step loop."""

from __future__ import annotations

import pytest
import torch

from marl.multi_agent.groups import param_sets_for
from marl.nets.recurrent import RecurrentAgentNet, StackedRNN, scan_together

AGENTS = ["a_0", "a_1", "a_2"]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("sets", [(0, 0, 0), (0, 1, 2), (1, 0, 1)])
def test_stacked_cell_equals_torch_cell_per_set(cell: str, sets: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    rnn = StackedRNN(cell, 5, 7, sets)
    with torch.no_grad():  # non-zero biases so that their placement is checked too
        for b in (rnn.bias_ih, rnn.bias_hh):
            b.normal_()
    x = torch.randn(1, 4, 3, 5)
    state = torch.randn(4, 3, rnn.state_size)
    out, new = rnn(x, state)
    for a, p in enumerate(sets):
        ref = rnn.set_cell(p)
        if cell == "gru":
            h = ref(x[0, :, a], state[:, a])
            torch.testing.assert_close(new[:, a], h, rtol=0, atol=1e-6)
        else:
            h, c = ref(x[0, :, a], (state[:, a, :7], state[:, a, 7:]))
            torch.testing.assert_close(new[:, a], torch.cat([h, c], -1), rtol=0, atol=1e-6)
        torch.testing.assert_close(out[0, :, a], new[:, a, :7], rtol=0, atol=0)


def step_loop(net: RecurrentAgentNet, x, state, alive, reset):
    """Oracle: one step at a time, the carry rules written out per agent and copy in Python."""
    outs = []
    h = state.clone()
    n_steps, n, a = x.shape[:3]
    for t in range(n_steps):
        out, new = net(x[t:t + 1], h)
        outs.append(out[0])
        nxt = h.clone()
        for e in range(n):
            for k in range(a):
                if alive[t, e, k]:
                    nxt[e, k] = new[e, k]
                if reset[t, e, k]:
                    nxt[e, k] = 0.0
        h = nxt
    return torch.stack(outs), h


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("sharing", ["shared", "independent"])
def test_chunk_forward_equals_step_loop(cell: str, sharing: str) -> None:
    torch.manual_seed(1)
    net = RecurrentAgentNet((6,), 4, 3, cell=cell, rnn_hidden=8, hidden=(16, 12),
                            param_sets=param_sets_for(sharing, AGENTS))
    n_steps, n = 7, 5
    x = torch.randn(n_steps, n, 3, 6)
    state = torch.randn(n, 3, net.state_size)
    alive = torch.rand(n_steps, n, 3) > 0.2
    reset = torch.rand(n_steps, n, 3) > 0.8
    out, h = net(x, state, alive, reset)
    ref_out, ref_h = step_loop(net, x, state, alive, reset)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-6)
    torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-6)
    # gradients flow through the whole chunk: the first input moves the last output
    x.requires_grad_(True)
    out, _ = net(x, state)
    out[-1].sum().backward()
    assert x.grad[0].abs().sum() > 0


def test_reset_zeroes_the_state_at_exactly_that_step() -> None:
    torch.manual_seed(2)
    net = RecurrentAgentNet((3,), 2, 2, rnn_hidden=6, hidden=(8,))
    x = torch.randn(6, 1, 2, 3)
    state = torch.randn(1, 2, net.state_size)
    reset = torch.zeros(6, 1, 2, dtype=torch.bool)
    reset[2, 0, 1] = True  # agent 1's episode ends at step 2
    out, _ = net(x, state, None, reset)
    fresh, _ = net(x[3:], net.zero_state(1))  # a new episode from step 3 on
    torch.testing.assert_close(out[3:, :, 1], fresh[:, :, 1], rtol=0, atol=1e-6)
    unreset, _ = net(x, state)
    torch.testing.assert_close(out[:3], unreset[:3], rtol=0, atol=1e-6)  # steps up to the end are unchanged
    assert not torch.allclose(out[3, :, 1], unreset[3, :, 1])
    torch.testing.assert_close(out[:, :, 0], unreset[:, :, 0], rtol=0, atol=1e-6)  # the other agent keeps its state


def test_not_alive_keeps_state_and_death_does_not_leak() -> None:
    """A waiting agent's state is carried unchanged; a dead one (reset at its death) starts its next life at zero."""
    torch.manual_seed(3)
    net = RecurrentAgentNet((3,), 2, 2, cell="gru", rnn_hidden=5, hidden=(8,), param_sets=(0, 1))
    x = torch.randn(6, 1, 2, 3)
    alive = torch.ones(6, 1, 2, dtype=torch.bool)
    alive[2:4, 0, 0] = False  # waiting for two steps
    _, h_wait = net(x[:4], net.zero_state(1), alive[:4])
    _, h_two = net(x[:2], net.zero_state(1))
    torch.testing.assert_close(h_wait[:, 0], h_two[:, 0], rtol=0, atol=1e-6)
    reset = torch.zeros(6, 1, 2, dtype=torch.bool)
    reset[1, 0, 0] = True  # dies at step 1, dead (not alive) at 2-3, a new life at 4
    out, _ = net(x, torch.randn(1, 2, net.state_size), alive, reset)
    fresh, _ = net(x[4:], net.zero_state(1))
    torch.testing.assert_close(out[4:, :, 0], fresh[:, :, 0], rtol=0, atol=1e-6)


def test_independent_sets_get_their_own_gradients() -> None:
    torch.manual_seed(4)
    net = RecurrentAgentNet((3,), 2, 3, rnn_hidden=4, hidden=(8,), param_sets=(0, 1, 1))
    x = torch.randn(4, 2, 3, 3)
    out, _ = net(x, net.zero_state(2))
    out[:, :, 0].sum().backward()  # only agent 0 (set 0) in the loss
    assert net.core.weight_hh.grad[0].abs().sum() > 0
    assert net.core.weight_hh.grad[1].abs().sum() == 0
    assert net.core.weight_ih.shape[0] == 2 and net.id_dim == 3  # set 1 serves two agents: ids in the core input


@pytest.mark.parametrize("sharing", ["shared", "independent"])
def test_image_input_cnn_then_core_equals_step_loop(sharing: str) -> None:
    """Images: pixels through the CNN encoder, then the core; chunk forward == step loop."""
    torch.manual_seed(5)
    net = RecurrentAgentNet((10, 10, 3), 3, 3, cell="gru", rnn_hidden=8, hidden=(16,),
                            param_sets=param_sets_for(sharing, AGENTS))
    assert net.encoder.encoder == "cnn"
    x = torch.randint(0, 256, (4, 2, 3, 10, 10, 3), dtype=torch.uint8)
    alive = torch.rand(4, 2, 3) > 0.2
    reset = torch.rand(4, 2, 3) > 0.7
    out, h = net(x, net.zero_state(2), alive, reset)
    ref_out, ref_h = step_loop(net, x, net.zero_state(2), alive, reset)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("sets", [(0, 0, 0), (0, 1, 2)])
def test_scan_together_equals_one_loop_per_core(cell: str, sets: tuple[int, ...]) -> None:
    torch.manual_seed(6)
    cores = [StackedRNN(cell, 5, 7, sets) for _ in range(2)]
    xs = [torch.randn(6, 4, 3, 5) for _ in cores]
    states = [torch.randn(4, 3, cores[0].state_size) for _ in cores]
    alive = torch.rand(6, 4, 3) > 0.2
    reset = torch.rand(6, 4, 3) > 0.8
    together = scan_together(cores, xs, states, alive, reset)
    for core, x, state, (out, h) in zip(cores, xs, states, together):
        ref_out, ref_h = core(x, state, alive, reset)
        torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-6)
        torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="one cell"):
        scan_together([cores[0], StackedRNN(cell, 5, 8, sets)], xs, states)
