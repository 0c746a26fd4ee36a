"""TD3: target policy smoothing, the clipped double-Q target by hand, delayed actor and target
updates, gradient routing, exploration noise inside the bounds, and a tiny learning test."""

import gymnasium
import numpy as np
import pytest
import torch

from marl.algos.targets import OffPolicyBatch
from marl.algos.td3 import TD3Learner, TD3PolicyNet, smoothed_target_action
from marl.config import load_config
from marl.off_policy import build_actor
from marl.types import EnvSpec, GroupObs, GroupSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def box_spec(n_agents=1, obs_dim=3, act_dim=2, low=-2.0, high=2.0) -> EnvSpec:
    agents = tuple(f"agent_{i}" for i in range(n_agents))
    obs = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    act = gymnasium.spaces.Box(low, high, (act_dim,), np.float32)
    return EnvSpec(agents, (GroupSpec("agent", agents, obs, act),))


def td3_config(*overrides):
    return load_config(None, ["algo.name=td3", "norm.reward=false", "norm.obs=false", "model.hidden=[32, 32]",
                              "model.activation=relu", *overrides])


def make(spec, *overrides):
    cfg = td3_config(*overrides)
    actor = TD3PolicyNet(spec, cfg.model, cfg.algo.exploration_noise)
    return actor, TD3Learner(actor, spec, cfg.model, cfg.algo, seed=1)


def batch(n_rows=32, n_agents=1, obs_dim=3, act_dim=2, seed=0) -> OffPolicyBatch:
    g = torch.Generator().manual_seed(seed)
    return OffPolicyBatch(
        obs=torch.randn(n_rows, n_agents, obs_dim, generator=g),
        action=torch.rand(n_rows, n_agents, act_dim, generator=g) * 2 - 1,
        reward_n=torch.randn(n_rows, n_agents, generator=g),
        discount_n=torch.full((n_rows,), 0.99),
        next_obs_n=torch.randn(n_rows, n_agents, obs_dim, generator=g),
        terminated_n=torch.rand(n_rows, n_agents, generator=g) < 0.2,
        alive=torch.rand(n_rows, n_agents, generator=g) < 0.9,
        weights=torch.ones(n_rows),
    )


def test_smoothed_target_action_clips_noise_then_action():
    action = torch.tensor([0.0, 0.9, -0.95, 0.2])
    noise = torch.tensor([0.8, 0.3, -0.1, -0.2])
    out = smoothed_target_action(action, noise, noise_clip=0.5)
    torch.testing.assert_close(out, torch.tensor([0.5, 1.0, -1.0, 0.0]))


def test_critic_target_by_hand():
    actor, learner = make(box_spec(), "algo.policy_noise=0.3", "algo.noise_clip=0.4")
    b = batch()
    state = learner.generator.get_state()
    with torch.no_grad():
        _, td, _ = learner.critic_loss({"agent": b})
    learner.generator.set_state(state)
    with torch.no_grad():
        mu = torch.tanh(learner.actor_target["agent"].net(b.next_obs_n))
        noise = 0.3 * torch.randn(mu.shape, generator=learner.generator)
        a_next = (mu + noise.clamp(-0.4, 0.4)).clamp(-1, 1)
        x = torch.cat([b.next_obs_n, a_next], -1)
        target_q = torch.minimum(learner.critic_target["agent"].q1(x), learner.critic_target["agent"].q2(x)).squeeze(-1)
        y = b.reward_n + 0.99 * (~b.terminated_n) * target_q
        q1, q2 = learner.critics["agent"](b.obs, b.action)
    torch.testing.assert_close(td["agent"], 0.5 * (q1 + q2) - y)


