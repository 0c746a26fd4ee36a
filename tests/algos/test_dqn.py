"""DQN: double-Q targets against hand computations, masked greedy and masked exploration,
gradient routing, target update cadence, the epsilon schedule, and a tiny learning test."""

import functools

import gymnasium
import numpy as np
import pytest
import torch

from marl.algos.dqn import DQNLearner, QPolicyNet, double_q_next_value, huber, linear_epsilon, masked_argmax
from marl.algos.targets import OffPolicyBatch, td_target
from marl.off_policy import build_actor
from marl.types import EnvSpec, GroupObs, GroupSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture
def dqn_config(learner_config):
    """``dqn_config(*overrides)``: a DQN config with one hidden layer of 32 units (tests/conftest.py)."""
    return functools.partial(learner_config, "dqn", "model.hidden=[32]")


def test_double_q_target_hand_computed():
    # One row, two agents, three actions. The online net prefers action 2 for agent 0 and action 0
    # for agent 1; the target net values those choices (not its own max).
    next_target = torch.tensor([[[1.0, 5.0, 2.0], [7.0, 3.0, 9.0]]])
    next_online = torch.tensor([[[0.0, 1.0, 4.0], [8.0, 2.0, 1.0]]])
    value = double_q_next_value(next_target, next_online, None)
    assert value.tolist() == [[2.0, 7.0]]
    plain = double_q_next_value(next_target, None, None)
    assert plain.tolist() == [[5.0, 9.0]]
    # Action 2 not allowed for agent 0 at s': the online argmax falls to action 1.
    mask = torch.tensor([[[True, True, False], [True, True, True]]])
    assert double_q_next_value(next_target, next_online, mask).tolist() == [[5.0, 7.0]]
    y = td_target(torch.tensor([[1.0, -1.0]]), torch.tensor([0.9]), torch.tensor([[False, True]]), value)
    torch.testing.assert_close(y, torch.tensor([[1.0 + 0.9 * 2.0, -1.0]]))


def test_masked_argmax_never_picks_a_masked_action():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(500, 3, 6, generator=gen)
    mask = torch.rand(500, 3, 6, generator=gen) < 0.4
    mask[0, 0] = False  # a row with nothing allowed (a dead agent): any action, no crash
    best = masked_argmax(q, mask)
    chosen = mask.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    has_any = mask.any(-1)
    assert chosen[has_any].all()
    # and it is the best allowed one
    masked_q = torch.where(mask, q, torch.full_like(q, -torch.inf))
    assert torch.equal(masked_q.max(-1).values[has_any], q.gather(-1, best.unsqueeze(-1)).squeeze(-1)[has_any])


@pytest.mark.parametrize("epsilon", [0.0, 0.5, 1.0])
def test_epsilon_greedy_exploration_respects_masks(epsilon, dqn_config, discrete_spec):
    spec = discrete_spec(n_agents=2, n_actions=5, mask=True)
    actor = build_actor(spec, dqn_config("model.sharing=independent"))
    rng = np.random.default_rng(0)
    mask = rng.random((256, 2, 5)) < 0.5
    mask[..., 3] = True  # at least one allowed action per row
    obs = GroupObs(rng.standard_normal((256, 2, 2)).astype(np.float32), np.ones((256, 2), bool), mask)
    actions = actor.act({"agent": obs}, epsilon=epsilon).env_action["agent"]
    assert actions.shape == (256, 2)
    assert np.take_along_axis(mask, actions[..., None], -1).all()
    if epsilon == 1.0:  # uniform over allowed actions: every allowed action shows up
        assert set(np.unique(actions).tolist()) == set(range(5))


def test_dueling_head_is_value_plus_centred_advantage(dqn_config, discrete_spec):
    spec = discrete_spec(n_actions=4)
    q = QPolicyNet(spec, dqn_config().model, dueling=True)
    obs = torch.randn(8, 1, 2)
    out = q["agent"].net(obs)
    expected = out[..., :1] + out[..., 1:] - out[..., 1:].mean(-1, keepdim=True)
    torch.testing.assert_close(q["agent"](obs), expected)


def random_batch(n_rows=16, n_agents=2, n_actions=3, seed=0, mask=False) -> OffPolicyBatch:
    g = torch.Generator().manual_seed(seed)
    action_mask = None
    if mask:
        action_mask = torch.rand(n_rows, n_agents, n_actions, generator=g) < 0.7
        action_mask[..., 0] = True
    return OffPolicyBatch(
        obs=torch.randn(n_rows, n_agents, 2, generator=g),
        action=torch.randint(0, n_actions, (n_rows, n_agents), generator=g),
        reward_n=torch.randn(n_rows, n_agents, generator=g),
        discount_n=torch.full((n_rows,), 0.9),
        next_obs_n=torch.randn(n_rows, n_agents, 2, generator=g),
        terminated_n=torch.rand(n_rows, n_agents, generator=g) < 0.3,
        alive=torch.rand(n_rows, n_agents, generator=g) < 0.8,
        weights=torch.rand(n_rows, generator=g) + 0.5,
        action_mask=action_mask,
        next_action_mask_n=action_mask,
    )


