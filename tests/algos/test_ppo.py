"""PPO loss against a hand computation, and the flat-buffer optimizer against torch's Adam."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from marl.algos.optim import FlatAdam
from marl.algos.ppo import masked_mean, ppo_loss, ppo_stats

HYPER = dict(clip_coef=0.2, vf_coef=0.5, ent_coef=0.01, clip_value_loss=True)


def test_ppo_loss_matches_a_hand_computation():
    # Two entries: ratio e^0.5 (clipped to 1.2, positive advantage) and e^-0.5 (negative advantage).
    new_lp = torch.tensor([0.0, -1.0])
    old_lp = torch.tensor([-0.5, -0.5])
    adv = torch.tensor([2.0, -1.0])
    value = torch.tensor([1.0, 0.0])
    old_value = torch.tensor([0.5, 0.0])
    ret = torch.tensor([2.0, 1.0])
    ent = torch.tensor([0.3, 0.5])
    out = ppo_loss(new_lp, old_lp, adv, value, old_value, ret, ent, mask=None, clip_coef=0.2, vf_coef=0.5,
                   ent_coef=0.01, clip_value_loss=False)
    r1, r2 = math.exp(0.5), math.exp(-0.5)
    # entry 1: max(-2 r1, -2 * 1.2) = -2.4; entry 2: max(1 * r2, 1 * 0.8) = 0.8 (r2 = 0.607 clipped up)
    pg = (-2.4 + 0.8) / 2
    vl = 0.5 * ((1.0 - 2.0) ** 2 + (0.0 - 1.0) ** 2) / 2
    assert out.policy_loss.item() == pytest.approx(pg, rel=1e-6)
    assert out.value_loss.item() == pytest.approx(vl, rel=1e-6)
    assert out.entropy.item() == pytest.approx(0.4, rel=1e-6)
    assert out.loss.item() == pytest.approx(pg + 0.5 * vl - 0.01 * 0.4, rel=1e-6)
    kl = ((r1 - 1) - 0.5 + (r2 - 1) + 0.5) / 2
    assert out.approx_kl.item() == pytest.approx(kl, rel=1e-5)
    assert out.clip_fraction.item() == pytest.approx(1.0)  # both ratios are outside [0.8, 1.2]


def test_value_clipping_takes_the_larger_error():
    z = torch.zeros(1)
    out = ppo_loss(z, z, z, torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]), z, mask=None, clip_coef=0.2,
                   vf_coef=1.0, ent_coef=0.0, clip_value_loss=True)
    # unclipped error 0, clipped value 0.2 -> error 0.64: the max is taken
    assert out.value_loss.item() == pytest.approx(0.5 * 0.64)


def test_mask_none_equals_an_all_true_mask_and_masks_drop_entries():
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(6, 3, generator=g) for _ in range(7)]
    full = ppo_loss(*x, mask=None, **HYPER)
    ones = ppo_loss(*x, mask=torch.ones(6, 3, dtype=torch.bool), **HYPER)
    for a, b in zip(full, ones):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(full.log_ratio, x[0] - x[1])
    mask = torch.zeros(6, 3, dtype=torch.bool)
    mask[:2] = True
    part = ppo_loss(*x, mask=mask, **HYPER)
    ref = ppo_loss(*(t[:2] for t in x), mask=None, **HYPER)
    for a, b in zip(part[:-1], ref[:-1]):  # all scalars; log_ratio keeps the full shape
        torch.testing.assert_close(a, b)
    assert masked_mean(torch.ones(3), torch.zeros(3, dtype=torch.bool)).item() == 0.0


def _nets(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


def test_flat_adam_matches_torch_adam_with_clipping():
    ref, flat = _nets(0), _nets(0)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-2, eps=1e-5)
    opt = FlatAdam(flat.parameters(), lr=1e-2, eps=1e-5)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(16, 3, generator=g) * 10  # large inputs: the norm exceeds max_norm, clipping acts
        opt_ref.zero_grad()
        ref(x).square().mean().backward()
        norm_ref = nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        opt_ref.step()
        opt.zero_grad()
        flat(x).square().mean().backward()
        norm = opt.grad_norm()
        opt.clip_grad_norm_(0.5, norm)
        opt.step()
        torch.testing.assert_close(norm, norm_ref)
        assert norm.item() > 0.5
    for a, b in zip(ref.parameters(), flat.parameters()):
        torch.testing.assert_close(a, b)
    # parameters and gradients are views of the two flat buffers
    p = next(flat.parameters())
    assert p.data_ptr() == opt.flat.data_ptr() and p.grad.data_ptr() == opt.grad.data_ptr()


def test_flat_adam_refuses_to_step_after_the_views_are_dropped():
    net = _nets(0)
    opt = FlatAdam(net.parameters(), lr=1e-3, eps=1e-8)
    net(torch.ones(1, 3)).sum().backward()
    net.zero_grad()  # sets .grad to None: backward would no longer reach the flat buffer
    with pytest.raises(RuntimeError, match="FlatAdam.zero_grad"):
        opt.step()


def _trained_step(opt: FlatAdam, net: nn.Module) -> None:
    opt.zero_grad()
    net(torch.ones(2, 3)).square().sum().backward()
    opt.step()


@pytest.mark.parametrize("index", range(4))
def test_flat_adam_checks_every_parameter_not_only_the_first(index):
    # Breaking any one parameter's gradient view is caught, and the error names that parameter.
    net = _nets(0)
    opt = FlatAdam(net.named_parameters(), lr=1e-3, eps=1e-8)
    name, p = list(net.named_parameters())[index]
    p.grad = None
    with pytest.raises(RuntimeError, match=rf"parameter {re.escape(name)} has no \.grad view.*FlatAdam\.zero_grad\(\)"):
        opt.step()


def test_flat_adam_submodule_zero_grad_is_caught_and_named():
    net = _nets(0)
    opt = FlatAdam(net.named_parameters(), lr=1e-3, eps=1e-8)
    _trained_step(opt, net)
    net[2].zero_grad()  # set_to_none on the last layer only: the first parameter keeps its view
    with pytest.raises(RuntimeError, match=r"parameter 2\.weight .*module\.zero_grad\(\) or submodule\.zero_grad\(\)"):
        opt.step()
    other = _nets(1)
    unnamed = FlatAdam(other.parameters(), lr=1e-3, eps=1e-8)  # plain parameters: named by index and shape
    other[2].bias.grad = None
    with pytest.raises(RuntimeError, match=r"parameter #3 \[2\] has no \.grad view"):
        unnamed.step()


def test_flat_adam_load_state_dict_with_assign_is_caught_and_without_keeps_training():
    net = _nets(0)
    opt = FlatAdam(net.named_parameters(), lr=1e-3, eps=1e-8)
    _trained_step(opt, net)
    saved = {k: v.clone() for k, v in _nets(1).state_dict().items()}
    net.load_state_dict(saved)  # copies into the existing parameters: the views stay
    torch.testing.assert_close(opt.flat, torch.cat([v.reshape(-1) for v in saved.values()]))
    before = [p.detach().clone() for p in net.parameters()]
    _trained_step(opt, net)
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))  # every parameter trained
    net.load_state_dict(saved, assign=True)  # new Parameter objects: the optimizer's are dropped
    net(torch.ones(2, 3)).sum().backward()
    with pytest.raises(RuntimeError, match=r"parameter 0\.weight was dropped by its module.*assign=False"):
        opt.step()


@pytest.mark.parametrize("whole", [True, False])
def test_flat_adam_module_to_another_dtype_is_caught(whole):
    net = _nets(0)
    opt = FlatAdam(net.named_parameters(), lr=1e-3, eps=1e-8)
    (net if whole else net[2]).to(torch.float64)  # the last layer alone: the first parameter is untouched
    name = "0.weight" if whole else "2.weight"
    with pytest.raises(RuntimeError,
                       match=rf"parameter {re.escape(name)} no longer lives in FlatAdam's buffer" r".*module\.to\(\)"):
        opt.step()
    net.to(torch.float32)  # back to the dtype, but in new storage: still not the buffer
    with pytest.raises(RuntimeError, match="no longer lives in FlatAdam's buffer"):
        opt.step()


def test_flat_adam_assigned_grad_outside_the_buffer_is_caught():
    net = _nets(0)
    opt = FlatAdam(net.named_parameters(), lr=1e-3, eps=1e-8)
    p = net[2].bias
    p.grad = torch.zeros_like(p)
    with pytest.raises(RuntimeError, match=r"parameter 2\.bias has a \.grad outside FlatAdam's gradient buffer"):
        opt.step()


def test_flat_adam_state_round_trips():
    net = _nets(0)
    opt = FlatAdam(net.parameters(), lr=1e-3, eps=1e-8)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    other = FlatAdam(_nets(1).parameters(), lr=5.0, eps=1e-8)
    other.load_state_dict(opt.state_dict())
    assert other.lr == pytest.approx(1e-3)
    torch.testing.assert_close(other.adam.state[other.flat]["exp_avg"], opt.adam.state[opt.flat]["exp_avg"])


def test_stacked_stats_equal_per_minibatch_stats():
    # The learner computes approx_kl / clip_fraction after the epochs from stacked log-ratios.
    g = torch.Generator().manual_seed(3)
    log_ratio = torch.randn(4, 5, 3, generator=g) * 0.3
    mask = torch.rand(4, 5, 3, generator=g) < 0.7
    for m in (None, mask):
        kl, clip = ppo_stats(log_ratio, m, 0.2, dims=1)
        for s in range(4):
            ref_kl, ref_clip = ppo_stats(log_ratio[s], None if m is None else m[s], 0.2)
            torch.testing.assert_close(kl[s], ref_kl)
            torch.testing.assert_close(clip[s], ref_clip)
    assert 0 < clip.mean() < 1 and kl.min() >= 0


# ------------------------------------------------------------------ the update: target_kl, anneal_clip
def _learner_and_rollout(overrides, n_rows=64):
    """A PPOLearner on a 3-agent discrete policy and a rollout whose stored log-probs and values are the
    policy's own (ratio 1 before the first step), with random advantages and returns."""
    import gymnasium
    import numpy as np

    from marl.algos.ppo import PPOLearner
    from marl.config import load_config
    from marl.data.rollout import GroupBatch
    from marl.on_policy.policy import ActorCriticPolicy
    from marl.types import EnvSpec, GroupSpec

    box = gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)
    agents = ("agent_0", "agent_1", "agent_2")
    env = EnvSpec(agents, (GroupSpec("agent", agents, box, gymnasium.spaces.Discrete(5)),), None)
    cfg = load_config(None, ["norm.obs=false", *overrides])
    torch.manual_seed(0)
    policy = ActorCriticPolicy(env, cfg)
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(n_rows, 3, 4, generator=g)
    with torch.no_grad():
        dist, value = policy.net["agent"].dist_and_value(obs, obs)
        action = dist.sample(g)
        log_prob = dist.log_prob(action)
    adv, ret = torch.randn(n_rows, 3, generator=g), torch.randn(n_rows, 3, generator=g)
    batch = GroupBatch(obs, obs, action, log_prob, value, adv, ret, torch.ones(n_rows, 3, dtype=torch.bool), None)
    return PPOLearner(policy, cfg.algo), {"agent": batch}, cfg


