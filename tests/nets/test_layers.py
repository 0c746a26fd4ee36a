"""Orthogonal init, the MLP builder, activations (plain and fast tanh), and stacked per-agent init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from marl.nets import AgentNet, mlp, orthogonal_init
from marl.nets.layers import (
    ACTIVATIONS,
    FAST_TANH_MIN_NUMEL,
    activate,
    fast_tanh,
    make_activation,
    orthogonal_stacked_,
)


@pytest.mark.parametrize("gain", [1.0, math.sqrt(2.0), 0.01])
def test_orthogonal_init_square_layer_has_w_wt_equal_gain_squared_identity(gain):
    torch.manual_seed(0)
    layer = orthogonal_init(nn.Linear(16, 16), gain)
    w = layer.weight.detach()
    torch.testing.assert_close(w @ w.T, gain**2 * torch.eye(16), atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(layer.bias) == 0


def test_orthogonal_init_rectangular_layers_are_semi_orthogonal():
    torch.manual_seed(0)
    wide = orthogonal_init(nn.Linear(32, 8), 2.0).weight.detach()  # [8, 32]: orthogonal rows
    torch.testing.assert_close(wide @ wide.T, 4.0 * torch.eye(8), atol=1e-5, rtol=1e-5)
    tall = orthogonal_init(nn.Linear(8, 32), 2.0).weight.detach()  # [32, 8]: orthogonal columns
    torch.testing.assert_close(tall.T @ tall, 4.0 * torch.eye(8), atol=1e-5, rtol=1e-5)


def test_orthogonal_init_reaches_every_layer_of_a_container_including_convs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 4))
    for m in net:
        if hasattr(m, "bias"):
            nn.init.constant_(m.bias, 1.0)
    orthogonal_init(net, 1.5)
    conv_w = net[0].weight.detach().reshape(4, -1)  # [4, 27]
    torch.testing.assert_close(conv_w @ conv_w.T, 2.25 * torch.eye(4), atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(net[0].bias) == 0 and torch.count_nonzero(net[3].bias) == 0


def test_orthogonal_init_without_linear_or_conv_is_an_error():
    with pytest.raises(TypeError, match="no nn.Linear"):
        orthogonal_init(nn.ReLU(), 1.0)


def test_orthogonal_stacked_draws_each_slice_independently():
    torch.manual_seed(0)
    w = orthogonal_stacked_(torch.empty(3, 10, 10), 2.0, in_first=True)
    for p in range(3):
        torch.testing.assert_close(w[p].T @ w[p], 4.0 * torch.eye(10), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])


def test_mlp_layout_gains_and_output():
    torch.manual_seed(0)
    net = mlp(5, (16, 16), 3, activation="relu", out_gain=0.01)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    hidden = net[2].weight.detach()
    torch.testing.assert_close(hidden @ hidden.T, 2.0 * torch.eye(16), atol=1e-5, rtol=1e-5)
    out = net[4].weight.detach()  # [3, 16]
    torch.testing.assert_close(out @ out.T, 1e-4 * torch.eye(3), atol=1e-8, rtol=1e-5)
    assert net(torch.randn(7, 5)).shape == (7, 3)
    with pytest.raises(ValueError, match="unknown activation"):
        mlp(5, (4,), 1, activation="gelu")
    assert isinstance(make_activation("silu"), nn.SiLU)


@pytest.mark.parametrize("param_sets", [None, [0, 1, 2]])
def test_agent_net_init_gains_per_parameter_set(param_sets):
    torch.manual_seed(0)
    net = AgentNet((6,), 4, 3, hidden=(32, 32), param_sets=param_sets, out_gain=0.01)
    hidden = net.weights[1].detach()  # [P, 32, 32]
    out = net.weights[2].detach()  # [P, 32, 4]
    for p in range(net.n_param_sets):
        torch.testing.assert_close(hidden[p].T @ hidden[p], 2.0 * torch.eye(32), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[p].T @ out[p], 1e-4 * torch.eye(4), atol=1e-8, rtol=1e-5)
    for b in net.biases:
        assert torch.count_nonzero(b) == 0
    if net.n_param_sets > 1:
        assert not torch.allclose(hidden[0], hidden[1])


def test_agent_net_conv_init_is_orthogonal_per_set():
    torch.manual_seed(0)
    net = AgentNet((7, 7, 1), 2, 2, hidden=(16,), param_sets=[0, 1], encoder="cnn")
    first = net.conv_weights[0].detach()  # [P, 32, 1, 3, 3]: 32 rows of 9 -> orthogonal columns
    for p in range(2):
        m = first[p].reshape(32, 9)
        torch.testing.assert_close(m.T @ m, 2.0 * torch.eye(9), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activate_equals_the_activation_module_and_fast_changes_only_large_tanh(name):
    small = torch.linspace(-4, 4, 101)
    large = torch.linspace(-4, 4, 2 * FAST_TANH_MIN_NUMEL)
    for x in (small, large):
        assert torch.equal(activate(x, name), make_activation(name)(x))  # fast=False: bit-identical
    assert torch.equal(activate(small, name, fast=True), activate(small, name))  # small: torch.tanh itself
    if name == "tanh":
        assert torch.equal(activate(large, name, fast=True), fast_tanh(large))
        assert not torch.equal(fast_tanh(large), torch.tanh(large))  # the sigmoid form really runs
    else:
        assert torch.equal(activate(large, name, fast=True), activate(large, name))


def test_fast_tanh_absolute_error_bound_stated_in_its_docstring():
    # Every float32 in [-30, 30] (2.2e9 values) was checked once outside the tests; here a dense grid
    # and the worst points found on each side.
    x = torch.cat([torch.linspace(-30, 30, 1_000_001), torch.tensor([0.552614, -0.000172496])])
    err = (fast_tanh(x) - torch.tanh(x)).abs()
    assert err.max().item() <= 1.5 * 2**-23  # 1.79e-7
    assert err[-2:].max().item() > 1e-7  # the bound is nearly reached
    tiny = torch.full((FAST_TANH_MIN_NUMEL,), 1e-8)
    assert torch.all(fast_tanh(tiny) == 0)  # absolute, not relative: 2 sigmoid(2x) - 1 cancels near 0


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("fast", [False, True])
def test_activate_compiles_under_torchscript(fast):
    # the ``fork`` strategy of AgentNet compiles activate inside a TorchScript function
    scripted = torch.jit.script(activate)
    x = torch.linspace(-4, 4, 2 * FAST_TANH_MIN_NUMEL)
    for name in sorted(ACTIVATIONS):
        torch.testing.assert_close(scripted(x, name, fast), activate(x, name, fast), rtol=0, atol=0)
