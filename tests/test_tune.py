"""``marl tune`` (marl/tune.py) with the real Optuna: a tiny CartPole PPO study writes its SQLite study and
report, a re-run continues it, a bad search space is refused before any trial, and a pruned trial leaves
an ordinary, resumable run directory."""

from __future__ import annotations

import json

import pytest

from marl.config import load_config
from marl.tune import TuneError, load_space, main, tune

optuna = pytest.importorskip("optuna")

# 256 env steps per PPO iteration; runs of 512 env steps with evaluations at 256 and 512.
TINY = ["total_env_steps=512", "eval.interval=256", "eval.episodes=2", "eval.num_envs=2", "checkpoint.interval=0",
        "log.tensorboard=false", "log.progress=false", "algo.update_epochs=2"]
SPACE = ("algo.lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}\n"
         "algo.gae_lambda: {type: float, low: 0.8, high: 0.99}\n")


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def test_study_writes_report_and_rerun_continues(tmp_path, space):
    out = tmp_path / "study"
    args = ["configs/cartpole_ppo.yaml", *TINY, "--space", str(space), "--out", str(out), "--study", "s",
            "--startup-trials", "2"]
    assert main([*args, "--trials", "3"]) == 0
    assert (out / "study.db").is_file()
    for name in ("report.md", "trials.json", "best.yaml", "history.png", "importance.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "trials.json").read_text())
    assert [t["number"] for t in data["trials"]] == [0, 1, 2]
    best = data["summary"]["best"]
    complete = [t for t in data["trials"] if t["state"] == "complete"]
    assert best["value"] == max(t["value"] for t in complete)
    # The value is the final evaluation of the run (one seed), which the run's summary.json holds too.
    best_run = out / "trials" / f"trial_{best['number']:04d}" / "seed0"
    summary = json.loads((best_run / "summary.json").read_text())
    assert best["value"] == summary["final_eval"]["ep_return"]
    # best.yaml is a runnable config with the best trial's parameters.
    cfg = load_config(out / "best.yaml")
    assert cfg.algo.lr == pytest.approx(best["params"]["algo.lr"])
    assert cfg.algo.gae_lambda == pytest.approx(best["params"]["algo.gae_lambda"])
    assert cfg.total_env_steps == 512 and cfg.run_dir == "" and cfg.algo.update_epochs == 2
    report = (out / "report.md").read_text()
    assert "| trial | state | value |" in report and "`algo.lr`" in report

    # The same study in the same SQLite file: the same command does nothing more, a larger N extends it.
    assert main([*args, "--trials", "3"]) == 0
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}").trials) == 3
    assert main([*args, "--trials", "4"]) == 0
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}").trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert len(json.loads((out / "trials.json").read_text())["trials"]) == 4


@pytest.mark.parametrize("text, message", [
    ("algo.lrr: {type: float, low: 1.0e-4, high: 1.0e-3}", r"algo.lrr: unknown config key; did you mean algo.lr\?"),
    ("algo.lr: {type: float, low: 1.0e-3, high: 1.0e-4}", r"algo.lr: empty range"),
    ("algo.lr: {type: float, low: 0, high: 1.0e-3, log: true}", r"algo.lr: a log range needs low > 0"),
    ("algo.gamma: {type: float, low: 0.9, high: 1.5}", r"algo.gamma=1.5 .* is not a valid config: algo.gamma"),
    ("algo.num_minibatches: {type: categorical, choices: [1, 3]}", r"algo.num_minibatches=3 .* not a valid config"),
    ("seed: {type: int, low: 0, high: 9}", r"seed cannot be searched"),
    ("algo.lr: {type: uniform, low: 1.0e-4, high: 1.0e-3}", r"algo.lr: expected \{type: float\|int\|categorical"),
])
def test_bad_space_is_refused_before_any_trial(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(TuneError, match=message):
        tune("configs/cartpole_ppo.yaml", path, trials=1, overrides=TINY, out=tmp_path / "out")
    assert not (tmp_path / "out" / "study.db").exists()  # refused before the study was created
    with pytest.raises(TuneError, match=message):
        load_space(path, load_config("configs/cartpole_ppo.yaml"))


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruned_trial_stops_at_its_first_evaluation_and_leaves_a_resumable_run(tmp_path, space):
    out = tmp_path / "pruned"
    summary = tune("configs/cartpole_ppo.yaml", space, trials=1, overrides=TINY, out=out, study_name="p",
                   pruner=AlwaysPrune())
    assert summary["states"] == {"pruned": 1} and summary["best"] is None
    run_dir = out / "trials" / "trial_0000" / "seed0"
    marker = json.loads((run_dir / "pruned.json").read_text())
    assert marker["env_steps"] == 256  # stopped at the first evaluation, not at the end of the budget
    assert [e["env_steps"] for e in marker["eval_history"]] == [256]
    assert (run_dir / "checkpoints" / "latest.pt").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "summary.json").exists()
    trial = optuna.load_study(study_name="p", storage=f"sqlite:///{out / 'study.db'}").trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {256: marker["last_eval"]["ep_return"]}
    assert "| 0 | pruned |" in (out / "report.md").read_text()
    # The pruned run is an ordinary run directory: it resumes to the end of its budget.
    from marl.api import train

    resumed = train(load_config(run_dir / "config.yaml", [f"resume={run_dir}"]))
    assert resumed["env_steps"] == 512 and [e["env_steps"] for e in resumed["eval_history"]] == [256, 512]


def test_example_tune_cartpole_tiny(tmp_path):
    """examples/tune_cartpole.py --tiny, run as a user would: 3 trials, a best config that loads."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "tune_cartpole.py"
    proc = subprocess.run([sys.executable, str(script), "--tiny", "--out", "study"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mean final eval return" in proc.stdout and "algo.lr = " in proc.stdout
    assert len(json.loads((tmp_path / "study" / "trials.json").read_text())["trials"]) == 3
    assert load_config(tmp_path / "study" / "best.yaml").total_env_steps == 1024
