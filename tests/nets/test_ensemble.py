"""AgentNet: sharing modes, agent ids, strategies (outputs, gradients, state dicts), param_sets_for."""

from __future__ import annotations

import io

import pytest
import torch

from marl.multi_agent.groups import param_sets_for
from marl.nets import STRATEGIES, AgentNet

IMG = (7, 7, 2)
VEC = (5,)


def make(in_shape, n_agents, param_sets=None, seed=0, **kwargs) -> AgentNet:
    torch.manual_seed(seed)
    hidden = (16,) if len(in_shape) == 3 else (8, 8)
    return AgentNet(in_shape, 3, n_agents, hidden=hidden, param_sets=param_sets, **kwargs)


def observations(in_shape, n_agents, lead=(4,), seed=1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if len(in_shape) == 3:
        return torch.randint(0, 256, (*lead, n_agents, *in_shape), generator=gen, dtype=torch.uint8)
    return torch.randn(*lead, n_agents, *in_shape, generator=gen)


def same_row_for_all_agents(in_shape, n_agents) -> torch.Tensor:
    one = observations(in_shape, 1, lead=(2,))
    return one.expand(2, n_agents, *in_shape).clone()


# ------------------------------------------------------------------ sharing
@pytest.mark.parametrize("in_shape", [VEC, IMG])
def test_shared_same_input_differs_only_through_the_agent_id(in_shape):
    x = same_row_for_all_agents(in_shape, 3)
    without_id = make(in_shape, 3, agent_id=False)(x)
    torch.testing.assert_close(without_id[:, 0], without_id[:, 1])
    torch.testing.assert_close(without_id[:, 0], without_id[:, 2])
    with_id = make(in_shape, 3, agent_id=True)(x)
    assert not torch.allclose(with_id[:, 0], with_id[:, 1], atol=1e-4)
    assert not torch.allclose(with_id[:, 1], with_id[:, 2], atol=1e-4)


@pytest.mark.parametrize("in_shape", [VEC, IMG])
def test_independent_agents_differ_on_the_same_input(in_shape):
    net = make(in_shape, 3, param_sets=[0, 1, 2])
    assert not net.uses_agent_id  # each set serves one agent: no id needed
    y = net(same_row_for_all_agents(in_shape, 3))
    assert not torch.allclose(y[:, 0], y[:, 1], atol=1e-4)
    assert not torch.allclose(y[:, 0], y[:, 2], atol=1e-4)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_selective_map_is_honoured(strategy):
    agents = ["adversary_0", "agent_0", "adversary_1"]
    sets = param_sets_for({"adversary_*": "adv", "agent_0": "good"}, agents)
    assert sets == [0, 1, 0]
    net = make(VEC, 3, param_sets=sets, agent_id=False, strategy=strategy)
    y = net(same_row_for_all_agents(VEC, 3))
    torch.testing.assert_close(y[:, 0], y[:, 2])
    assert not torch.allclose(y[:, 0], y[:, 1], atol=1e-4)


def test_one_hot_agent_id_is_appended_to_vector_inputs():
    net = make(VEC, 3)
    assert net.uses_agent_id and net.n_param_sets == 1
    x = observations(VEC, 3, lead=(2, 4))
    built = net.agent_input(x)
    assert built.shape == (2, 4, 3, 5 + 3)
    torch.testing.assert_close(built[..., :5], x)
    torch.testing.assert_close(built[..., 5:], torch.eye(3).expand(2, 4, 3, 3))
    assert make(VEC, 3, param_sets=[0, 1, 2]).agent_input(x).shape[-1] == 5


def test_image_id_planes_are_appended_after_the_division_by_255():
    net = make(IMG, 3)
    x = torch.full((2, 3, *IMG), 255, dtype=torch.uint8)
    x[0, 1] = 51
    built = net.agent_input(x)  # [2, 3, C + A, H, W]
    assert built.shape == (2, 3, 2 + 3, 7, 7)
    torch.testing.assert_close(built[0, 1, :2], torch.full((2, 7, 7), 0.2))
    torch.testing.assert_close(built[1, :, :2], torch.ones(3, 2, 7, 7))
    for a in range(3):
        expected = torch.zeros(3, 7, 7)
        expected[a] = 1.0  # exactly 1, not 1/255
        torch.testing.assert_close(built[:, a, 2:], expected.expand(2, 3, 7, 7))


@pytest.mark.parametrize("in_shape", [VEC, IMG])
@pytest.mark.parametrize("param_sets", [None, [1, 0, 1, 2]])
def test_forward_matches_a_plain_module_per_parameter_set(in_shape, param_sets):
    net = make(in_shape, 4, param_sets=param_sets)
    x = observations(in_shape, 4, lead=(3,))
    y = net(x)
    built = net.agent_input(x)
    for a in range(4):
        reference = net.set_module(net.param_sets[a])(built[:, a])
        torch.testing.assert_close(y[:, a], reference, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------- strategies
def outputs_and_grads(net: AgentNet, x: torch.Tensor, strategy: str):
    net.strategy = strategy
    net.zero_grad(set_to_none=True)
    y = net(x)
    weights = torch.linspace(-1.0, 1.0, y.numel()).view_as(y)
    (weights * y).sum().backward()
    return y.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("in_shape", [VEC, IMG])
@pytest.mark.parametrize(
    "n_agents,param_sets",
    [(1, None), (4, None), (4, [2, 0, 1, 2]), (4, [0, 1, 2, 3])],
)
def test_strategies_give_equal_outputs_and_gradients(in_shape, n_agents, param_sets):
    net = make(in_shape, n_agents, param_sets=param_sets)
    x = observations(in_shape, n_agents, lead=(2, 3))
    y_ref, g_ref = outputs_and_grads(net, x, "loop")  # one plain module call per parameter set: the baseline
    assert y_ref.shape == (2, 3, n_agents, 3)
    used = sorted(set(net.param_sets))
    for g0 in g_ref:  # every parameter set some agent uses gets a gradient (a zero baseline would prove nothing)
        assert all(g0[k].abs().sum() > 0 for k in used)
    for strategy in ("batched", "fork"):
        y, grads = outputs_and_grads(net, x, strategy)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        assert len(grads) == len(g_ref)
        for g, g0 in zip(grads, g_ref):
            torch.testing.assert_close(g, g0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradient_of_one_agent_reaches_only_its_parameter_set(strategy):
    net = make(VEC, 4, param_sets=[0, 1, 0, 2], strategy=strategy)
    net(observations(VEC, 4))[:, 3].sum().backward()
    for p in net.parameters():
        assert p.grad[2].abs().sum() > 0
        assert torch.count_nonzero(p.grad[:2]) == 0


@pytest.mark.parametrize("in_shape", [VEC, IMG])
def test_parameters_are_registered_once_and_shared_by_every_strategy(in_shape):
    net = make(in_shape, 4, param_sets=[0, 1, 1, 2])
    params = list(net.parameters())
    assert len({id(p) for p in params}) == len(params)
    n_layers = len(net.weights) + len(net.conv_weights)
    assert len(params) == 2 * n_layers and all(p.shape[0] == 3 for p in params)
    before = {name: p.data_ptr() for name, p in net.named_parameters()}
    for strategy in STRATEGIES:
        net.strategy = strategy
        net(observations(in_shape, 4)).sum().backward()
        assert {name: p.data_ptr() for name, p in net.named_parameters()} == before
        assert len(list(net.parameters())) == len(params)


def test_state_dict_saved_under_one_strategy_loads_under_another():
    source = make(VEC, 4, param_sets=[0, 1, 2, 3], strategy="fork", seed=0)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = make(VEC, 4, param_sets=[0, 1, 2, 3], strategy="batched", seed=1)
    x = observations(VEC, 4)
    assert not torch.allclose(target(x), source(x))
    target.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(target(x), source(x))
    assert set(source.state_dict()) == {f"{k}.{i}" for k in ("weights", "biases") for i in range(3)}


# ---------------------------------------------------------------- validation
def test_input_shape_is_checked():
    net = make(VEC, 3)
    with pytest.raises(ValueError, match=r"\[\.\.\., A=3"):
        net(torch.zeros(4, 2, 5))
    with pytest.raises(ValueError, match="unknown strategy"):
        net.strategy = "threads"


def test_bad_param_sets_are_rejected():
    with pytest.raises(ValueError, match="one per agent"):
        AgentNet(VEC, 2, 3, param_sets=[0, 1])
    with pytest.raises(ValueError, match="every index"):
        AgentNet(VEC, 2, 3, param_sets=[0, 2, 2])


def test_leading_dims_are_free():
    net = make(VEC, 2)
    x = observations(VEC, 2, lead=(3, 4, 5))
    y = net(x)
    assert y.shape == (3, 4, 5, 2, 3)
    torch.testing.assert_close(y[1, 2], net(x[1, 2]))
    assert net(x[0, 0, 0]).shape == (2, 3)


# ----------------------------------------------------------- param_sets_for
AGENTS = ["adversary_0", "adversary_1", "agent_0"]


def test_param_sets_for_modes():
    assert param_sets_for("shared", AGENTS) == [0, 0, 0]
    assert param_sets_for("independent", AGENTS) == [0, 1, 2]
    # first appearance along the agent order, whatever the set names are
    assert param_sets_for({"agent_0": "z", "adversary_0": "b", "adversary_1": "z"}, AGENTS) == [0, 1, 1]
    assert param_sets_for({"adversary_*": "adv", "agent_0": "a0"}, AGENTS) == [0, 0, 1]
    # an exact name wins over a pattern
    assert param_sets_for({"*": "all", "adversary_1": "solo"}, AGENTS) == [0, 1, 0]


def test_param_sets_for_errors_name_the_problem():
    with pytest.raises(ValueError, match="agent_9"):
        param_sets_for({"adversary_*": "adv", "agent_0": "a", "agent_9": "a"}, AGENTS)
    with pytest.raises(ValueError, match="agent_0"):
        param_sets_for({"adversary_*": "adv"}, AGENTS)
    with pytest.raises(ValueError, match="different sets"):
        param_sets_for({"adversary_*": "adv", "*_0": "zero", "agent_0": "a"}, AGENTS)
    with pytest.raises(ValueError, match="unknown sharing"):
        param_sets_for("grouped", AGENTS)
    with pytest.raises(ValueError, match="twice"):
        param_sets_for("shared", ["a", "a"])


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "silu"])
def test_every_activation_runs_under_every_strategy_with_equal_outputs_and_gradients(activation):
    # fork compiles marl.nets.layers.activate under TorchScript: each branch must compile and agree
    net = make(VEC, 3, param_sets=[0, 1, 1], activation=activation)
    x = observations(VEC, 3, lead=(5,))
    y_ref, g_ref = outputs_and_grads(net, x, "batched")
    for strategy in ("loop", "fork"):
        y, grads = outputs_and_grads(net, x, strategy)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        for g, g0 in zip(grads, g_ref):
            torch.testing.assert_close(g, g0, rtol=1e-5, atol=1e-5)


def test_one_shared_set_runs_as_the_fused_stacked_mlp_and_equals_the_loop_on_a_large_batch(monkeypatch):
    # One parameter set (MAPPO's shared actor and central critic): the layers run through marl.nets.fused.stacked_mlp
    # (fused node, narrow head, tanh in its sigmoid form on >= FAST_TANH_MIN_NUMEL elements); the per-set loop
    # of plain modules is the reference.
    import marl.nets.ensemble as ensemble
    from marl.nets.fused import FAST_TANH_MIN_NUMEL

    calls = []
    fused_mlp = ensemble.stacked_mlp
    monkeypatch.setattr(ensemble, "stacked_mlp", lambda *a: calls.append(a[0].shape) or fused_mlp(*a))
    torch.manual_seed(0)
    net = AgentNet(VEC, 5, 3, hidden=(64, 64))  # 64-wide hidden layers (linear_tanh), a 5-wide head (transposed)
    x = observations(VEC, 3, lead=(400,))
    y_ref, g_ref = outputs_and_grads(net, x, "loop")
    y, grads = outputs_and_grads(net, x, "batched")
    assert calls == [(1, 1200, 8)] and 1200 * 64 >= FAST_TANH_MIN_NUMEL  # 5 features + 3 agent ids
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, g0 in zip(grads, g_ref):
        torch.testing.assert_close(g, g0, rtol=1e-4, atol=1e-4)
