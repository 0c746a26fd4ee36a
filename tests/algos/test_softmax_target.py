"""RES's softmax target of VDN/QMIX (``algo.softmax_beta``, Pan et al. 2021) against a loop over the candidate joint
actions by hand, its limits, and its config error."""

from __future__ import annotations

import itertools

import pytest
import torch

from marl.algos.value_decomposition import deviation_joint_values, softmax_team_value
from marl.config import ConfigError, QMIXConfig, VDNConfig
from tests.algos.test_value_decomposition import game_config, perturbed_learner, team_batch


def naive_td(learner, b, beta: float) -> torch.Tensor:
    """Team TD errors with the next value a softmax over the greedy joint action and every one-agent deviation to
    another allowed action (agents in the bootstrap mix only), each valued by the target mixer, row by row."""
    rows = b.groups["agent"]
    out = []
    with torch.no_grad():
        q_on = learner.q["agent"](rows.obs)
        next_on = learner.q["agent"](rows.next_obs_n, rows.next_action_mask_n)
        next_tg = learner.target["agent"](rows.next_obs_n, rows.next_action_mask_n)
        for i in range(rows.obs.shape[0]):
            state, next_state = rows.obs[i].reshape(1, -1), rows.next_obs_n[i].reshape(1, -1)
            alive = rows.alive[i]
            mask = rows.next_action_mask_n[i]
            best = [int(torch.where(mask[a], next_on[i, a], -torch.inf).argmax()) for a in range(2)]
            mixing = rows.next_alive_n[i] & ~rows.terminated_n[i]
            joints = [tuple(best)] + [tuple(u if k == a else best[k] for k in range(2))
                                      for a in range(2) if mixing[a] for u in range(3) if mask[a, u] and u != best[a]]
            values = torch.stack([learner.target_mixer(torch.stack([next_tg[i, k, j[k]] for k in range(2)])[None],
                                                       next_state, mixing[None])[0] for j in joints])
            v = (torch.softmax(beta * values, 0) * values).sum()
            reward = float((rows.reward_n[i] * alive).sum())
            ended = bool((rows.terminated_n[i] | ~alive).all())
            y = reward + float(b.discount_n[i]) * (0.0 if ended else float(v))
            taken = torch.stack([q_on[i, k, int(rows.action[i, k])] for k in range(2)])
            out.append(float(learner.mixer(taken[None], state, alive[None])[0]) - y)
    return torch.tensor(out)


@pytest.mark.parametrize("config", [VDNConfig, QMIXConfig])
@pytest.mark.parametrize("beta", [0.7, 4.0])
def test_softmax_target_equals_a_loop_over_the_joint_actions(config, beta):
    """Three rows: plain (masked next actions), one going on with a dead agent (it does not deviate), a terminal
    one."""
    learner = perturbed_learner(config(softmax_beta=beta))
    b = team_batch()
    rows = b.groups["agent"]
    terminated = rows.terminated_n.clone()
    terminated[1] = False  # row 1: agent 0 goes on, agent 1 is dead
    b = b._replace(groups={"agent": rows._replace(terminated_n=terminated)})
    _, td, _ = learner.losses(b)
    torch.testing.assert_close(td, naive_td(learner, b, beta), rtol=1e-5, atol=1e-5)


def test_softmax_limits():
    """beta -> inf: the max over the valid candidates; beta -> 0: their mean; invalid candidates never count."""
    q = torch.tensor([[1.0, 3.0, -2.0, 10.0]])
    valid = torch.tensor([[True, True, True, False]])
    assert float(softmax_team_value(q, valid, 1e4)) == pytest.approx(3.0)
    assert float(softmax_team_value(q, valid, 1e-6)) == pytest.approx(2.0 / 3.0, abs=1e-4)


def test_deviation_joint_values_by_hand():
    q = torch.arange(12.0).view(1, 2, 6)[:, :, :3].reshape(1, 2, 3)  # agent 0: 0 1 2, agent 1: 6 7 8
    best = torch.tensor([[2, 0]])
    joint = deviation_joint_values(q, best)
    for i, u in itertools.product(range(2), range(3)):
        want = [float(q[0, k, u if k == i else best[0, k]]) for k in range(2)]
        assert joint[0, i, u].tolist() == want


def test_softmax_beta_errors(make_config):
    with pytest.raises(ConfigError, match="algo.softmax_beta"):
        game_config(make_config, "qmix", "algo.softmax_beta=-1")
    with pytest.raises(ConfigError, match="algo.softmax_beta.*recurrent"):
        game_config(make_config, "qmix", "algo.softmax_beta=1", "model.recurrent=gru")
