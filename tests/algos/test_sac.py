"""SAC: the tanh log-prob correction the learner uses, gradient routing of the three losses,
entropy tuning direction, discrete expectations with masks, and tiny learning tests."""

import functools
import math

import numpy as np
import pytest
import torch

from marl.algos.sac import alpha_loss, default_target_entropy, expectation
from marl.algos.targets import OffPolicyBatch
from marl.off_policy import build_actor
from marl.types import GroupObs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture
def make(make_learner):
    """``make(spec, *overrides)`` -> ``(SACPolicyNet, SACLearner)`` (tests/conftest.py)."""
    return functools.partial(make_learner, "sac")


# ------------------------------------------------------------------ log-prob correction
def test_policy_log_prob_matches_a_numerical_change_of_variables(make, box_spec):
    """log pi(a) of the learner's policy == log N(atanh a) + log |d atanh(a)/da|, the derivative by finite
    differences."""
    actor, _ = make(box_spec(act_dim=1))
    obs = torch.randn(200, 1, 3, generator=torch.Generator().manual_seed(3))
    dist = actor["agent"].dist(obs)
    action, log_prob = dist.rsample_with_log_prob(torch.Generator().manual_seed(4))
    a = action.double().clamp(-1 + 1e-9, 1 - 1e-9)
    h = 1e-6
    dudA = (torch.atanh(a + h) - torch.atanh(a - h)) / (2 * h)
    mean, log_std = dist.base.mean.double(), dist.base.log_std.double()
    base = torch.distributions.Normal(mean, log_std.exp()).log_prob(torch.atanh(a))
    numerical = (base + dudA.log()).sum(-1)
    torch.testing.assert_close(log_prob.double(), numerical, rtol=1e-4, atol=1e-4)


def test_policy_density_integrates_to_one_over_the_action_interval(make, box_spec):
    actor, _ = make(box_spec(act_dim=1))
    dist = actor["agent"].dist(torch.zeros(1, 1, 3))
    a = torch.linspace(-1 + 1e-6, 1 - 1e-6, 200_001).view(-1, 1, 1)
    density = dist.log_prob(a.expand(-1, 1, 1)).exp().squeeze()
    assert float(torch.trapezoid(density.detach(), a.squeeze())) == pytest.approx(1.0, abs=2e-3)


def test_actor_loss_uses_the_corrected_log_prob(make, box_spec, box_batch):
    """Recompute the learner's actor loss by hand from the same noise."""
    actor, learner = make(box_spec(act_dim=2), "algo.ent_coef=0.3")
    b = box_batch(act_dim=2)
    same_noise = torch.Generator().set_state(learner.generator.get_state())  # the learner's next draws
    with torch.no_grad():
        loss, _, metrics = learner.actor_losses({"agent": b})
        out = actor["agent"].net(b.obs)
        mean, raw = out.chunk(2, -1)
        log_std = -5.0 + 3.5 * (torch.tanh(raw) + 1.0)
        eps = torch.randn(mean.shape, generator=same_noise)
        u = mean + log_std.exp() * eps
        a = torch.tanh(u)
        log_prob = (torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - torch.log(1 - a.pow(2))).sum(-1)
        q1, q2 = learner.critics["agent"](b.obs, a)
        per_agent = 0.3 * log_prob - torch.minimum(q1, q2)
        expected = (per_agent * b.alive).sum() / b.alive.sum()
    assert float(loss) == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
    entropy = -(log_prob * b.alive).sum() / b.alive.sum()
    assert float(metrics["entropy/agent"]) == pytest.approx(float(entropy), rel=1e-4)


# ------------------------------------------------------------------ gradient routing
def grads(module):
    return [p.grad for p in module.parameters()]