def test_actor_and_targets_update_only_every_policy_delay_steps():
    actor, learner = make(box_spec(), "algo.policy_delay=2", "algo.target_update_interval=2", "algo.tau=0.5")
    actor0 = [p.clone() for p in actor.parameters()]
    target0 = [p.clone() for p in learner.critic_target.parameters()]
    learner.update({"agent": batch(seed=1)})
    assert all(torch.equal(p, p0) for p, p0 in zip(actor.parameters(), actor0))
    assert all(torch.equal(p, p0) for p, p0 in zip(learner.critic_target.parameters(), target0))
    learner.update({"agent": batch(seed=2)})
    assert not all(torch.equal(p, p0) for p, p0 in zip(actor.parameters(), actor0))
    for t, t0, s in zip(learner.critic_target.parameters(), target0, learner.critics.parameters()):
        torch.testing.assert_close(t, 0.5 * t0 + 0.5 * s)
    for t, s in zip(learner.actor_target.parameters(), actor.parameters()):
        assert not torch.equal(t, s)  # moved halfway only
    assert all(p.grad is None for p in learner.actor_target.parameters())
    assert all(p.grad is None for p in learner.critic_target.parameters())


def test_gradient_routing():
    actor, learner = make(box_spec(n_agents=2), "model.sharing=independent")
    b = batch(n_agents=2)
    loss, _, _ = learner.critic_loss({"agent": b})
    loss.backward()
    assert all(p.grad is None for p in actor.parameters())
    assert all(p.grad is None for p in learner.actor_target.parameters())
    learner.critics.zero_grad(set_to_none=True)
    learner.critics.requires_grad_(False)
    actor_loss, _ = learner.actor_loss({"agent": b})
    learner.critics.requires_grad_(True)
    actor_loss.backward()
    assert all(p.grad is None for p in learner.critics.parameters())
    assert all(p.grad is not None for p in actor.parameters())


def test_exploration_noise_stays_inside_the_bounds():
    spec = box_spec(act_dim=2, low=-2.0, high=2.0)
    policy = build_actor(spec, td3_config("algo.exploration_noise=0.5"))
    obs = GroupObs(np.random.default_rng(0).standard_normal((512, 1, 3)).astype(np.float32), np.ones((512, 1), bool),
                   None)
    greedy = policy.act({"agent": obs}, deterministic=True).env_action["agent"]
    noisy = policy.act({"agent": obs}).env_action["agent"]
    assert np.all(np.abs(noisy) <= 2.0) and np.all(np.abs(greedy) <= 2.0)
    spread = float(np.std(noisy - greedy))
    assert 0.5 < spread < 1.2, spread  # std 0.5 in [-1, 1] units = 1.0 in env units, shrunk by clipping
    with torch.no_grad():
        mu = torch.tanh(policy.net["agent"].net(torch.as_tensor(obs.obs))) * 2.0
    np.testing.assert_allclose(greedy, mu.numpy(), atol=1e-6)


def test_td3_refuses_discrete_actions():
    box = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    spec = EnvSpec(("agent_0",), (GroupSpec("agent", ("agent_0",), box, gymnasium.spaces.Discrete(3)),))
    with pytest.raises(ValueError, match="Box actions"):
        build_actor(spec, td3_config())


def test_learns_a_continuous_bandit():
    """One step, reward -(a - 0.5)^2 for a in [-2, 2] (env units): mu must approach 0.5."""
    torch.manual_seed(0)
    spec = box_spec(obs_dim=1, act_dim=1)
    actor, learner = make(spec, "algo.lr=0.003")
    g = torch.Generator().manual_seed(1)
    for _ in range(600):
        a = torch.rand(128, 1, 1, generator=g) * 2 - 1
        reward = -(2.0 * a - 0.5).square().squeeze(-1)
        b = OffPolicyBatch(torch.zeros(128, 1, 1), a, reward, torch.full((128,), 0.99), torch.zeros(128, 1, 1),
                           torch.ones(128, 1, dtype=torch.bool), torch.ones(128, 1, dtype=torch.bool), torch.ones(128))
        learner.update({"agent": b})
    with torch.no_grad():
        best = 2.0 * actor["agent"](torch.zeros(1, 1, 1))
    assert abs(float(best) - 0.5) < 0.1, best
