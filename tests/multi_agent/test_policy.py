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


TWO_GROUPS = (
    GroupSpec("adversary", ("adversary_0",), gymnasium.spaces.Box(-1, 1, (3,), np.float32),
              gymnasium.spaces.Discrete(5)),
    GroupSpec("agent", ("agent_0", "agent_1"), BOX, gymnasium.spaces.Box(-1, 1, (2,), np.float32)),
)


@pytest.mark.parametrize("critic", ["local", "central"])
@pytest.mark.parametrize("optimizer", ["common", "per_group"])
def test_every_trainable_parameter_is_in_exactly_one_optimizer(optimizer, critic):
    p, cfg = policy_for([f"algo.optimizer={optimizer}", f"model.critic={critic}", "model.sharing=independent"],
                        spec(groups=TWO_GROUPS))
    frozen = p.net["agent"].log_std
    frozen.requires_grad_(False)  # a frozen parameter belongs to no optimizer
    learner = PPOLearner(p, cfg.algo)
    expected = {"common": {"all"}, "per_group": {"adversary", "agent"}}[optimizer]
    assert set(learner.optimizers) == expected
    owned = [id(t) for opt in learner.optimizers.values() for t in opt.params]
    trainable = [id(t) for t in p.net.parameters() if t.requires_grad]
    assert len(trainable) > 4 and id(frozen) not in owned
    assert sorted(owned) == sorted(trainable)  # each exactly once: no overlap between groups, none missing
    if optimizer == "per_group":
        for g, opt in learner.optimizers.items():  # each group's optimizer holds that group's parameters only
            assert [id(t) for t in opt.params] == [id(t) for t in p.net[g].parameters() if t.requires_grad]
    assert sum(opt.flat.numel() for opt in learner.optimizers.values()) == sum(
        t.numel() for t in p.net.parameters() if t.requires_grad)


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
    obs = {"agent": GroupObs(np.random.default_rng(0).normal(size=(64, 3, 4)).astype(np.float32),
                             np.ones((64, 3), bool), mask)}
    for _ in range(20):
        a = p.act(obs).env_action["agent"]
        assert np.all(mask[np.arange(64)[:, None], np.arange(3)[None], a])


def _batch_with_dead_agents(garbage: float, n: int = 8) -> GroupBatch:
    """``n`` rows of 3 agents, about a third of the entries dead; every field of a dead entry is ``garbage``
    (the action: another valid index); alive entries are the same for every ``garbage``."""
    g = torch.Generator().manual_seed(0)
    alive = torch.rand(n, 3, generator=g) > 0.35
    alive[0] = True  # every agent alive at least once, every agent dead at least once below
    alive[1] = False
    obs = torch.randn(n, 3, 4, generator=g)
    action = torch.randint(0, 5, (n, 3), generator=g)
    log_prob = -1.6 + 0.3 * torch.randn(n, 3, generator=g)
    value, adv, ret = (torch.randn(n, 3, generator=g) for _ in range(3))
    junk = lambda x: torch.where(alive, x, torch.full_like(x, garbage))  # noqa: E731
    obs = torch.where(alive[..., None], obs, torch.full_like(obs, garbage))
    action = torch.where(alive, action, torch.full_like(action, int(abs(garbage)) % 5))
    return GroupBatch(obs, obs, action, junk(log_prob), junk(value), junk(adv), junk(ret), alive, None)


@pytest.mark.parametrize("sharing", ["shared", "independent"])
def test_the_learner_masks_dead_agents_out_of_the_gradient(sharing):
    """Through PPOLearner.update: data of dead agents change no gradient, and the gradient equals a hand-written
    loss over the alive entries only (advantages standardized over them)."""
    grads = []
    for garbage in (0.0, 1e3, -7.0):
        p, cfg = policy_for([f"model.sharing={sharing}", "algo.max_grad_norm=0", "algo.update_epochs=1",
                             "algo.clip_value_loss=false", "algo.ent_coef=0.01"])
        learner = PPOLearner(p, cfg.algo)
        b = _batch_with_dead_agents(garbage)
        params = list(p.net.parameters())
        if garbage == 0.0:  # the hand oracle, at the parameters before the update's step
            dist, value = p.net["agent"].dist_and_value(b.obs, b.critic_in)
            m = b.alive
            adv = b.advantage[m]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            ratio = (dist.log_prob(b.action)[m] - b.log_prob[m]).exp()
            pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
            vl = 0.5 * ((value[m] - b.ret[m]) ** 2).mean()
            loss = pg + cfg.algo.vf_coef * vl - 0.01 * dist.entropy()[m].mean()
            hand = torch.autograd.grad(loss, params)
        metrics = learner.update({"agent": b}, num_minibatches=1, norm_advantage=True,
                                 generator=torch.Generator().manual_seed(0))
        assert learner.grad_steps == 1
        grads.append([t.grad.clone() for t in params])  # views of the flat buffer: the update's gradient
        if garbage == 0.0:
            assert metrics["policy_loss"] == pytest.approx(pg.item(), rel=1e-5)
            assert metrics["value_loss"] == pytest.approx(vl.item(), rel=1e-5)
            for got, want in zip(grads[0], hand):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert any(bool(t.abs().sum() > 0) for t in grads[0])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            assert torch.equal(a, b)


def test_independent_parameters_of_an_always_dead_agent_get_no_gradient():
    p, cfg = policy_for(["model.sharing=independent", "algo.max_grad_norm=0", "algo.update_epochs=1"])
    learner = PPOLearner(p, cfg.algo)
    b = _batch_with_dead_agents(3.0)
    b = b._replace(alive=b.alive & torch.tensor([True, True, False]))  # agent 2 never alive
    learner.update({"agent": b}, num_minibatches=1, norm_advantage=True, generator=torch.Generator().manual_seed(0))
    for t in p.net.parameters():  # stacked per-agent parameter sets: [3, ...]
        assert t.shape[0] == 3
        assert torch.count_nonzero(t.grad[2]) == 0 and torch.count_nonzero(t.grad[:2]) > 0


@pytest.mark.parametrize("strategy", ["batched", "fork"])
def test_strategies_give_the_loop_baselines_outputs_and_gradients(strategy):
    def outputs_and_grads(s, state=None):
        p, _ = policy_for(["model.sharing=independent", f"model.strategy={s}"])
        if state is not None:
            p.net.load_state_dict(state)
        x = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(1))
        logits, value = p.net["agent"].policy_out(x), p.net["agent"].value(x)
        w = torch.linspace(-1.0, 1.0, logits.numel()).view_as(logits)
        ((w * logits).sum() + (value * torch.arange(1.0, 4.0)).sum()).backward()
        return logits.detach(), value.detach(), {k: t.grad.clone() for k, t in p.net.named_parameters()}, p.net

    ref = outputs_and_grads("loop")  # one module call per parameter set: the plain baseline
    got = outputs_and_grads(strategy, ref[3].state_dict())
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-6)
    assert got[2].keys() == ref[2].keys() and len(ref[2]) >= 8
    for k in ref[2]:
        assert ref[2][k].abs().sum() > 0, k
        torch.testing.assert_close(got[2][k], ref[2][k], rtol=1e-5, atol=1e-6, msg=k)
