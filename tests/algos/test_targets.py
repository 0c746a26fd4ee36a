"""Target networks and the shared TD pieces (hard copies, soft moves by exactly tau, TD targets, masked
means, critic terms), and the update parts every off-policy learner shares (gradient steps, frozen
critics, one device read of the metrics per update, checkpoint entries in the saved format)."""

import collections
import copy

import pytest
import torch
from torch import nn

from marl.algos.learner_parts import (
    CheckpointParts,
    adam,
    clip_grad,
    frozen,
    gradient_step,
    learner_out,
    team_means,
)
from marl.algos.targets import critic_terms, hard_update, make_target, masked_mean, soft_update, td_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    net.register_buffer("scale", torch.full((2,), float(seed)))
    return net


def test_make_target_is_a_separate_copy_without_grads():
    source = small_net(0)
    target = make_target(source)
    for t, s in zip(target.parameters(), source.parameters()):
        assert torch.equal(t, s) and t.data_ptr() != s.data_ptr()
        assert not t.requires_grad and s.requires_grad
    with torch.no_grad():
        next(source.parameters()).add_(1.0)
    assert not torch.equal(next(target.parameters()), next(source.parameters()))


def test_hard_update_copies_parameters_and_buffers():
    source, target = small_net(0), small_net(1)
    hard_update(target, source)
    for t, s in zip(target.state_dict().values(), source.state_dict().values()):
        assert torch.equal(t, s)


@pytest.mark.parametrize("tau", [0.0, 0.005, 0.3, 1.0])
def test_soft_update_moves_by_tau_exactly(tau):
    source, target = small_net(0), small_net(1)
    before = copy.deepcopy(target)
    soft_update(target, source, tau)
    for t, b, s in zip(target.parameters(), before.parameters(), source.parameters()):
        expected = (1 - tau) * b + tau * s
        torch.testing.assert_close(t, expected, rtol=0, atol=1e-7)
    assert torch.equal(target.scale, source.scale)  # buffers are copied


def test_soft_update_converges_geometrically():
    """After k updates the distance to a fixed source shrinks by (1 - tau)^k."""
    source, target = small_net(0), small_net(1)
    gap0 = [s - t for s, t in zip(source.parameters(), target.parameters())]
    for _ in range(10):
        soft_update(target, source, 0.1)
    for g0, s, t in zip(gap0, source.parameters(), target.parameters()):
        torch.testing.assert_close(s - t, g0.detach() * 0.9**10, rtol=1e-4, atol=1e-6)


def test_updates_refuse_mismatched_networks_and_bad_tau():
    with pytest.raises(ValueError, match="different parameters"):
        hard_update(nn.Linear(3, 4), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="tau"):
        soft_update(small_net(0), small_net(1), 1.5)


def test_td_target_stops_bootstrapping_only_at_termination():
    reward = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    discount = torch.tensor([0.9, 0.81])
    terminated = torch.tensor([[False, True], [False, False]])
    next_value = torch.tensor([[10.0, 10.0], [4.0, 2.0]])
    y = td_target(reward, discount, terminated, next_value)
    torch.testing.assert_close(y, torch.tensor([[1.0 + 9.0, 2.0], [0.5 + 0.81 * 4.0, -1.0 + 0.81 * 2.0]]))


def test_masked_mean_ignores_dead_agents_and_weights_rows():
    x = torch.tensor([[1.0, 100.0], [3.0, 5.0]])
    alive = torch.tensor([[True, False], [True, True]])
    assert float(masked_mean(x, alive)) == pytest.approx((1 + 3 + 5) / 3)
    w = torch.tensor([0.5, 1.0])
    assert float(masked_mean(x, alive, w)) == pytest.approx((0.5 * 1 + 3 + 5) / 3)
    assert float(masked_mean(x, torch.zeros_like(alive))) == 0.0


def test_critic_terms_hand_computed():
    q = torch.tensor([[1.0, 2.0], [3.0, 10.0]], requires_grad=True)
    y = torch.tensor([[0.5, 2.0], [4.0, 0.0]])
    alive = torch.tensor([[True, True], [True, False]])
    loss = (q * 2).sum()
    td, metrics = critic_terms("g", loss, q, y, alive)
    assert td.tolist() == [[0.5, 0.0], [-1.0, 10.0]] and not td.requires_grad
    assert set(metrics) == {"q_loss/g", "q_mean/g"}
    assert float(metrics["q_loss/g"]) == 32.0 and not metrics["q_loss/g"].requires_grad
    assert float(metrics["q_mean/g"]) == pytest.approx((1.0 + 2.0 + 3.0) / 3)  # the dead agent's 10 is left out


