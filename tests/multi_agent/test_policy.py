"""Multi-agent behaviour of the PPO policy: sharing, central critic, one optimizer, masks, death."""

import gymnasium
import numpy as np
import pytest
import torch

from marl.algos.ppo import PPOLearner
from marl.config import load_config
from marl.data.rollout import GroupBatch
from marl.on_policy.policy import ActorCriticPolicy
from marl.types import EnvSpec, GroupObs, GroupSpec

BOX = gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)


def spec(n_agents=3, n_actions=5, state=None, groups=None):
    if groups is None:
        agents = tuple(f"agent_{i}" for i in range(n_agents))
        groups = (GroupSpec("agent", agents, BOX, gymnasium.spaces.Discrete(n_actions), has_action_mask=True),)
    agents = tuple(a for g in groups for a in g.agents)
    return EnvSpec(agents, groups, state)


def policy_for(overrides, env_spec=None):
    cfg = load_config(None, ["norm.obs=false", *overrides])
    torch.manual_seed(0)
    return ActorCriticPolicy(env_spec or spec(), cfg), cfg


def test_shared_network_differs_per_agent_only_through_the_id():
    obs = torch.ones(2, 3, 4)
    p, _ = policy_for(["model.sharing=shared", "model.agent_id=false"])
    out = p.net["agent"].policy_out(obs)
    torch.testing.assert_close(out[:, 0], out[:, 1])
    p, _ = policy_for(["model.sharing=shared", "model.agent_id=true"])
    out = p.net["agent"].policy_out(obs)
    assert not torch.allclose(out[:, 0], out[:, 1])


def test_independent_networks_differ_and_have_more_parameters():
    obs = torch.ones(2, 3, 4)
    shared, _ = policy_for(["model.sharing=shared"])
    indep, _ = policy_for(["model.sharing=independent"])
    out = indep.net["agent"].policy_out(obs)
    assert not torch.allclose(out[:, 0], out[:, 1])
    n = lambda p: sum(x.numel() for x in p.net.parameters())  # noqa: E731
    assert n(indep) > 2.5 * n(shared)


def test_selective_sharing_map():
    env = spec(groups=(GroupSpec("agent", ("adv_0", "adv_1", "good_0"), BOX, gymnasium.spaces.Discrete(5)),))
    p, _ = policy_for(["model.sharing={'adv_*': a, good_0: g}", "model.agent_id=false"], env)
    assert p.net["agent"].param_sets == [0, 0, 1]
    out = p.net["agent"].policy_out(torch.ones(1, 3, 4))
    torch.testing.assert_close(out[:, 0], out[:, 1])
    assert not torch.allclose(out[:, 0], out[:, 2])


def test_every_parameter_is_in_the_common_optimizer_exactly_once():
    env = spec(groups=(
        GroupSpec("adversary", ("adversary_0",), gymnasium.spaces.Box(-1, 1, (3,), np.float32), gymnasium.spaces.Discrete(5)),
        GroupSpec("agent", ("agent_0", "agent_1"), BOX, gymnasium.spaces.Box(-1, 1, (2,), np.float32)),
    ))
    p, cfg = policy_for(["model.sharing=independent"], env)
    learner = PPOLearner(p, cfg.algo)
    ids = [id(t) for opt in learner.optimizers.values() for t in opt.params]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(t) for t in p.net.parameters() if t.requires_grad}
    per_group = PPOLearner(p, load_config(None, ["algo.optimizer=per_group"]).algo)
    assert set(per_group.optimizers) == {"adversary", "agent"}


def test_central_critic_sees_every_agent():
    p, _ = policy_for(["model.critic=central"])
    obs = np.zeros((1, 3, 4), np.float32)
    alive = np.ones((1, 3), bool)
    v0 = p.values({"agent": obs}, None)["agent"]
    obs2 = obs.copy()
    obs2[0, 0, 0] = 1.0  # perturb agent 0 only
    v1 = p.values({"agent": obs2}, None)["agent"]
    assert torch.all(v0 != v1)  # every agent's value changed
    local, _ = policy_for(["model.critic=local"])
    l0, l1 = local.values({"agent": obs}, None)["agent"], local.values({"agent": obs2}, None)["agent"]
    assert l0[0, 0] != l1[0, 0] and torch.equal(l0[0, 1:], l1[0, 1:])
    del alive


def test_central_critic_uses_the_env_state_when_there_is_one():
    p, _ = policy_for(["model.critic=central"], spec(state=(7,)))
    obs = np.zeros((2, 3, 4), np.float32)
    state = np.ones((2, 7), np.float32)
    v = p.values({"agent": obs}, state)["agent"]
    assert v.shape == (2, 3)
    torch.testing.assert_close(p.values({"agent": obs + 1}, state)["agent"], v)  # observations are not read
    state2 = state.copy()
    state2[0, 3] = -1.0
    v2 = p.values({"agent": obs}, state2)["agent"]
    assert torch.all(v2[0] != v[0]) and torch.equal(v2[1], v[1])


def test_masked_actions_are_never_sampled():
    p, _ = policy_for([])
    mask = np.zeros((64, 3, 5), bool)
    mask[..., 2] = True
    mask[:, 1, 4] = True
    obs = {"agent": GroupObs(np.random.default_rng(0).normal(size=(64, 3, 4)).astype(np.float32), np.ones((64, 3), bool), mask)}
    for _ in range(20):
        a = p.act(obs).env_action["agent"]
        assert np.all(mask[np.arange(64)[:, None], np.arange(3)[None], a])


def test_dead_agents_change_no_gradient():
    """Data of a dead (not alive) agent must not influence the loss gradient at all."""
    p, cfg = policy_for(["model.sharing=independent"])
    learner = PPOLearner(p, cfg.algo)
    rng = np.random.default_rng(0)

    def batch(garbage: float) -> GroupBatch:
        n = 8
        alive = torch.ones(n, 3, dtype=torch.bool)
        alive[:, 2] = False
        obs = torch.tensor(rng.normal(size=(n, 3, 4)), dtype=torch.float32)
        obs[:, 2] = garbage
        f = lambda *s: torch.full(s, garbage)  # noqa: E731
        base = torch.ones(n, 3)
        return GroupBatch(obs, obs, torch.zeros(n, 3, dtype=torch.long), -base, base * 0.1,
                          torch.where(alive, base, f(n, 3)), torch.where(alive, base, f(n, 3)), alive, None)

    grads = []
    for garbage in (0.0, 1e3):
        rng = np.random.default_rng(0)
        b = batch(garbage)
        p.net.zero_grad()
        dist = p.net["agent"].dist(b.obs)
        from marl.algos.ppo import ppo_loss
        out = ppo_loss(dist.log_prob(b.action), b.log_prob, b.advantage, p.net["agent"].value(b.critic_in), b.value,
                       b.ret, dist.entropy(), b.alive, 0.2, 0.5, 0.01, False)
        out.loss.backward()
        grads.append([x.grad.clone() for x in p.net.parameters() if x.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    del learner


@pytest.mark.parametrize("strategy", ["batched", "loop", "fork"])
def test_strategies_give_the_same_policy(strategy):
    ref, _ = policy_for(["model.sharing=independent", "model.strategy=batched"])
    other, _ = policy_for(["model.sharing=independent", f"model.strategy={strategy}"])
    other.net.load_state_dict(ref.net.state_dict())
    x = torch.randn(5, 3, 4)
    torch.testing.assert_close(ref.net["agent"].policy_out(x), other.net["agent"].policy_out(x))
    torch.testing.assert_close(ref.net["agent"].value(x), other.net["agent"].value(x))
