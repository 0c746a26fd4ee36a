"""Numeric health checks and the warning signs, on synthetic metric series with known answers, and
wired into the off-policy loop (a NaN reward stops it before a checkpoint is overwritten)."""

import math
from dataclasses import replace

import gymnasium
import numpy as np
import pytest
import torch
from torch import nn

from marl import checkpoint as ckpt
from marl.config import HealthConfig
from marl.health import (
    OFF_POLICY_REMEDIES,
    REMEDIES,
    HealthMonitor,
    NonFiniteError,
    check_finite_metrics,
    check_finite_update,
    check_inputs,
    entropy_action_dims,
    first_nonfinite,
    largest_return,
    nonfinite_metrics,
)
from marl.health.signs import ent_coef_collapse, entropy_collapse, q_divergence, returns_collapse
from marl.off_policy import OffPolicyTrainer
from marl.types import EnvSpec, GroupSpec

STEPS = 1000  # env steps per check in these series


def feed(monitor, rows, start=0):
    """Observe ``rows`` as checks ``start, start + 1, ...``; return ``[(check index, warning)]``."""
    return [(i, w) for i, row in enumerate(rows, start) for w in monitor.observe(row, (i + 1) * STEPS)]


def healthy_rows(n=300, seed=0):
    """A run as the seed says it should look: every metric in its expected range, with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    rows = []
    for i in t:
        ret = 100 * (1 - np.exp(-i / 40)) + rng.normal(0, 4)
        rows.append({
            "train/entropy": 1.6 * np.exp(-i / 200) + rng.normal(0, 0.02),   # 1.6 -> 0.36, gradual
            "train/entropy/a": 1.6 * np.exp(-i / 250) + rng.normal(0, 0.02),
            "train/approx_kl": 0.01 + rng.normal(0, 0.004),
            "train/clip_fraction": rng.uniform(0.1, 0.3),
            "train/explained_variance": min(0.9, -0.5 + i / 20) + rng.normal(0, 0.02),  # < 0 for 10 checks
            "train/lr": 3e-4,
            "rollout/ep_return": ret,
            "rollout/ep_return/agent_0": ret / 2 + rng.normal(0, 10),
        })
    return rows


def series_rows(key, values, **extra):
    return [{key: float(v), **extra} for v in values]


def checks_of(key, values, **cfg):
    """Check indices at which one series of ``values`` raises a warning, under ``HealthConfig(**cfg)``."""
    return [i for i, _ in feed(HealthMonitor(HealthConfig(**cfg)), series_rows(key, values))]


# --------------------------------------------------------------------------- no false alarms
@pytest.mark.parametrize("seed", range(5))
def test_a_healthy_run_raises_no_warning(seed):
    rows = healthy_rows(seed=seed)
    assert feed(HealthMonitor(HealthConfig()), rows) == []
    # the same series do reach each check: tighter thresholds fire on them
    strict = HealthConfig(kl_high=0.005, clip_high=0.2, ev_low=0.95, entropy_abs_floor=1.0)
    assert {w.name for _, w in feed(HealthMonitor(strict), rows)} == {
        "kl_high", "clip_fraction_high", "explained_variance_low", "entropy_collapse"}


def test_disabled_monitor_reports_nothing():
    rows = series_rows("train/approx_kl", [0.5] * 20)
    assert feed(HealthMonitor(HealthConfig(enabled=False)), rows) == []
    assert len(feed(HealthMonitor(HealthConfig()), rows)) == 1


# --------------------------------------------------------------------------- each sign, at the right check
def test_entropy_collapse_fires_after_patience_checks_once():
    values = [1.6] * 20 + [0.02] * 30  # floor = max(0.05 * 1.6, 0.01) = 0.08
    found = feed(HealthMonitor(HealthConfig()), series_rows("train/entropy", values))
    assert len(found) == 1
    i, w = found[0]
    assert i == 20 + 5 - 1 and w.env_steps == 25 * STEPS
    assert (w.name, w.metric) == ("entropy_collapse", "train/entropy")
    assert "1.6" in w.message and "0.02" in w.message and "0.08" in w.message
    assert "algo.ent_coef" in w.remedy and w.remedy == REMEDIES["entropy_collapse"]
    assert "25,000 env steps" in str(w)


def test_entropy_absolute_floor_and_patience_are_respected():
    values = [0.5] * 5 + [0.03] * 20  # relative floor 0.025: 0.03 is above it
    assert feed(HealthMonitor(HealthConfig()), series_rows("train/entropy", values)) == []
    assert checks_of("train/entropy", values, entropy_abs_floor=0.05, patience=3) == [5 + 3 - 1]


def test_entropy_collapse_of_one_group_names_that_group():
    rows = [{"train/entropy/a": 1.0, "train/entropy/b": 1.0 if i < 10 else 0.001,
             "train/entropy": 1.0 if i < 10 else 0.5} for i in range(30)]
    found = feed(HealthMonitor(HealthConfig()), rows)
    assert [(i, w.metric) for i, w in found] == [(14, "train/entropy/b")]


def test_gaussian_entropy_is_judged_by_the_action_std():
    d, h0 = 2, 2 * (0.5 + 0.5 * np.log(2 * np.pi))  # std 1 in 2 dims: 2.84 nats
    mild = [h0] * 5 + [h0 + d * np.log(0.2)] * 20   # std fell to 20%: negative entropy, but not a collapse
    sharp = [h0] * 5 + [h0 + d * np.log(0.03)] * 20  # std fell to 3% < 5%
    dims = {"train/entropy": d}
    assert feed(HealthMonitor(HealthConfig(), dims), series_rows("train/entropy", mild)) == []
    assert checks_of("train/entropy", mild) == [5 + 5 - 1]  # judged as a categorical entropy
    found = feed(HealthMonitor(HealthConfig(), dims), series_rows("train/entropy", sharp))
    assert [i for i, _ in found] == [9] and "3.0%" in found[0][1].message
    assert entropy_collapse(sharp, 0.05, 0.01, 5, gaussian_dims=d) is not None
    assert entropy_collapse(sharp, 0.02, 0.01, 5, gaussian_dims=d) is None


def test_kl_persistently_high_fires_and_short_spikes_do_not():
    spikes = ([0.01] * 10 + [0.08] * 4) * 5
    assert feed(HealthMonitor(HealthConfig()), series_rows("train/approx_kl", spikes)) == []
    values = [0.01] * 30 + [0.08] * 20
    found = feed(HealthMonitor(HealthConfig()), series_rows("train/approx_kl", values))
    assert [(i, w.name) for i, w in found] == [(34, "kl_high")]
    assert "algo.lr" in found[0][1].remedy
    assert checks_of("train/approx_kl", values, kl_high=0.1) == []
    assert checks_of("train/approx_kl", values, patience=2) == [31]


def test_clip_fraction_near_zero_and_near_one():
    low = [0.2] * 10 + [0.001] * 10
    high = [0.2] * 10 + [0.95] * 10
    lo = feed(HealthMonitor(HealthConfig()), series_rows("train/clip_fraction", low, **{"train/lr": 3e-4}))
    hi = feed(HealthMonitor(HealthConfig()), series_rows("train/clip_fraction", high))
    assert [(i, w.name) for i, w in lo] == [(14, "clip_fraction_low")] and "clip_coef" in lo[0][1].remedy
    assert [(i, w.name) for i, w in hi] == [(14, "clip_fraction_high")] and "algo.lr" in hi[0][1].remedy
    assert feed(HealthMonitor(HealthConfig(clip_low=0.0005)), series_rows("train/clip_fraction", low)) == []
    assert feed(HealthMonitor(HealthConfig(clip_high=0.99)), series_rows("train/clip_fraction", high)) == []


def test_clip_fraction_near_zero_is_expected_once_the_learning_rate_has_annealed():
    n = 100
    rows = [{"train/lr": 3e-4 * (1 - i / n), "train/clip_fraction": 0.2 * (1 - i / n) ** 2} for i in range(n)]
    assert feed(HealthMonitor(HealthConfig()), rows) == []  # clip < 0.005 only once lr < 16% of its start
    found = feed(HealthMonitor(HealthConfig(lr_quiet_frac=0.0)), rows)
    assert [w.name for _, w in found] == ["clip_fraction_low"]


def test_explained_variance_negative_after_warmup():
    values = [-0.3] * 30
    found = feed(HealthMonitor(HealthConfig()), series_rows("train/explained_variance", values))
    assert [(i, w.name) for i, w in found] == [(10 + 5 - 1, "explained_variance_low")]
    assert checks_of("train/explained_variance", values, ev_warmup=0, ev_low=-0.5) == []
    assert checks_of("train/explained_variance", values, ev_warmup=0) == [4]
    early = [-0.3] * 9 + [0.5] * 20  # a fresh critic: negative only during the warm-up
    assert feed(HealthMonitor(HealthConfig()), series_rows("train/explained_variance", early)) == []


def test_nan_metrics_are_skipped():
    rows = series_rows("train/explained_variance", [float("nan")] * 30)
    monitor = HealthMonitor(HealthConfig())
    assert feed(monitor, rows) == [] and "train/explained_variance" not in monitor.series


# --------------------------------------------------------------------------- returns rising then collapsing
def rise_then_collapse():
    return list(np.linspace(0, 100, 50)) + [100.0] * 10 + [20.0] * 30


def test_returns_collapse_fires_at_the_hand_computed_check():
    # Moving average (window 10) of the drop: s_t = 100 - 8 (t - 59); below 100 - 0.5 * 100 = 50 from t = 66;
    # five checks in a row -> t = 70.
    x = rise_then_collapse()
    assert returns_collapse(x[:70], 0.5, 10, 3.0, 5) is None
    assert returns_collapse(x[:71], 0.5, 10, 3.0, 5) is not None
    found = feed(HealthMonitor(HealthConfig()), series_rows("rollout/ep_return", x))
    assert [(i, w.name) for i, w in found] == [(70, "returns_collapse")]
    assert "100" in found[0][1].message and "algo.lr" in found[0][1].remedy
    # window 4: s_t = 100 - 20 (t - 59) < 50 from t = 62 -> t = 66
    found = feed(HealthMonitor(HealthConfig(return_window=4)), series_rows("rollout/ep_return", x))
    assert [i for i, _ in found] == [66]


def test_returns_collapse_with_noise_and_changed_thresholds():
    rng = np.random.default_rng(3)
    x = np.array(rise_then_collapse()) + rng.normal(0, 3, 90)
    found = feed(HealthMonitor(HealthConfig()), series_rows("rollout/ep_return", x))
    assert len(found) == 1 and 66 <= found[0][0] <= 80
    assert feed(HealthMonitor(HealthConfig(collapse_frac=0.9)), series_rows("rollout/ep_return", x)) == []


def test_returns_that_never_rose_or_only_dip_do_not_fire():
    rng = np.random.default_rng(4)
    flat = rng.normal(-50, 5, 200)  # noise only: any "rise" is within the noise
    dip = list(np.linspace(0, 100, 50)) + [100.0] * 10 + [20.0] * 3 + [100.0] * 30
    per_agent = series_rows("rollout/ep_return/agent_0", rise_then_collapse())
    for rows in (series_rows("rollout/ep_return", flat), series_rows("rollout/ep_return", dip), per_agent):
        assert feed(HealthMonitor(HealthConfig()), rows) == []


# --------------------------------------------------------------------------- once per run, across resume
def unhealthy_rows():
    rows = healthy_rows(120, seed=1)
    for i, row in enumerate(rows):
        row["train/lr"] = 3e-4 * (1 - i / 120)  # annealed: clip fractions near 0 after check 60 are expected
        if i >= 80:
            row["train/clip_fraction"] = 0.001
        if i >= 40:
            row["train/approx_kl"] = 0.2
        if i >= 70:
            row["train/entropy/a"] = 0.0
    return rows


def test_each_warning_is_reported_once_per_series():
    found = feed(HealthMonitor(HealthConfig()), unhealthy_rows())
    assert [(i, w.name, w.metric) for i, w in found] == [(44, "kl_high", "train/approx_kl"),
                                                         (74, "entropy_collapse", "train/entropy/a")]


@pytest.mark.parametrize("split", [42, 60, 90])
def test_state_round_trip_gives_the_uninterrupted_warnings_without_repeats(tmp_path, split):
    rows = unhealthy_rows()
    whole = feed(HealthMonitor(HealthConfig()), rows)
    first = HealthMonitor(HealthConfig())
    before = feed(first, rows[:split])
    torch.save(first.state_dict(), tmp_path / "health.pt")
    resumed = HealthMonitor(HealthConfig())
    resumed.load_state_dict(torch.load(tmp_path / "health.pt", weights_only=True))
    after = feed(resumed, rows[split:], start=split)
    assert before + after == whole
    fresh = feed(HealthMonitor(HealthConfig()), rows[split:], start=split)
    assert fresh != after  # without the state a resumed run would judge (and warn) differently


# --------------------------------------------------------------------------- config and spec helpers
def test_config_defaults_are_the_seed_thresholds_and_problems_name_the_key():
    cfg = HealthConfig()
    seed_values = (cfg.kl_high, cfg.clip_low, cfg.clip_high, cfg.ev_low, cfg.entropy_floor_frac)
    assert seed_values == (0.05, 0.005, 0.9, 0.0, 0.05)
    assert cfg.enabled and not cfg.check_inputs
    assert cfg.problems() == []
    bad = replace(HealthConfig(), patience=0, clip_low=0.95, collapse_frac=1.5)
    assert [k for k, _ in bad.problems()] == ["patience", "clip_low", "collapse_frac"]
    assert "got 0" in bad.problems()[0][1]
    off_policy = replace(HealthConfig(), q_bound_factor=0.5, q_growth=1.0, ent_coef_floor_frac=0.0)
    assert [k for k, _ in off_policy.problems()] == ["q_bound_factor", "q_growth", "ent_coef_floor_frac"]


def test_entropy_action_dims_from_the_spec():
    box = gymnasium.spaces.Box(-1, 1, (4,))
    disc = gymnasium.spaces.Discrete(5)
    g = lambda name, space: GroupSpec(name, (f"{name}_0", f"{name}_1"), box, space)  # noqa: E731
    single = EnvSpec(("a_0", "a_1"), (g("a", gymnasium.spaces.Box(-1, 1, (3,))),))
    assert entropy_action_dims(single) == {"train/entropy": 3}
    mixed = entropy_action_dims(EnvSpec((), (g("a", disc), g("b", gymnasium.spaces.Box(-1, 1, (2,))))))
    assert mixed == {"train/entropy/a": 0, "train/entropy/b": 2, "train/entropy": None}
    assert entropy_action_dims(EnvSpec((), (g("a", disc), g("b", disc))))["train/entropy"] == 0


# --------------------------------------------------------------------------- numeric health
def test_first_nonfinite_finds_the_right_tensor():
    ok = torch.ones(3)
    assert first_nonfinite([("a", ok), ("b", None), ("c", torch.arange(3))]) is None
    named = [("a", ok), ("b", torch.tensor([1.0, float("inf")])), ("c", torch.tensor([float("nan")]))]
    assert first_nonfinite(named) == "b"
    assert first_nonfinite(named[::2]) == "c"


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))


def test_finite_update_passes():
    net = small_net()
    loss = net(torch.randn(5, 3)).pow(2).mean()
    loss.backward()
    check_finite_update(loss, None, net)
    check_finite_update(loss, 0.3, net)
    check_finite_update(loss, torch.tensor(0.3), net)


def test_an_infinite_gradient_is_named():
    net = small_net()
    bias = net[2].bias
    loss = net(torch.randn(5, 3)).mean() + torch.sqrt(bias - bias.detach()).sum()  # d sqrt(x)/dx at 0 = inf
    loss.backward()
    with pytest.raises(NonFiniteError, match=r"gradient of 2\.bias is inf \(1 of 1 entries\)") as err:
        check_finite_update(loss, None, net)
    assert "lower algo.lr" in str(err.value) and "norm.obs" in str(err.value)


def test_checked_before_clipping_the_source_is_named_and_clipping_would_have_hidden_it():
    net = small_net()
    net(torch.randn(5, 3)).mean().backward()
    net[0].bias.grad[1] = float("nan")
    grads = [p.grad for p in net.parameters()]
    norm = torch.nn.utils.get_total_norm(grads)
    loss = torch.tensor(0.5)
    with pytest.raises(NonFiniteError, match=r"gradient of 0\.bias is nan \(1 of 4 entries\)"):
        check_finite_update(loss, norm, net)
    torch.nn.utils.clip_grads_with_norm_(list(net.parameters()), 0.5, norm)
    assert all(g.isnan().all() for g in grads)  # after clipping every gradient is NaN
    with pytest.raises(NonFiniteError, match=r"gradient of 0\.weight"):
        check_finite_update(loss, None, net)


def test_huge_but_finite_gradients_pass():
    net = small_net()
    net(torch.randn(5, 3)).mean().backward()
    net[2].weight.grad.fill_(3e38)  # their float32 sum overflows; every entry is finite
    check_finite_update(torch.tensor(1.0), None, net)


def test_a_nan_parameter_is_named_before_the_loss_it_poisons():
    net = small_net()
    with torch.no_grad():
        net[0].weight[1, 2] = float("nan")
    loss = net(torch.randn(5, 3)).mean()
    loss.backward()
    assert not torch.isfinite(loss)
    with pytest.raises(NonFiniteError, match=r"parameter 0\.weight is nan \(1 of 12 entries\)"):
        check_finite_update(loss, None, net)


def test_a_nan_loss_from_a_bad_input_and_an_overflowed_norm():
    net = small_net()
    x = torch.randn(5, 3)
    x[2, 0] = float("nan")
    loss = net(x).mean()
    loss.backward()
    with pytest.raises(NonFiniteError, match="the loss is nan while every parameter is finite"):
        check_finite_update(loss, None, net)
    net.zero_grad()
    good = net(torch.randn(5, 3)).mean()
    good.backward()
    for norm in (float("inf"), torch.tensor(float("inf"))):
        with pytest.raises(NonFiniteError, match="gradient norm is inf although every gradient is finite"):
            check_finite_update(good, norm, net)


def test_error_context_names_the_last_good_checkpoint(tmp_path):
    err = NonFiniteError("non-finite update: the loss is nan")
    ckpt = tmp_path / "latest.pt"
    assert "no checkpoint was written yet" in str(err.with_context(2048, ckpt))
    ckpt.write_bytes(b"x")
    text = str(err.with_context(2048, ckpt))
    assert text.startswith("non-finite update: the loss is nan") and "2,048 env steps" in text
    assert f"the last good checkpoint is kept at {ckpt}" in text


def test_check_inputs_names_group_agent_and_env_copy():
    agents = {"a": ("a_0", "a_1"), "b": ("b_0", "b_1", "b_2")}
    obs = {"a": np.zeros((4, 2, 3), np.float32), "b": np.zeros((4, 3, 2, 2), np.float32)}
    reward = {"a": np.zeros((4, 2), np.float32), "b": np.zeros((4, 3), np.float32)}
    check_inputs(obs, reward, agents)
    reward["b"][3, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"reward \(inf\).*agent 'b_0' of group 'b', env copy 3"):
        check_inputs(obs, reward, agents)
    obs["b"][2, 1, 1, 0] = np.nan  # observations of a group are checked before its rewards
    with pytest.raises(NonFiniteError, match=r"observation \(nan\).*agent 'b_1' of group 'b', env copy 6"):
        check_inputs(obs, reward, agents, env_offset=4)
    check_inputs({"a": obs["a"]}, None, {"a": agents["a"]})  # observations only, as after a reset
    with pytest.raises(NonFiniteError, match="agent 'b_1'"):
        check_inputs(obs, None, agents)
    images = {"a": np.full((4, 2, 3), 255, np.uint8), "b": obs["b"]}
    with pytest.raises(NonFiniteError, match="agent 'b_1'"):
        check_inputs(images, reward, agents)
    with pytest.raises(ValueError, match=r"group 'a' has shape \(4, 3\); expected \[E, 2, \.\.\.\]"):
        check_inputs(obs, {**reward, "a": np.zeros((4, 3))}, agents)


# --------------------------------------------------------------------------- off-policy signs
def test_largest_return_by_hand():
    assert largest_return(2.0, 0.0, 0.9) == pytest.approx(20.0)
    assert largest_return(1.0, 0.5, 0.5) == pytest.approx(3.0)  # soft values: alpha |entropy| per step
    assert largest_return(0.0, 0.0, 0.9) == 0.0 and largest_return(1.0, 0.0, None) == 0.0  # unknown
    assert largest_return(1.0, 0.0, 1.0) == math.inf


def test_q_divergence_fires_above_the_largest_possible_return():
    monitor = HealthMonitor(HealthConfig(), gamma=0.9)
    monitor.note_rewards("agent", np.array([[0.5, -1.0], [0.0, 0.25]]))  # max |r| = 1: bound 10, alarm above 20
    values = [9.0] * 10 + [19.0] * 10 + [-25.0] * 10  # the magnitude counts
    found = feed(monitor, series_rows("train/q_mean", values))
    assert [(i, w.name, w.metric) for i, w in found] == [(24, "q_divergence", "train/q_mean")]
    assert "= 10" in found[0][1].message and "25" in found[0][1].message and "algo.tau" in found[0][1].remedy
    np.testing.assert_allclose(monitor.bounds["train/q_mean"], 10.0)
    assert checks_of_monitor(HealthMonitor(HealthConfig(q_bound_factor=3.0), gamma=0.9), values, 1.0) == []


def checks_of_monitor(monitor, values, reward, key="train/q_mean"):
    monitor.note_rewards("agent", reward)
    return [i for i, _ in feed(monitor, series_rows(key, values))]


def test_q_growth_without_any_reward_seen():
    doubling = [0.1 * 2**i for i in range(12)]  # x32 over 5 checks
    assert checks_of_monitor(HealthMonitor(HealthConfig(), gamma=0.99), doubling, 0.0) == [5]
    slow = [0.1 * 1.2**i for i in range(40)]  # x2.5 over 5 checks: below q_growth = 10
    assert checks_of_monitor(HealthMonitor(HealthConfig(), gamma=0.99), slow, 0.0) == []
    # once a reward is known the bound decides: 0.1 * 2**11 = 205 < 2 * 1 / (1 - 0.99)
    assert checks_of_monitor(HealthMonitor(HealthConfig(), gamma=0.99), doubling, 1.0) == []
    assert q_divergence([1, 2, 4, 8, 16, 32], [0] * 6, 2.0, 10.0, 5) is not None
    assert q_divergence([1, 2, 4, 8, 16, 32], [0, 0, 0, 0, 0, 5], 2.0, 10.0, 5) is None  # bound appeared


def test_q_bounds_per_group_and_with_the_soft_value_bonus():
    monitor = HealthMonitor(HealthConfig(), gamma=0.5)
    monitor.note_rewards("a", 1.0)
    monitor.note_rewards("b", np.array([-3.0]))
    monitor.observe({"train/q_mean/a": 0.0, "train/q_mean/b": 0.0, "train/q_mean": 0.0,
                     "train/ent_coef/a": 0.5, "train/entropy/a": -2.0}, 1)
    assert monitor.bounds == {"train/q_mean/a": [pytest.approx((1.0 + 0.5 * 2.0) / 0.5)],
                              "train/q_mean/b": [pytest.approx(3.0 / 0.5)],
                              "train/q_mean": [pytest.approx(3.0 / 0.5)]}  # the team mean: the largest bound


def test_ent_coef_collapse():
    values = [1.0] * 5 + [5e-4] * 10  # floor 1e-3 of the first value
    found = feed(HealthMonitor(HealthConfig(), remedies=OFF_POLICY_REMEDIES), series_rows("train/ent_coef", values))
    assert [(i, w.name) for i, w in found] == [(9, "ent_coef_collapse")]
    assert "algo.target_entropy" in found[0][1].remedy
    assert ent_coef_collapse(values, 1e-4, 5) is None and ent_coef_collapse(values[:7], 1e-3, 5) is None


def test_off_policy_remedies_name_off_policy_settings():
    values = [1.6] * 20 + [0.02] * 30
    found = feed(HealthMonitor(HealthConfig(), remedies=OFF_POLICY_REMEDIES), series_rows("train/entropy", values))
    assert found[0][1].remedy == OFF_POLICY_REMEDIES["entropy_collapse"] != REMEDIES["entropy_collapse"]
    assert "target_entropy" in found[0][1].remedy
    assert set(OFF_POLICY_REMEDIES) == set(REMEDIES)


def test_q_state_round_trip_and_older_states_load():
    rows = series_rows("train/q_mean", [9.0] * 3 + [50.0] * 10)
    whole = HealthMonitor(HealthConfig(), gamma=0.9)
    whole.note_rewards("agent", 1.0)
    first = HealthMonitor(HealthConfig(), gamma=0.9)
    first.note_rewards("agent", 1.0)
    expected = feed(whole, rows)
    before = feed(first, rows[:5])
    resumed = HealthMonitor(HealthConfig(), gamma=0.9)
    resumed.load_state_dict(first.state_dict())
    assert resumed.reward_abs_max == {"agent": 1.0} and before + feed(resumed, rows[5:], start=5) == expected
    old = {k: v for k, v in first.state_dict().items() if k not in ("bounds", "reward_abs_max")}
    HealthMonitor(HealthConfig()).load_state_dict(old)


def test_nonfinite_metrics_are_named_critic_first():
    metrics = {"train/actor_loss": math.inf, "train/ent_coef": math.nan, "train/other": math.nan,
               "train/q_mean/b": math.nan, "train/q_loss/b": 1.0}
    assert nonfinite_metrics(metrics) == ["train/q_mean/b", "train/actor_loss", "train/ent_coef", "train/other"]
    with pytest.raises(NonFiniteError, match=r"train/q_mean/b is nan \(also non-finite: train/actor_loss, "
                                             r"train/ent_coef, train/other\) in grad steps 1,001-1,050; x; training "
                                             r"stopped\. To fix \(critic\): scale the rewards down"):
        check_finite_metrics(metrics, (1001, 1050), "; x")
    with pytest.raises(NonFiniteError, match=r"train/ent_coef is inf in grad step 7; .*To fix \(entropy coefficient\)"):
        check_finite_metrics({"train/ent_coef": math.inf}, (7, 7))
    with pytest.raises(NonFiniteError, match=r"To fix \(update\): check the scale"):
        check_finite_metrics({"train/per_beta": math.nan}, (1, 2))
    check_finite_metrics({"train/q_loss": 0.5}, (1, 2))


# --------------------------------------------------------------------------- in the off-policy loop
class SpikeReward(gymnasium.Env):
    """Observation 1, reward 1 every step but the ``nan_at``-th of the env's life (NaN there); time limit 10."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self, nan_at=10**9):
        self.t, self.nan_at = 0, nan_at

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.ones(1, np.float32), math.nan if self.t == self.nan_at else 1.0, False, False, {}


