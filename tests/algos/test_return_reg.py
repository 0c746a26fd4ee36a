"""The Monte-Carlo return regularizer of VDN/QMIX (``algo.return_reg``, Pan et al. 2021): returns from the replay
against a naive walk over the written episodes, the penalty in the loss by hand, and its config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marl.algos.value_decomposition import return_penalty, standardized_baseline
from marl.config import ConfigError, QMIXConfig, VDNConfig
from marl.data import ReplayBuffer
from marl.normalization import RunningMeanStd
from marl.off_policy.team import team_episode_returns
from tests.algos.test_value_decomposition import game_config, perturbed_learner, team_batch

FLAG = ((2,), np.bool_)


def two_agent_schema() -> dict:
    return {"obs": ((2, 1), np.float32), "next_obs": ((2, 1), np.float32), "action": ((2,), np.int64),
            "reward": ((2,), np.float32), "terminated": FLAG, "truncated": FLAG, "alive": FLAG, "next_alive": FLAG}


def fill(replays: dict[str, ReplayBuffer], steps: int, rng: np.random.Generator) -> list[dict[str, dict]]:
    """Write ``steps`` vector steps of random rows: episodes of random lengths per lane, an agent that dies early
    in some episodes (it stops acting: alive False afterwards), terminations and time limits."""
    n_envs = next(iter(replays.values())).n_envs
    t_in_episode = np.zeros(n_envs, np.int64)
    lengths = rng.integers(2, 7, n_envs)
    dies = rng.random(n_envs) < 0.5
    written = []
    for _ in range(steps):
        step = {}
        ends = t_in_episode + 1 >= lengths
        for name, buf in replays.items():
            alive = np.ones((n_envs, 2), bool)
            alive[:, 1] &= ~(dies & (t_in_episode >= 2)) if name == "a" else True
            terminated = np.zeros((n_envs, 2), bool)
            truncated = np.zeros((n_envs, 2), bool)
            limit = rng.random(n_envs) < 0.5
            terminated[ends & ~limit] = True
            truncated[ends & limit] = True
            terminated[:, 1] |= (name == "a") & dies & (t_in_episode == 1)  # agent 1 of group a dies at step 1
            next_obs = (len(written) + np.arange(2)[:, None] / 10 + np.zeros((n_envs, 2, 1))).astype(np.float32)
            row = {"obs": np.zeros((n_envs, 2, 1), np.float32), "next_obs": next_obs,
                   "action": np.zeros((n_envs, 2), np.int64),
                   "reward": rng.normal(size=(n_envs, 2)).astype(np.float32), "terminated": terminated,
                   "truncated": truncated, "alive": alive, "next_alive": alive}
            buf.add(row)
            step[name] = row
        written.append(step)
        t_in_episode = np.where(ends, 0, t_in_episode + 1)
        lengths = np.where(ends, rng.integers(2, 7, n_envs), lengths)
        dies = np.where(ends, rng.random(n_envs) < 0.5, dies)
    return written


def naive_return(written: list[dict[str, dict]], t: int, e: int, horizon: int, gamma: float) -> tuple[float, bool]:
    """Walk lane ``e`` forward from step ``t``: the team reward of every row until the team's episode ends."""
    g, k = 0.0, 0
    while t + k < len(written) and k < horizon:
        rows = written[t + k]
        over = True
        for row in rows.values():
            for a in range(2):
                if row["alive"][e, a]:
                    g += gamma ** k * float(row["reward"][e, a])
                    over &= bool(row["terminated"][e, a] or row["truncated"][e, a])
        if over:
            return g, True
        k += 1
    return g, False


