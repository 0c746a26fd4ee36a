"""bench/reproduce_mpe.py's bookkeeping: the scale conversion, the protocol's aggregates, and reading curves."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "reproduce_mpe.py"


@pytest.fixture(scope="module")
def rm():
    spec = importlib.util.spec_from_file_location("reproduce_mpe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_to_paper_scale(rm) -> None:
    assert rm.to_paper("spread", -30.0) == -135.0  # 2 x ours - 75
    assert rm.to_paper("speaker_listener", -12.5) == -12.5  # no identity: our scale
    low, high = rm.SL_REFERENCES
    assert rm.message_gap_closed(low) == 0.0 and rm.message_gap_closed(high) == 1.0
    assert rm.message_gap_closed((low + high) / 2) == pytest.approx(0.5)


def test_speaker_listener_references() -> None:
    """bench/speaker_listener_bounds.py: its dynamics model is mpe2's listener exactly; the planner that knows the
    goal scores well above the one that steers to the centroid, and the original dynamics (an action acts at once)
    above mpe2's."""
    spec = importlib.util.spec_from_file_location("sl_bounds", SCRIPT.parent / "speaker_listener_bounds.py")
    bounds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bounds)
    assert bounds.check_model(episodes=2) < 1e-12
    r = bounds.run(episodes=4, horizon=3)
    assert r["goal"]["mpe2"] > r["centroid"]["mpe2"] + 5.0
    assert r["goal"]["original"] > r["goal"]["mpe2"]


def test_aggregate_by_hand(rm) -> None:
    """Maximum = best point of the seed-mean curve (paper scale), its 95% t interval over seeds; average = mean of
    the seed-mean curve; curves cut to the shortest."""
    curves = [np.array([-50.0, -30.0, -31.0]), np.array([-48.0, -34.0, -29.0]), np.array([-52.0, -32.0])]
    cells = rm.aggregate("spread", curves)
    paper = np.array([[-175.0, -135.0], [-171.0, -143.0], [-179.0, -139.0]])  # 2 x ours - 75, 2 common points
    assert cells["points"] == 2 and cells["seeds"] == 3 and cells["best_point"] == 1
    assert cells["max"] == pytest.approx(-139.0)
    assert cells["max_ci"] == pytest.approx(4.303 * np.std(paper[:, 1], ddof=1) / math.sqrt(3))
    assert cells["average"] == pytest.approx((-175.0 - 139.0) / 2)
    assert cells["final_ours"] == pytest.approx(-32.0)


def test_curve_from_summary_and_from_events_of_a_running_run(rm, tmp_path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    done = tmp_path / "done"
    done.mkdir()
    (done / "summary.json").write_text(json.dumps({"eval_history": [{"env_steps": 10, "ep_return": -3.0},
                                                                    {"env_steps": 20, "ep_return": -2.0}]}))
    steps, returns = rm.curve(done)
    assert steps.tolist() == [10, 20] and returns.tolist() == [-3.0, -2.0]
    running = tmp_path / "running"
    writer = SummaryWriter(str(running))
    for step, value in ((5, -4.0), (15, -3.5), (25, -2.5)):
        writer.add_scalar("eval/ep_return", value, step)
        writer.add_scalar("train/ep_return", 0.0, step)
    writer.close()
    steps, returns = rm.curve(running)
    assert steps.tolist() == [5, 15, 25] and returns.tolist() == [-4.0, -3.5, -2.5]
    assert rm.finished(done, False) and not rm.finished(running, False) and rm.finished(running, True)