gymnasium.register("HealthSpikeReward-v0", entry_point=SpikeReward, max_episode_steps=10)
SPIKE = ("algo.name=dqn", "env.id=HealthSpikeReward-v0", "env.backend=sync", "env.num_envs=1", "norm.obs=false",
         "norm.reward=false", "algo.gamma=0.9", "algo.learning_starts=50", "algo.batch_size=32", "algo.train_freq=1",
         "model.hidden=[16]", "eval.interval=0", "eval.episodes=1", "eval.num_envs=1", "log.interval=10")


@pytest.mark.parametrize("per", [False, True])
def test_a_nan_reward_stops_the_loop_before_the_checkpoint_is_overwritten(make_config, one_torch_thread, per):
    trainer = OffPolicyTrainer(make_config(None, *SPIKE, "env.kwargs={nan_at: 250}", "total_env_steps=2000",
                                           "checkpoint.interval=200", "checkpoint.keep_last=0", f"algo.per={per}"))
    with pytest.raises(NonFiniteError) as info:
        trainer.train()
    text = str(info.value)
    latest = trainer.ckpt_dir / "latest.pt"
    assert text.startswith("non-finite off-policy update: train/q_loss is nan")
    # PER stops at the very grad step (a NaN TD error must not reach the priorities); else at the next log
    assert (" in grad step " if per else " in grad steps ") in text
    assert "To fix (critic)" in text and f"the last good checkpoint is kept at {latest}" in text
    assert "the acting networks are already non-finite (first: agent." in text
    stopped = int(text.split("[at ")[1].split(" env steps")[0].replace(",", ""))
    assert 250 < stopped <= 400  # first check after the NaN row is drawn, before the write at 400
    state = ckpt.load(latest)
    assert state["counters"]["env_steps"] == 200
    assert all(bool(torch.isfinite(v).all()) for v in state["policy"]["net"].values())
    assert all(bool(torch.isfinite(v).all()) for v in state["learner"]["target"].values())