@pytest.mark.parametrize("groups", [("a",), ("a", "b")])
@pytest.mark.parametrize("horizon, capacity_steps", [(12, 40), (3, 40), (12, 15)])
def test_team_episode_returns_equal_a_walk_over_the_written_episodes(horizon, capacity_steps, groups):
    """One group, or two written in lockstep; two lanes: complete and partial (unfinished, or longer than the
    horizon) episodes, an agent that dies mid-episode (the episode goes on; its later rewards are left out), and
    (capacity 15 steps of 30) rows overwritten in a ring."""
    rng = np.random.default_rng(3)
    n_envs, steps, gamma = 2, 30, 0.9
    replays = {name: ReplayBuffer(two_agent_schema(), capacity_steps * n_envs, n_envs, gamma=gamma)
               for name in groups}
    written = fill(replays, steps, rng)
    first_kept = max(0, steps - capacity_steps)
    t = np.repeat(np.arange(first_kept, steps), n_envs)
    e = np.tile(np.arange(n_envs), steps - first_kept)
    indices = (t % capacity_steps) * n_envs + e
    g, n, complete = team_episode_returns(replays, indices, horizon, gamma)
    expected = [naive_return(written, int(ti), int(ei), horizon, gamma) for ti, ei in zip(t, e)]
    np.testing.assert_allclose(g, [x[0] for x in expected], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(complete, [x[1] for x in expected])
    assert complete.any() and not complete.all()  # both kinds occur
    assert (n >= 1).all() and (n <= horizon).all()


def test_team_episode_returns_by_hand():
    """One lane, one group: rewards 1, 2, 4 then the episode ends (truncated), then a running episode."""
    schema = two_agent_schema()
    buf = {"a": ReplayBuffer(schema, 8, 1, gamma=0.5)}
    for k, (r, done) in enumerate([(1.0, False), (2.0, False), (4.0, True), (8.0, False)]):
        buf["a"].add({"obs": np.zeros((1, 2, 1), np.float32), "next_obs": np.zeros((1, 2, 1), np.float32),
                      "action": np.zeros((1, 2), np.int64), "reward": np.array([[r, 0.0]], np.float32),
                      "terminated": np.zeros((1, 2), bool), "truncated": np.full((1, 2), done),
                      "alive": np.ones((1, 2), bool), "next_alive": np.ones((1, 2), bool)})
    g, n, complete = team_episode_returns(buf, np.arange(4), 10, 0.5)
    np.testing.assert_allclose(g, [1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4.0, 8.0])
    np.testing.assert_array_equal(n, [3, 2, 1, 1])
    np.testing.assert_array_equal(complete, [True, True, True, False])


@pytest.mark.parametrize("standardize_returns", [False, True])
def test_the_penalty_enters_the_loss_by_hand(standardize_returns):
    """loss(lambda) - loss(0) = lambda * mean over the valid rows with a whole episode of (Q_tot - G)^2 (in the
    standardized units with ``standardize_returns``); the TD errors do not change."""
    lam = 0.3
    g = torch.tensor([-4.0, 2.5, 7.0])
    complete = torch.tensor([True, False, True])
    b = team_batch()._replace(episode_return=g, return_complete=complete)
    base = perturbed_learner(VDNConfig(standardize_returns=standardize_returns))
    reg = perturbed_learner(VDNConfig(standardize_returns=standardize_returns, return_reg=lam))
    for learner in (base, reg):
        if standardize_returns:
            learner.return_stats.update(np.array([-30.0, -12.0, 4.0]))
    loss0, td0, _ = base.losses(b)
    loss1, td1, metrics = reg.losses(b)
    torch.testing.assert_close(td1, td0)
    rows = b.groups["agent"]
    with torch.no_grad():
        q_on = reg.q["agent"](rows.obs).numpy()
    q_tot = np.array([sum(q_on[i, a, rows.action[i, a]] for a in range(2) if rows.alive[i, a]) for i in range(3)])
    baseline = g.numpy().astype(np.float64)
    if standardize_returns:
        baseline = (baseline - float(reg.return_stats.mean)) / (float(reg.return_stats.std) + 1e-5)
    rows_used = np.array([0, 2])
    expected = lam * np.mean((q_tot[rows_used] - baseline[rows_used]) ** 2)
    assert float((loss1 - loss0).detach()) == pytest.approx(expected, rel=1e-4)
    assert float(metrics["q_minus_return"]) == pytest.approx(np.mean(q_tot[rows_used] - baseline[rows_used]), rel=1e-4)
    assert float(metrics["q_loss"]) == pytest.approx(float(loss0.detach()), rel=1e-6)  # the TD term alone
    assert float(metrics["return_penalty"]) == pytest.approx(expected / lam, rel=1e-4)


def test_return_penalty_and_baseline_helpers():
    q = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    penalty, gap = return_penalty(q, torch.tensor([0.0, 0.0, 1.0]), torch.tensor([True, False, True]),
                                  torch.tensor([1.0, 1.0, 2.0]))
    assert float(penalty) == pytest.approx((1.0 + 2.0 * 4.0) / 2)  # PER weights as in the TD term
    assert float(gap) == pytest.approx((1.0 + 2.0) / 2)
    penalty.backward()
    np.testing.assert_allclose(q.grad.numpy(), [1.0, 0.0, 4.0])  # d/dq of (w (q - G)^2) / 2 rows
    stats = RunningMeanStd(())
    stats.update(np.array([2.0, 6.0]))
    assert float(stats.mean) == pytest.approx(4.0, rel=1e-3) and float(stats.std) == pytest.approx(2.0, rel=1e-3)
    z = (np.array([8.0, 0.0]) - float(stats.mean)) / (float(stats.std) + 1e-5)
    np.testing.assert_allclose(standardized_baseline(torch.tensor([8.0, 0.0]), stats).numpy(), z, rtol=1e-6)
    _, none = return_penalty(q.detach(), torch.zeros(3), torch.zeros(3, dtype=torch.bool), torch.ones(3))
    assert float(none) == 0.0


def test_return_reg_config_errors(make_config):
    with pytest.raises(ConfigError, match="algo.return_reg: .*standardize_rewards=false"):
        game_config(make_config, "qmix", "algo.return_reg=0.1", "algo.standardize_rewards=true")
    with pytest.raises(ConfigError, match="algo.return_reg"):
        game_config(make_config, "vdn", "algo.return_reg=-1")
    with pytest.raises(ConfigError, match="algo.return_horizon"):
        game_config(make_config, "vdn", "algo.return_horizon=0")
    assert QMIXConfig().return_reg == 0.0  # off by default


def test_return_stats_take_in_the_whole_episodes_returns():
    """``algo.return_stats=returns``: the running statistics take in G of the valid rows whose episode ended (not the
    TD targets); the target mixer's value is mapped to return units with the statistics before the batch, the
    targets standardized with those after it. With ``targets`` the statistics take in the targets instead."""
    g = torch.tensor([-4.0, 2.5, 7.0])
    complete = torch.tensor([True, False, True])
    b = team_batch()._replace(episode_return=g, return_complete=complete)
    raw = perturbed_learner(VDNConfig())
    by_returns = perturbed_learner(VDNConfig(standardize_returns=True, return_stats="returns"))
    by_targets = perturbed_learner(VDNConfig(standardize_returns=True))
    earlier = np.array([-30.0, -12.0, 4.0])
    by_returns.return_stats.update(earlier)
    mean_pre, std_pre = float(by_returns.return_stats.mean), float(by_returns.return_stats.std)
    _, td_raw, _ = raw.losses(b)
    _, td, _ = by_returns.losses(b)
    by_targets.losses(b)
    stats = by_returns.return_stats
    seen = np.concatenate([earlier, [-4.0, 7.0]])  # row 1's episode is not whole
    assert float(stats.mean) == pytest.approx(seen.mean(), abs=1e-3)
    assert float(stats.var) == pytest.approx(seen.var(), rel=1e-3)
    assert float(by_targets.return_stats.mean) != pytest.approx(float(g[[0, 2]].mean()), abs=0.1)
    rows = b.groups["agent"]
    with torch.no_grad():
        q_tot = raw.mixer(raw.agent_values(b)[0], None, rows.alive)
    reward = (rows.reward_n * rows.alive).sum(-1)
    going_on = ~(rows.terminated_n | ~rows.alive).all(-1)
    y_raw = q_tot - td_raw  # reward + discount * going_on * v
    y = reward + (y_raw - reward) * (std_pre + 1e-5) + b.discount_n * going_on * mean_pre
    y_std = (y - float(stats.mean)) / (float(stats.std) + 1e-5)
    torch.testing.assert_close(td, q_tot - y_std, rtol=1e-5, atol=1e-5)


def test_return_stats_std_floor():
    """Episodes that all return 0 (sparse rewards before the first success) do not shrink the std below 5% of the
    largest |G| seen: the first return of 0.25 lands 20 std away (plain statistics: about 80 here, more the longer
    the zeros last)."""
    from marl.algos.value_decomposition import ReturnStats

    floored, plain = ReturnStats(), RunningMeanStd(())
    for stats in (floored, plain):
        for _ in range(200):
            stats.update(np.zeros(32))
        stats.update(np.array([0.25]))
    assert float(plain.std) < 5e-3  # 0.25 would stand about 80 std out
    assert float(floored.std) == pytest.approx(0.05 * 0.25)
    assert floored.scale == 0.25


def test_return_stats_floor_survives_a_checkpoint():
    """The largest |G| is saved with the moments: a resumed run floors the std as the uninterrupted one does (a
    rare 1.0 among zeros: 0.05 either way, not the 0.006 of the moments alone); an older state without it loads
    with no floor."""
    from marl.algos.value_decomposition import ReturnStats

    stats = ReturnStats()
    stats.update(np.array([1.0]))
    for _ in range(500):
        stats.update(np.zeros(32))
    resumed = ReturnStats()
    resumed.load_state_dict(stats.state_dict())
    for s in (stats, resumed):
        s.update(np.zeros(32))
    assert float(resumed.std) == float(stats.std) == pytest.approx(0.05)
    old = {k: v for k, v in stats.state_dict().items() if k != "scale"}
    legacy = ReturnStats()
    legacy.load_state_dict(old)
    assert legacy.scale == 0.0 and float(legacy.std) < 0.01


def test_episodes_beyond_the_return_horizon_warn_once(make_config):
    """Spread's episodes last 25 steps: return_horizon=10 leaves their first 15 rows without G (a warning naming
    the fix, once per run); return_horizon=25 covers them (no warning)."""
    import warnings

    from marl.api import train

    tiny = ("env.num_envs=4", "total_env_steps=400", "algo.learning_starts=100", "eval.interval=0",
            "eval.episodes=2", "eval.num_envs=2", "checkpoint.interval=0", "algo.return_reg=0.1")
    with pytest.warns(UserWarning, match="ran 25 env steps, more than algo.return_horizon=10") as caught:
        train(make_config("configs/spread_vdn.yaml", *tiny, "algo.return_horizon=10", run="short"))
    assert sum("return_horizon" in str(w.message) for w in caught) == 1
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*return_horizon.*")
        train(make_config("configs/spread_vdn.yaml", *tiny, "algo.return_horizon=25", run="covered"))


def test_return_stats_errors(make_config):
    with pytest.raises(ConfigError, match="algo.return_stats.*standardize_returns=true"):
        game_config(make_config, "vdn", "algo.return_stats=returns")
    with pytest.raises(ConfigError, match="algo.return_stats.*standardize_rewards=false"):
        game_config(make_config, "vdn", "algo.return_stats=returns", "algo.standardize_returns=true",
                    "algo.standardize_rewards=true")
