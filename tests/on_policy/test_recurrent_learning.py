"""Recurrent PPO learns what feed-forward PPO provably cannot: the cue_recall memory task (slow; see
``bench/bench_recurrent.py`` for the full-budget numbers)."""

from __future__ import annotations

import pytest

import marl

MARGIN = 0.8
"""Stated before measuring: the GRU's final eval team return beats the feed-forward one by this much on each seed
(chance, the feed-forward bound, is 0.5; the maximum 2.0)."""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gru_beats_feed_forward_on_the_memory_task(tmp_path, seed: int) -> None:
    finals = {}
    for arm in ("gru", "none"):
        run = marl.train("configs/memory_gru_ppo.yaml",
                         overrides=[f"seed={seed}", f"model.recurrent={arm}", "total_env_steps=30000",
                                    "eval.interval=0", "log.tensorboard=false", "log.progress=false",
                                    f"run_dir={tmp_path / arm}"])
        finals[arm] = run.final_return
    assert finals["none"] <= 0.5 + 0.35  # chance, within the noise of 40 evaluation episodes
    assert finals["gru"] - finals["none"] >= MARGIN, finals
