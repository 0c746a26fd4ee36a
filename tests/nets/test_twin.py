"""TwinMLP: stacked towers compute exactly K independent MLPs."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from marl.config import load_config
from marl.nets import AgentNet
from marl.nets.twin import TwinMLP
from marl.on_policy.policy import ActorCriticPolicy
from marl.types import EnvSpec, GroupSpec


def test_towers_equal_their_standalone_modules_with_and_without_ids():
    torch.manual_seed(0)
    for n_agents, agent_id in ((1, True), (3, True), (3, False)):
        net = TwinMLP((2, 3), (5, 1), n_agents, hidden=(16, 8), agent_id=agent_id, out_gains=(0.01, 1.0))
        x = torch.randn(4, 7, n_agents, 2, 3)
        outs = net(x)
        flat = x.reshape(-1, n_agents, 6)
        if net.uses_agent_id:
            flat = torch.cat([flat, torch.eye(n_agents).expand(flat.shape[0], -1, -1)], dim=-1)
        for t, d in enumerate((5, 1)):
            assert outs[t].shape == (4, 7, n_agents, d)
            ref = net.tower_module(t)(flat.reshape(-1, flat.shape[-1])).reshape(4, 7, n_agents, d)
            torch.testing.assert_close(outs[t], ref)
        assert net.uses_agent_id == (agent_id and n_agents > 1)


def test_towers_share_no_parameter_and_padding_gets_no_gradient():
    net = TwinMLP((4,), (3, 1), 1, hidden=(8,))
    logits, value = net(torch.randn(10, 1, 4))
    value.sum().backward()  # only the critic tower (index 1) may get gradient
    for w in net.parameters():
        assert w.grad[0].abs().sum() == 0
        assert w.grad[1].abs().sum() > 0
    out_w = net.weights[-1]
    assert torch.all(out_w[1, :, 1:] == 0) and torch.all(out_w.grad[1, :, 1:] == 0)  # padded critic columns


def test_init_gains_per_tower():
    torch.manual_seed(0)
    net = TwinMLP((64,), (64, 1), 1, hidden=(64,), out_gains=(0.01, 1.0))
    w_hidden, w_out = net.weights[0], net.weights[1]
    for t in range(2):  # hidden layers: orthogonal with gain sqrt(2): W^T W = 2 I
        torch.testing.assert_close(w_hidden[t].T @ w_hidden[t], 2.0 * torch.eye(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(w_out[0].T @ w_out[0], 1e-4 * torch.eye(64), atol=1e-6, rtol=0)
    assert w_out[1, :, 0].norm().item() == pytest.approx(1.0, rel=1e-5)


def _env(n_agents: int) -> EnvSpec:
    box = gymnasium.spaces.Box(-1, 1, (4,), np.float32)
    agents = tuple(f"agent_{i}" for i in range(n_agents))
    return EnvSpec(agents, (GroupSpec("agent", agents, box, gymnasium.spaces.Discrete(3)),), None)


def test_twin_policy_equals_separate_networks_with_the_same_weights():
    cfg = load_config(None, ["norm.obs=false"])
    policy = ActorCriticPolicy(_env(3), cfg)
    group = policy.net["agent"]
    assert set(dict(group.named_children())) == {"twin"} and isinstance(group.twin, TwinMLP)
    actor = AgentNet((4,), 3, 3)
    critic = AgentNet((4,), 1, 3)
    with torch.no_grad():
        for i, (w, b) in enumerate(zip(group.twin.weights, group.twin.biases)):
            actor.weights[i].copy_(w[0:1, :, : actor.weights[i].shape[2]])
            actor.biases[i].copy_(b[0:1, : actor.biases[i].shape[1]])
            critic.weights[i].copy_(w[1:2, :, : critic.weights[i].shape[2]])
            critic.biases[i].copy_(b[1:2, : critic.biases[i].shape[1]])
    x = torch.randn(5, 3, 4)
    dist, value = group.dist_and_value(x, x)
    torch.testing.assert_close(dist.log_probs, torch.log_softmax(actor(x), -1))
    torch.testing.assert_close(value, critic(x).squeeze(-1))
    torch.testing.assert_close(group.value(x), value)


@pytest.mark.parametrize("overrides", [["model.critic=central"], ["model.sharing=independent"]])
def test_no_twin_when_the_critic_input_differs_or_sets_are_independent(overrides):
    policy = ActorCriticPolicy(_env(3), load_config(None, ["norm.obs=false", *overrides]))
    group = policy.net["agent"]
    children = dict(group.named_children())
    assert set(children) == {"actor", "critic"} and all(isinstance(c, AgentNet) for c in children.values())