def test_critic_loss_leaves_actor_and_targets_without_gradients(make, box_spec, box_batch):
    actor, learner = make(box_spec(n_agents=2), "model.sharing=independent")
    loss, _, _ = learner.critic_loss({"agent": box_batch(n_agents=2)})
    loss.backward()
    assert all(g is None for g in grads(actor))
    assert all(g is None for g in grads(learner.critic_target))
    assert all(g is not None for g in grads(learner.critics))
    assert all(p.grad is None for p in learner.log_alpha.parameters())


def test_actor_loss_reaches_only_the_actor_and_entropy_loss_only_log_alpha(make, box_spec, box_batch):
    actor, learner = make(box_spec(n_agents=2), "model.sharing=independent")
    learner.critics.requires_grad_(False)
    actor_loss, ent_loss, _ = learner.actor_losses({"agent": box_batch(n_agents=2)})
    learner.critics.requires_grad_(True)
    actor_loss.backward(retain_graph=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads(actor)[-2:])  # the output layer
    assert all(g is None for g in grads(learner.critics))
    assert all(p.grad is None for p in learner.log_alpha.parameters())
    for p in actor.parameters():
        p.grad = None
    ent_loss.backward()
    assert all(g is None for g in grads(actor)) and all(g is None for g in grads(learner.critics))
    assert learner.log_alpha["agent"].grad is not None


def test_update_keeps_targets_gradient_free_and_moves_them_by_tau(make, box_spec, box_batch):
    _, learner = make(box_spec(), "algo.tau=0.25")
    before = [p.clone() for p in learner.critic_target.parameters()]
    learner.update({"agent": box_batch()})
    assert all(p.grad is None for p in learner.critic_target.parameters())
    for t, t0, s in zip(learner.critic_target.parameters(), before, learner.critics.parameters()):
        torch.testing.assert_close(t, 0.75 * t0 + 0.25 * s)


@pytest.mark.parametrize("target, direction", [(5.0, 1), (-50.0, -1)])
def test_alpha_follows_the_entropy_target(target, direction, make, box_spec, box_batch):
    _, learner = make(box_spec(), f"algo.target_entropy={target}", "algo.ent_coef=0.5")
    for step in range(5):
        learner.update({"agent": box_batch(seed=step)})
    alpha = float(learner.ent_coefs()["agent"])
    assert (alpha - 0.5) * direction > 0, alpha


def test_alpha_loss_formula():
    log_alpha = torch.tensor(0.2, requires_grad=True)
    log_prob = torch.tensor([[-1.0, 3.0], [0.5, 0.0]])
    alive = torch.tensor([[True, False], [True, True]])
    loss = alpha_loss(log_alpha, log_prob, -1.0, alive)
    assert float(loss.detach()) == pytest.approx(-0.2 * ((-2.0) + (-0.5) + (-1.0)) / 3)
    loss.backward()
    assert float(log_alpha.grad) == pytest.approx(3.5 / 3)


def test_default_target_entropies(box_spec, discrete_spec, learner_config):
    cfg = learner_config("sac")
    assert default_target_entropy(box_spec(act_dim=3).groups[0], cfg.algo) == -3.0
    assert default_target_entropy(discrete_spec(n_actions=5).groups[0], cfg.algo) == pytest.approx(0.89 * math.log(5))