@pytest.mark.parametrize("target_kl,grad_steps,epochs", [
    (0.0, 16, 4),     # off: every epoch x minibatch
    (10.0, 16, 4),    # never reached
    (1e-6, 2, 1),     # minibatch 1 has ratio 1 (KL 0); minibatch 2 sees the first step's KL > target: step, stop
])
def test_target_kl_stops_the_update_after_the_minibatch_that_crosses_it(target_kl, grad_steps, epochs):
    learner, batches, cfg = _learner_and_rollout(
        [f"algo.target_kl={target_kl}", "algo.lr=0.01", "algo.update_epochs=4", "algo.num_minibatches=4"])
    metrics = learner.update(batches, cfg.algo.num_minibatches, True, torch.Generator().manual_seed(0))
    assert learner.grad_steps == grad_steps
    assert metrics["epochs"] == epochs
    if target_kl == 1e-6:
        assert metrics["approx_kl"] > 0  # mean over the two minibatches: the second one's KL is past the target


def test_anneal_clip_follows_the_linear_schedule_over_training(make_config):
    from marl.algos.ppo import linear_schedule
    from marl.on_policy.trainer import OnPolicyTrainer

    per_iteration = 2 * 16
    cfg = make_config(None, "env.id=CartPole-v1", "env.num_envs=2", "algo.num_steps=16", "algo.num_minibatches=2",
                      "algo.update_epochs=1", "algo.anneal_clip=true", "algo.clip_coef=0.3",
                      f"total_env_steps={4 * per_iteration}", "eval.interval=0", "checkpoint.interval=0")
    trainer = OnPolicyTrainer(cfg)
    try:
        seen = []
        for _ in range(4):
            trainer.advance()
            seen.append(trainer.learner.clip_coef)
    finally:
        trainer.close()
    expected = [linear_schedule(0.3, i * per_iteration / cfg.total_env_steps) for i in range(4)]
    assert seen == pytest.approx(expected) and seen == pytest.approx([0.3, 0.225, 0.15, 0.075])
    assert trainer.env_steps == cfg.total_env_steps