# ------------------------------------------------------------------ update parts
def test_clip_grad_reports_the_norm_before_clipping():
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    norm = clip_grad([p], 0.0)
    assert isinstance(norm, torch.Tensor) and norm.dim() == 0 and float(norm) == pytest.approx(5.0)
    assert torch.equal(p.grad, torch.tensor([3.0, 4.0]))
    assert float(clip_grad([p], 1.0)) == pytest.approx(5.0)
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8]))
    q = nn.Parameter(torch.zeros(2))
    assert float(clip_grad([q], 1.0)) == 0.0  # no gradient at all


def test_gradient_step_equals_the_steps_written_out():
    """Two steps through gradient_step == zero_grad, backward, clip, step by hand (same numbers, no accumulation)."""
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    twin = copy.deepcopy(net)
    opt, twin_opt = adam(net.parameters(), 0.1, 1e-8), adam(twin.parameters(), 0.1, 1e-8)
    x = torch.randn(8, 3)
    for scale in (1.0, 50.0):  # the second loss has a large gradient: clipped to 0.5
        norm = gradient_step(opt, scale * net(x).square().mean(), list(net.parameters()), 0.5)
        twin_opt.zero_grad()
        (scale * twin(x).square().mean()).backward()
        expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in twin.parameters()]))
        nn.utils.clip_grad_norm_(list(twin.parameters()), 0.5)
        twin_opt.step()
        torch.testing.assert_close(norm, expected)
        for p, q in zip(net.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert float(norm) > 0.5


def test_frozen_leaves_the_module_without_gradients_and_restores_it_even_after_an_error():
    critic, actor = nn.Linear(2, 1), nn.Linear(2, 2)
    with frozen(critic):
        assert not any(p.requires_grad for p in critic.parameters())
        critic(actor(torch.ones(1, 2))).sum().backward()
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.grad is not None for p in actor.parameters())
    assert all(p.requires_grad for p in critic.parameters())
    with pytest.raises(RuntimeError, match="boom"), frozen(critic):
        raise RuntimeError("boom")
    assert all(p.requires_grad for p in critic.parameters())


def test_team_means_over_groups():
    out = team_means({"q_loss/a": 1.0, "q_loss/b": 3.0, "grad_norm": 2.0}, ["a", "b"])
    assert out == {"q_loss/a": 1.0, "q_loss/b": 3.0, "q_loss": 2.0, "grad_norm": 2.0}
    assert team_means({"q_loss/agent": 1.5}, ["agent"]) == {"q_loss": 1.5}


@pytest.fixture
def device_reads(monkeypatch) -> collections.Counter:
    """Counts the Python-level ways of reading a tensor's value on the host (each one waits for a GPU)."""
    calls: collections.Counter = collections.Counter()
    for name in ("__float__", "__bool__", "__int__", "__index__", "item", "tolist", "numpy", "cpu"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_learner_out_reads_every_metric_in_one_transfer_with_the_exact_values(device_reads):
    metrics = {"q_loss/a": torch.tensor(0.1), "q_loss/b": torch.tensor(0.7), "grad_norm": torch.tensor(3.3)}
    expected = {k: v.item() for k, v in metrics.items()}
    device_reads.clear()
    out = learner_out(metrics, {}, ["a", "b"])
    assert device_reads == {"tolist": 1}
    for k, v in expected.items():
        assert out.metrics[k] == v and type(out.metrics[k]) is float  # bit for bit what float(tensor) gives
    assert out.metrics["q_loss"] == (expected["q_loss/a"] + expected["q_loss/b"]) / 2


@pytest.mark.parametrize("algo, spec_kind, overrides", [
    ("dqn", "discrete", ()), ("sac", "discrete", ()), ("sac", "box", ("algo.max_grad_norm=1.0",)),
    ("td3", "box", ("algo.policy_delay=1",)),
])
def test_an_update_reads_the_device_once(device_reads, make_learner, box_spec, discrete_spec, box_batch, algo,
                                         spec_kind, overrides):
    """Two groups of metrics, losses, norms, alphas: one host transfer per update, whatever their number."""
    if spec_kind == "box":
        spec, batch = box_spec(n_agents=2), box_batch(n_agents=2)
    else:
        spec = discrete_spec(n_agents=2, obs_dim=3)
        b = box_batch(n_agents=2)
        batch = b._replace(action=torch.randint(0, 3, (32, 2), generator=torch.Generator().manual_seed(0)))
    _, learner = make_learner(algo, spec, *overrides)
    learner.update({"agent": batch})
    device_reads.clear()
    out = learner.update({"agent": batch})
    assert device_reads == {"tolist": 1}
    assert all(type(v) is float for v in out.metrics.values()) and "grad_norm" in out.metrics


# ------------------------------------------------------------------ checkpoint entries
def test_checkpoint_parts_round_trip_modules_optimizers_generators_and_absent_parts():
    torch.manual_seed(0)
    net = nn.Linear(2, 2)
    opt = adam(net.parameters(), 0.01, 1e-8)
    gradient_step(opt, net(torch.ones(1, 2)).sum(), list(net.parameters()), 0.0)
    gen = torch.Generator().manual_seed(5)
    torch.rand(3, generator=gen)
    state = CheckpointParts({"net": net, "opt": opt, "gen": gen, "absent": None}).state_dict()
    assert state["absent"] is None and set(state) == {"net", "opt", "gen", "absent"}
    net2 = nn.Linear(2, 2)
    opt2 = adam(net2.parameters(), 0.01, 1e-8)
    gen2 = torch.Generator()
    CheckpointParts({"net": net2, "opt": opt2, "gen": gen2, "absent": None}).load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"] == 1
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=gen2))


