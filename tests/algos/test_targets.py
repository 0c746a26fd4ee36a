"""Target networks and the shared TD pieces: hard copies, soft moves by exactly tau, TD targets, masked means."""

import copy

import pytest
import torch
from torch import nn

from marl.algos.targets import (
    clip_grad,
    hard_update,
    make_target,
    masked_mean,
    soft_update,
    td_target,
    team_means,
)

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


def test_clip_grad_reports_the_norm_before_clipping():
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    assert clip_grad([p], 0.0) == pytest.approx(5.0)
    assert torch.equal(p.grad, torch.tensor([3.0, 4.0]))
    assert clip_grad([p], 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8]))


def test_team_means_over_groups():
    out = team_means({"q_loss/a": 1.0, "q_loss/b": 3.0, "grad_norm": 2.0}, ["a", "b"])
    assert out == {"q_loss/a": 1.0, "q_loss/b": 3.0, "q_loss": 2.0, "grad_norm": 2.0}
    assert team_means({"q_loss/agent": 1.5}, ["agent"]) == {"q_loss": 1.5}