def test_check_inputs_names_the_nan_reward_at_its_source(make_config, one_torch_thread):
    trainer = OffPolicyTrainer(make_config(None, *SPIKE, "env.kwargs={nan_at: 30}", "total_env_steps=100",
                                           "health.check_inputs=true"))
    with pytest.raises(NonFiniteError, match=r"non-finite reward \(nan\) from the env: agent 'agent_0' of group "
                                             r"'agent', env copy 0.*\[at 29 env steps"):
        trainer.train()


def test_diverging_q_values_are_reported_once_with_the_off_policy_remedy(make_config, capsys, one_torch_thread):
    trainer = OffPolicyTrainer(make_config(None, *SPIKE, "total_env_steps=300"))
    real_update = trainer.learner.update

    def inflated(batches):  # the real update, reporting Q values far above 1 / (1 - 0.9) = 10
        out = real_update(batches)
        out.metrics["q_mean"] = 1e3 * trainer.learner.grad_steps
        return out

    trainer.learner.update = inflated
    trainer.train()
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("health warning")]
    assert len(warnings) == 1 and warnings[0].startswith("health warning [q_divergence] train/q_mean:")
    assert OFF_POLICY_REMEDIES["q_divergence"] in warnings[0]
    assert trainer.health.reward_abs_max == {"agent": 1.0}
    checks = (300 - 50) // 10  # one per log.interval = 10 training phases from row 50 on
    np.testing.assert_allclose(trainer.health.bounds["train/q_mean"], [10.0] * checks)


def test_soft_q_bounds_follow_alpha_and_entropy_in_the_loop(make_config, one_torch_thread):
    trainer = OffPolicyTrainer(make_config(None, *SPIKE, "algo.name=sac", "total_env_steps=200"))
    trainer.train()
    series = trainer.health.series
    expected = (1.0 + np.array(series["train/ent_coef"]) * np.abs(series["train/entropy"])) / (1 - 0.9)
    np.testing.assert_allclose(trainer.health.bounds["train/q_mean"], expected, rtol=1e-9)
    assert len(expected) == (200 - 50) // 10
