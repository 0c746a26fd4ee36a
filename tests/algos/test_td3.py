"""TD3: target policy smoothing, the clipped double-Q target by hand, delayed actor and target
updates, gradient routing, exploration noise inside the bounds, and a tiny learning test."""

import functools

import gymnasium
import numpy as np
import pytest
import torch

from marl.algos.td3 import smoothed_target_action
from marl.off_policy import build_actor
from marl.types import EnvSpec, GroupObs, GroupSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture
def make(make_learner):
    """``make(spec, *overrides)`` -> ``(TD3PolicyNet, TD3Learner)`` (tests/conftest.py)."""
    return functools.partial(make_learner, "td3")


def test_smoothed_target_action_clips_noise_then_action():
    action = torch.tensor([0.0, 0.9, -0.95, 0.2])
    noise = torch.tensor([0.8, 0.3, -0.1, -0.2])
    out = smoothed_target_action(action, noise, noise_clip=0.5)
    torch.testing.assert_close(out, torch.tensor([0.5, 1.0, -1.0, 0.0]))


def test_critic_target_by_hand(make, box_spec, box_batch):
    _, learner = make(box_spec(act_dim=2), "algo.policy_noise=0.3", "algo.noise_clip=0.4")
    b = box_batch(act_dim=2)
    same_noise = torch.Generator().set_state(learner.generator.get_state())  # the learner's next draws
    with torch.no_grad():
        _, td, _ = learner.critic_loss({"agent": b})
        mu = torch.tanh(learner.actor_target["agent"].net(b.next_obs_n))
        noise = 0.3 * torch.randn(mu.shape, generator=same_noise)
        a_next = (mu + noise.clamp(-0.4, 0.4)).clamp(-1, 1)
        x = torch.cat([b.next_obs_n, a_next], -1)
        target_q = torch.minimum(learner.critic_target["agent"].q1(x), learner.critic_target["agent"].q2(x)).squeeze(-1)
        y = b.reward_n + 0.99 * (~b.terminated_n) * target_q
        q1, q2 = learner.critics["agent"](b.obs, b.action)
    torch.testing.assert_close(td["agent"], 0.5 * (q1 + q2) - y)


def test_actor_and_targets_update_only_every_policy_delay_steps(make, box_spec, box_batch):
    actor, learner = make(box_spec(act_dim=2), "algo.policy_delay=2", "algo.target_update_interval=2", "algo.tau=0.5")
    actor0 = [p.clone() for p in actor.parameters()]
    target0 = [p.clone() for p in learner.critic_target.parameters()]
    learner.update({"agent": box_batch(act_dim=2, seed=1)})
    assert all(torch.equal(p, p0) for p, p0 in zip(actor.parameters(), actor0))
    assert all(torch.equal(p, p0) for p, p0 in zip(learner.critic_target.parameters(), target0))
    learner.update({"agent": box_batch(act_dim=2, seed=2)})
    assert not all(torch.equal(p, p0) for p, p0 in zip(actor.parameters(), actor0))
    for t, t0, s in zip(learner.critic_target.parameters(), target0, learner.critics.parameters()):
        torch.testing.assert_close(t, 0.5 * t0 + 0.5 * s)
    for t, s in zip(learner.actor_target.parameters(), actor.parameters()):
        assert not torch.equal(t, s)  # moved halfway only
    assert all(p.grad is None for p in learner.actor_target.parameters())
    assert all(p.grad is None for p in learner.critic_target.parameters())


def test_gradient_routing(make, box_spec, box_batch):
    actor, learner = make(box_spec(n_agents=2, act_dim=2), "model.sharing=independent")
    b = box_batch(n_agents=2, act_dim=2)
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


def test_exploration_noise_stays_inside_the_bounds(box_spec, learner_config):
    spec = box_spec(act_dim=2, low=-2.0, high=2.0)
    policy = build_actor(spec, learner_config("td3", "algo.exploration_noise=0.5"))
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


def test_td3_refuses_discrete_actions(learner_config):
    box = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    spec = EnvSpec(("agent_0",), (GroupSpec("agent", ("agent_0",), box, gymnasium.spaces.Discrete(3)),))
    with pytest.raises(ValueError, match="Box actions"):
        build_actor(spec, learner_config("td3"))


def test_learns_a_continuous_bandit(make, box_spec, continuous_bandit_batch):
    """One step, reward -(a - 0.5)^2 for a in [-2, 2] (env units): mu must approach 0.5."""
    torch.manual_seed(0)
    spec = box_spec(obs_dim=1, act_dim=1)
    actor, learner = make(spec, "algo.lr=0.003")
    g = torch.Generator().manual_seed(1)
    for _ in range(600):
        learner.update({"agent": continuous_bandit_batch(g)})
    with torch.no_grad():
        best = 2.0 * actor["agent"](torch.zeros(1, 1, 1))
    assert abs(float(best) - 0.5) < 0.1, best
