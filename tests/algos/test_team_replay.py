"""n-step targets of value decomposition's team replays with several groups: one window per row for every group,
cut where an agent of any group ends, against a naive walk over the written steps."""

from __future__ import annotations

import numpy as np
import pytest

from marl.data import ReplayBuffer
from marl.off_policy.team import team_nstep_targets, team_samples
from tests.algos.test_return_reg import fill, two_agent_schema


def naive_window(written: list[dict[str, dict]], t: int, e: int, n_step: int) -> int:
    """Rows in the window of lane ``e`` from step ``t``: up to ``n_step``, through the first row where an agent of
    any group is terminated or truncated, within the written steps."""
    k = 0
    while k < n_step and t + k < len(written):
        k += 1
        if any((row["terminated"][e] | row["truncated"][e]).any() for row in written[t + k - 1].values()):
            break
    return k


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
@pytest.mark.parametrize("n_step", [2, 4])
def test_every_group_shares_the_team_window(n_step, order):
    """Group a's agent 1 dies at step 1 of some episodes: group b's windows (whose own rows never end there) are
    cut at that row too, whichever group samples; rewards, discounts and the after-window fields of both groups
    against the walk."""
    rng = np.random.default_rng(5)
    n_envs, steps, gamma = 2, 30, 0.9
    replays = {name: ReplayBuffer(two_agent_schema(), 40 * n_envs, n_envs, n_step=n_step, gamma=gamma)
               for name in order}
    written = fill(replays, steps, rng)
    t = np.repeat(np.arange(steps), n_envs)
    e = np.tile(np.arange(n_envs), steps)
    targets = team_nstep_targets(replays, t * n_envs + e)
    lengths = np.array([naive_window(written, int(ti), int(ei), n_step) for ti, ei in zip(t, e)])
    for g in ("a", "b"):
        np.testing.assert_allclose(targets[g]["discount_n"], gamma ** lengths, rtol=1e-6)
        for i, (ti, ei, n) in enumerate(zip(t, e, lengths)):
            reward = sum(gamma ** k * written[ti + k][g]["reward"][ei] for k in range(n))
            np.testing.assert_allclose(targets[g]["reward_n"][i], reward, rtol=1e-5, atol=1e-6)
            last = written[ti + n - 1][g]
            np.testing.assert_array_equal(targets[g]["next_obs_n"][i], last["next_obs"][ei])
            np.testing.assert_array_equal(targets[g]["terminated_n"][i], last["terminated"][ei])
    own_b = replays["b"].nstep_target(t * n_envs + e)["discount_n"]
    assert (own_b != targets["b"]["discount_n"]).any()  # the cross-group cut happens in this data
    assert (lengths > 1).any() and (lengths == 1).any()


def test_sampled_team_rows_carry_the_team_window():
    """team_samples: the first group's sample and every other group's rows hold the shared window's fields."""
    rng = np.random.default_rng(2)
    replays = {name: ReplayBuffer(two_agent_schema(), 80, 2, n_step=3, gamma=0.8) for name in ("a", "b")}
    fill(replays, 30, rng)
    first, rows = team_samples(replays, 64, np.random.default_rng(0), None)
    targets = team_nstep_targets(replays, first.indices)
    np.testing.assert_array_equal(first.discount_n, targets["a"]["discount_n"])
    for g in ("a", "b"):
        np.testing.assert_array_equal(rows[g]["reward_n"], targets[g]["reward_n"])
        np.testing.assert_array_equal(rows[g]["next_obs_n"], targets[g]["next_obs_n"])
        np.testing.assert_array_equal(rows[g]["next_alive_n"], targets[g]["next_alive_n"])


def test_an_agent_dead_before_a_truncation_stays_out_of_the_bootstrap():
    """tests/env/test_adapters.py's DyingEnv: agent_1 dies at step 2, agent_0 is truncated at step 4. The team row
    of step 4 bootstraps agent_0 alone: agent_1's next fields are a gone agent's (zeros, not alive, every action),
    never the next episode's first observation, alive flag and mask (which the plain rows give it)."""
    import torch

    from marl.algos.value_decomposition import bootstrap_alive
    from marl.env.adapters import ParallelAdapter
    from marl.env.vector import make_vector_env
    from marl.off_policy.replay import replay_rows
    from marl.off_policy.team import team_rows
    from marl.types import ActOutput
    from tests.env.test_adapters import DyingEnv

    with make_vector_env(lambda: ParallelAdapter(DyingEnv(masks=True)), 1) as venv:
        before, _ = venv.reset(seed=[0])
        for _ in range(4):
            action = np.zeros((1, 2), np.int64)
            out = ActOutput({"agent": torch.as_tensor(action)}, {"agent": action}, {}, {}, {}, {})
            step = venv.step({"agent": action})
            rows, plain = team_rows(["agent"], before, out, step, None, False)["agent"], replay_rows(
                before["agent"], action, step.transition["agent"], step.obs["agent"], None, None)
            first = before
            before = step.obs
    assert len(step.episodes) == 1 and first["agent"].alive[0].tolist() == [True, False]
    assert rows["truncated"][0].tolist() == [True, False] and rows["terminated"][0].tolist() == [False, False]
    assert rows["next_alive"][0].tolist() == [True, False]
    assert rows["next_obs"][0, 1].tolist() == [0, 0, 0] and rows["next_obs"][0, 0].tolist() == [4, 0, 7]
    assert rows["next_action_mask"][0, 1].all()
    assert plain["next_alive"][0].tolist() == [True, True]  # what the team row must not be: the next episode's
    in_bootstrap = bootstrap_alive(torch.as_tensor(rows["next_alive"]), torch.as_tensor(rows["terminated"]))
    assert in_bootstrap[0].tolist() == [True, False]