# ------------------------------------------------------------------ discrete SAC
def test_discrete_next_value_is_the_exact_expectation_and_ignores_masked_actions(make, discrete_spec):
    actor, learner = make(discrete_spec(n_actions=3, mask=True), "algo.ent_coef=2.0")
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[[True, False, True]]]).expand(4, 1, 3)
    b = OffPolicyBatch(torch.randn(4, 1, 2, generator=g), torch.tensor([[0], [2], [0], [2]]), torch.ones(4, 1),
                       torch.full((4,), 0.5), torch.randn(4, 1, 2, generator=g), torch.zeros(4, 1, dtype=torch.bool),
                       torch.ones(4, 1, dtype=torch.bool), torch.ones(4), mask, mask)
    with torch.no_grad():  # a huge target Q on the masked action must not leak into the target
        learner.critic_target["agent"].q1.biases[-1][0, 1] = 1e6
        learner.critic_target["agent"].q2.biases[-1][0, 1] = 1e6
    _, td, _ = learner.critic_loss({"agent": b})
    with torch.no_grad():
        dist = actor["agent"].dist(b.next_obs_n, mask)
        tq1, tq2 = learner.critic_target["agent"](b.next_obs_n)
        v = torch.zeros(4, 1)
        for a in (0, 2):
            v += dist.probs[..., a] * (torch.minimum(tq1, tq2)[..., a] - 2.0 * dist.log_probs[..., a])
        y = 1.0 + 0.5 * v
        q1, q2 = learner.critics["agent"](b.obs)
        q = 0.5 * (q1 + q2).gather(-1, b.action.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(td["agent"], q - y)
    assert torch.isfinite(td["agent"]).all()


def test_expectation_masks_terms_instead_of_multiplying_inf():
    probs = torch.tensor([[0.5, 0.0, 0.5]])
    values = torch.tensor([[1.0, -torch.inf, 3.0]])
    assert float(expectation(probs, values, torch.tensor([[True, False, True]]))) == 2.0


def test_discrete_update_with_masks_and_large_alpha_stays_finite(make, discrete_spec):
    actor, learner = make(discrete_spec(n_agents=2, n_actions=4, mask=True), "algo.ent_coef=5.0",
                          "model.sharing=shared")
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(16, 2, 4, generator=g) < 0.5
    mask[..., 1] = True
    b = OffPolicyBatch(torch.randn(16, 2, 2, generator=g), torch.ones(16, 2, dtype=torch.long), torch.randn(16, 2),
                       torch.full((16,), 0.9), torch.randn(16, 2, 2, generator=g), torch.zeros(16, 2, dtype=torch.bool),
                       torch.ones(16, 2, dtype=torch.bool), torch.ones(16), mask, mask)
    for _ in range(3):
        out = learner.update({"agent": b})
    assert all(math.isfinite(v) for v in out.metrics.values()), out.metrics
    assert all(torch.isfinite(p).all() for p in actor.parameters())


# ------------------------------------------------------------------ tiny learning tests
# Learning run, out of the default suite: bench/bench_sac_pendulum.py trains SAC (and TD3) on Pendulum-v1 to its
# target; the update path stays in the default run through the loss, gradient and target tests above.
@pytest.mark.slow
def test_learns_a_continuous_bandit(make, box_spec, learner_config, continuous_bandit_batch):
    """One step, reward -(a - 0.5)^2 for the action a in [-2, 2] (env units): the mode must approach 0.5."""
    torch.manual_seed(0)
    spec = box_spec(obs_dim=1, act_dim=1, low=-2.0, high=2.0)
    actor, learner = make(spec, "algo.lr=0.003", "algo.ent_coef=0.1")
    g = torch.Generator().manual_seed(1)
    for _ in range(600):
        learner.update({"agent": continuous_bandit_batch(g)})
    policy = build_actor(spec, learner_config("sac"))
    policy.net.load_state_dict(actor.state_dict())
    obs = GroupObs(np.zeros((1, 1, 1), np.float32), np.ones((1, 1), bool), None)
    best = policy.act({"agent": obs}, deterministic=True).env_action["agent"]
    assert abs(float(best[0, 0, 0]) - 0.5) < 0.1, best


def test_discrete_sac_learns_a_contextual_bandit(make, discrete_spec, contextual_bandit_batch):
    """Two states, three actions, reward 1 for action == state (tests/conftest.py): the mode picks it."""
    torch.manual_seed(0)
    spec = discrete_spec(n_agents=1, obs_dim=2, n_actions=3)
    actor, learner = make(spec, "algo.lr=0.003")
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        learner.update({"agent": contextual_bandit_batch(g)})
    with torch.no_grad():
        mode = actor["agent"].dist(torch.eye(2).view(2, 1, 2)).mode().squeeze(1)
    assert mode.tolist() == [0, 1]