def test_checkpoint_parts_refuse_a_missing_or_empty_entry():
    net = nn.Linear(2, 2)
    with pytest.raises(KeyError, match="'net'"):
        CheckpointParts({"net": net}).load_state_dict({"other": {}})
    with pytest.raises(ValueError, match="no 'opt' state.*config"):
        CheckpointParts({"opt": adam(net.parameters(), 0.01, 1e-8)}).load_state_dict({"opt": None})


LEARNER_ENTRIES = {  # the saved format of each learner's checkpoint entry
    "dqn": ["target", "optimizer", "grad_steps"],
    "sac": ["critics", "critic_target", "log_alpha", "critic_optimizer", "actor_optimizer", "alpha_optimizer",
            "generator", "grad_steps"],
    "td3": ["critics", "critic_target", "actor_target", "critic_optimizer", "actor_optimizer", "generator",
            "grad_steps"],
}


@pytest.mark.parametrize("algo", ["dqn", "sac", "td3"])
def test_learner_state_keeps_its_format_and_a_reload_continues_identically(make_learner, box_spec, discrete_spec,
                                                                          box_batch, algo):
    """state_dict -> fresh learner -> the same next update (networks, optimizers, generator, counter)."""
    spec = discrete_spec(obs_dim=3) if algo == "dqn" else box_spec()
    batch = box_batch()
    if algo == "dqn":
        batch = batch._replace(action=torch.randint(0, 3, (32, 1), generator=torch.Generator().manual_seed(0)))
    overrides = ("algo.target_update_interval=1", *(("algo.policy_delay=1",) if algo == "td3" else ()))
    torch.manual_seed(0)
    net, learner = make_learner(algo, spec, *overrides)
    learner.update({"agent": batch})
    state = copy.deepcopy(learner.state_dict())
    assert list(state) == LEARNER_ENTRIES[algo] and state["grad_steps"] == 1
    torch.manual_seed(1)  # different initial weights
    net2, learner2 = make_learner(algo, spec, *overrides)
    net2.load_state_dict(net.state_dict())
    learner2.load_state_dict(state)
    assert learner2.grad_steps == 1
    out, out2 = learner.update({"agent": batch}), learner2.update({"agent": batch})
    assert out.metrics == out2.metrics
    for p, q in zip([*net.parameters(), *learner.trainable()], [*net2.parameters(), *learner2.trainable()]):
        assert torch.equal(p, q)


def test_sac_without_autotune_saves_no_alpha_optimizer_and_a_mismatch_is_named(make_learner, box_spec):
    _, fixed = make_learner("sac", box_spec(), "algo.autotune=false")
    state = fixed.state_dict()
    assert state["alpha_optimizer"] is None
    _, tuned = make_learner("sac", box_spec())
    with pytest.raises(ValueError, match="alpha_optimizer.*algo.autotune"):
        tuned.load_state_dict(state)
    _, fixed_again = make_learner("sac", box_spec(), "algo.autotune=false")
    fixed_again.load_state_dict(tuned.state_dict())  # an alpha optimizer this learner lacks is skipped
