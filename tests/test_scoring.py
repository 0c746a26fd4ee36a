"""Scoring and reporting of evaluations (marl.scoring): the deterministic-vs-stochastic comparison."""

from __future__ import annotations

import math

import pytest

from marl.scoring import GAP_Z, gap_line, result_line, stochastic_gap, with_stochastic


def test_gap_is_the_difference_in_standard_errors():
    det = {"ep_return": -61.3, "ep_return_std": 10.0, "episodes": 25}  # se 2
    sto = {"ep_return": -45.8, "ep_return_std": 5.0, "episodes": 25}   # se 1
    assert stochastic_gap(det, sto) == pytest.approx(15.5 / math.sqrt(5.0))
    assert stochastic_gap(sto, det) == pytest.approx(-15.5 / math.sqrt(5.0))
    # win rates: binomial standard errors sqrt(p (1 - p) / n)
    a, b = {"win_rate": 0.5, "episodes": 100}, {"win_rate": 0.8, "episodes": 100}
    assert stochastic_gap(a, b) == pytest.approx(0.3 / math.hypot(0.05, 0.04))
    # identical constant returns: no gap; different constant returns: an infinite one
    same = {"ep_return": 3.0, "ep_return_std": 0.0, "episodes": 10}
    assert stochastic_gap(same, same) == 0.0
    assert stochastic_gap(same, {**same, "ep_return": 4.0}) == math.inf


def test_the_last_line_reports_both_only_for_a_real_gap():
    det = {"ep_return": -61.3, "ep_return_std": 8.0, "episodes": 50}
    far = with_stochastic(det, {"ep_return": -45.8, "ep_return_std": 8.0, "episodes": 50})
    assert far["stochastic"] == {"ep_return": -45.8, "ep_return_std": 8.0, "gap": pytest.approx(9.69, abs=0.01)}
    line = result_line({"final_eval": far, "best_eval": det})
    assert line.startswith("final eval return -61.30, best -61.30; final eval return -61.30 deterministic, "
                           "-45.80 stochastic (stochastic better by 9.7 standard errors")
    assert "eval.deterministic=false" in line
    near = with_stochastic(det, {"ep_return": -60.0, "ep_return_std": 8.0, "episodes": 50})
    assert abs(near["stochastic"]["gap"]) < GAP_Z and gap_line(near) == ""
    assert result_line({"final_eval": near, "best_eval": det}) == "final eval return -61.30, best -61.30"
    worse = with_stochastic(det, {"ep_return": -90.0, "ep_return_std": 8.0, "episodes": 50})
    assert "deterministic better" in gap_line(worse) and "eval.deterministic=false" not in gap_line(worse)


def test_a_run_reports_the_stochastic_evaluation_of_its_final_policy(make_config, tiny_ppo):
    """summary.json's final_eval holds the sampled-action evaluation of the final policy: the same numbers as
    evaluating latest.pt with sampling (same episodes and seeds); off with eval.stochastic_check=false."""
    import marl
    from marl.on_policy.trainer import OnPolicyTrainer

    cfg = make_config("configs/simple_spread_ppo.yaml", *tiny_ppo, "total_env_steps=400", "eval.interval=0")
    summary = OnPolicyTrainer(cfg).train()
    final = summary["final_eval"]
    oracle = marl.evaluate(f"{cfg.run_dir}/checkpoints/latest.pt", deterministic=False)
    assert final["stochastic"]["ep_return"] == pytest.approx(oracle["ep_return"])
    assert final["stochastic"]["ep_return"] != final["ep_return"]  # sampling did change the episodes
    assert final["stochastic"]["gap"] == pytest.approx(stochastic_gap(final, oracle))
    off = OnPolicyTrainer(make_config("configs/simple_spread_ppo.yaml", *tiny_ppo, "total_env_steps=400",
                                      "eval.interval=0", "eval.stochastic_check=false", run="off")).train()
    assert "stochastic" not in off["final_eval"]