def test_learner_loss_and_td_error_match_a_per_row_loop(dqn_config, discrete_spec):
    cfg = dqn_config("model.sharing=independent")
    spec = discrete_spec(n_agents=2)
    q = QPolicyNet(spec, cfg.model, dueling=False)
    learner = DQNLearner(q, cfg.algo)
    with torch.no_grad():  # make the target differ from the online network
        for p in learner.target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    b = random_batch(mask=True)
    loss, td, _ = learner.losses({"agent": b})
    num, den, expected_td = 0.0, 0, torch.zeros(16, 2)
    with torch.no_grad():
        for i in range(16):
            q_row = q["agent"](b.obs[i : i + 1])[0]
            next_online = q["agent"](b.next_obs_n[i : i + 1])[0]
            next_target = learner.target["agent"](b.next_obs_n[i : i + 1])[0]
            for a in range(2):
                allowed = [k for k in range(3) if b.next_action_mask_n[i, a, k]]
                best = max(allowed, key=lambda k: float(next_online[a, k]))
                boot = 0.0 if b.terminated_n[i, a] else 0.9 * float(next_target[a, best])
                y = float(b.reward_n[i, a]) + boot
                delta = float(q_row[a, b.action[i, a]]) - y
                expected_td[i, a] = delta
                if b.alive[i, a]:
                    err = abs(delta)
                    num += float(b.weights[i]) * (0.5 * err**2 if err < 1 else err - 0.5)
                    den += 1
    torch.testing.assert_close(td["agent"], expected_td, atol=1e-5, rtol=1e-5)
    assert float(loss.detach()) == pytest.approx(num / den, rel=1e-5)


def test_huber_is_quadratic_then_linear():
    x = torch.tensor([0.0, 0.5, 2.0, -3.0])
    assert huber(x, torch.zeros(4)).tolist() == [0.0, 0.125, 1.5, 2.5]


def test_update_trains_online_only_and_copies_target_every_k_steps(dqn_config, discrete_spec):
    cfg = dqn_config("algo.target_update_interval=3", "algo.tau=1.0", "algo.lr=0.01")
    q = QPolicyNet(discrete_spec(n_agents=2), cfg.model, dueling=False)
    learner = DQNLearner(q, cfg.algo)
    target0 = [p.clone() for p in learner.target.parameters()]
    online0 = [p.clone() for p in q.parameters()]
    for step in range(1, 4):
        learner.update({"agent": random_batch(seed=step)})
        assert all(p.grad is None for p in learner.target.parameters())
        same = all(torch.equal(t, t0) for t, t0 in zip(learner.target.parameters(), target0))
        assert same == (step < 3), step
    assert not all(torch.equal(p, p0) for p, p0 in zip(q.parameters(), online0))
    for t, p in zip(learner.target.parameters(), q.parameters()):
        assert torch.equal(t, p)  # hard copy at step 3
    assert learner.grad_steps == 3


def test_linear_epsilon_schedule():
    assert linear_epsilon(1.0, 0.05, 0.1, 0.0) == 1.0
    assert linear_epsilon(1.0, 0.05, 0.1, 0.05) == pytest.approx(0.525)
    assert linear_epsilon(1.0, 0.05, 0.1, 0.1) == pytest.approx(0.05)
    assert linear_epsilon(1.0, 0.05, 0.1, 0.7) == pytest.approx(0.05)


def test_dqn_refuses_continuous_actions(dqn_config):
    box = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    spec = EnvSpec(("agent_0",), (GroupSpec("agent", ("agent_0",), box, box),))
    with pytest.raises(ValueError, match="Discrete"):
        build_actor(spec, dqn_config())


def test_learns_a_contextual_bandit(dqn_config, discrete_spec, contextual_bandit_batch):
    """Two states, three actions, reward 1 for action == state else 0, every step terminal
    (tests/conftest.py): Q must converge to the reward table."""
    torch.manual_seed(0)
    cfg = dqn_config("algo.lr=0.01", "algo.target_update_interval=10")
    q = QPolicyNet(discrete_spec(n_agents=1), cfg.model, dueling=False)
    learner = DQNLearner(q, cfg.algo)
    g = torch.Generator().manual_seed(1)
    for _ in range(400):
        learner.update({"agent": contextual_bandit_batch(g)})
    with torch.no_grad():
        table = q["agent"](torch.eye(2).view(2, 1, 2)).squeeze(1)
    torch.testing.assert_close(table, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), atol=0.05, rtol=0)
