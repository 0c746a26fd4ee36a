"""marl compare: variant parsing, bootstrap / interpolation helpers against numpy oracles, and a tiny
end-to-end comparison (2 variants x 2 seeds on simple_spread with 3 agents)."""

import itertools
import json

import numpy as np
import pytest
import scipy.stats
import yaml

from marl.cli import main
from marl.comparison import CompareError, Variant, parse_sharing, parse_variant, plan_runs, split_top_level
from marl.stats import bootstrap_difference, bootstrap_interval, common_grid, interpolate_curves, mean_and_iqm

TINY = [
    "total_env_steps=200", "env.num_envs=4", "algo.num_steps=25", "algo.num_minibatches=2", "algo.update_epochs=1",
    "eval.interval=100", "eval.episodes=2", "eval.num_envs=2", "log.progress=false", "log.tensorboard=false",
    "checkpoint.interval=0",
]


# --------------------------------------------------------------------------- parsing
def test_split_top_level_keeps_maps_and_lists_whole():
    assert split_top_level('a, b={"x": 1, "y": [1, 2]},c="p,q"') == ["a", 'b={"x": 1, "y": [1, 2]}', 'c="p,q"']
    with pytest.raises(CompareError, match="unbalanced"):
        split_top_level("a={b: 1")


def test_parse_sharing_builds_model_sharing_overrides():
    shared, indep, sel = parse_sharing('shared,independent,adv_shared={"adversary_*": adv, "agent_*": ag}')
    assert shared == Variant("shared", ("model.sharing=shared",))
    assert indep == Variant("independent", ("model.sharing=independent",))
    key, value = sel.overrides[0].split("=", 1)
    assert sel.name == "adv_shared" and key == "model.sharing"
    assert yaml.safe_load(value) == {"adversary_*": "adv", "agent_*": "ag"}
    assert parse_sharing("ippo=independent") == [Variant("ippo", ("model.sharing=independent",))]
    for bad in ("sharedd", "x=[1, 2]", "bad/name=shared"):
        with pytest.raises(CompareError):
            parse_sharing(bad)


def test_parse_variant_and_plan_validation(tmp_path):
    v = parse_variant("wide:model.hidden=[128, 128],algo.lr=1e-3")
    assert v == Variant("wide", ("model.hidden=[128, 128]", "algo.lr=1e-3"))
    assert parse_variant("base:") == Variant("base", ())
    with pytest.raises(CompareError, match="NAME:key=value"):
        parse_variant("model.critic=central")
    with pytest.raises(CompareError, match="same"):
        plan_runs("configs/simple_spread_ppo.yaml", [], [parse_variant("x:total_env_steps=5")], [0], tmp_path)
    with pytest.raises(CompareError, match="variant 'y'.*algo.lrr"):
        plan_runs("configs/simple_spread_ppo.yaml", [], [parse_variant("y:algo.lrr=1")], [0], tmp_path)
    with pytest.raises(CompareError, match="unique"):
        plan_runs("configs/simple_spread_ppo.yaml", [], parse_sharing("shared,shared"), [0], tmp_path)
    specs = plan_runs("configs/simple_spread_ppo.yaml", ["algo.lr=0.001"], parse_sharing("shared,independent"),
                      [0, 3], tmp_path)
    assert [(s.variant, s.seed) for s in specs] == [
        ("shared", 0), ("shared", 3), ("independent", 0), ("independent", 3)]
    assert all(s.cfg.algo.lr == 0.001 for s in specs)
    assert specs[1].cfg.seed == 3 and specs[3].cfg.model.sharing == "independent"
    assert specs[3].run_dir == tmp_path / "runs" / "independent" / "seed3"


# --------------------------------------------------------------------------- statistics
def _exact_bootstrap_means(x: np.ndarray) -> np.ndarray:
    """Means of all len(x)**len(x) equally likely resamples (the exact bootstrap distribution)."""
    return np.array([np.mean(s) for s in itertools.product(x, repeat=len(x))])


def test_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    x = np.array([0.0, 1.0, 3.0, 10.0, 4.0])
    exact = _exact_bootstrap_means(x)
    point, low, high = bootstrap_interval(x[:, None], lambda s: np.array([s.mean()]), np.random.default_rng(0), 40_000)
    assert point[0] == pytest.approx(x.mean())
    assert low[0] == pytest.approx(np.percentile(exact, 2.5), abs=0.15)
    assert high[0] == pytest.approx(np.percentile(exact, 97.5), abs=0.15)
    assert low[0] < x.mean() < high[0]


def test_bootstrap_interval_is_stratified_per_column_and_degenerate_cases():
    rng = np.random.default_rng(1)
    scores = np.stack([np.arange(6.0), 100 + np.zeros(6)], axis=1)  # column 1 constant
    point, low, high = bootstrap_interval(scores, lambda s: s.mean(axis=0), rng, 2000)
    np.testing.assert_allclose(point, [2.5, 100.0])
    assert low[1] == high[1] == 100.0 and low[0] < 2.5 < high[0]
    point, low, high = bootstrap_interval(np.array([[7.0]]), lambda s: np.array([s.mean()]), rng, 100)
    assert point[0] == low[0] == high[0] == 7.0
    a = bootstrap_interval(scores, lambda s: s.mean(axis=0), np.random.default_rng(5), 500)
    b = bootstrap_interval(scores, lambda s: s.mean(axis=0), np.random.default_rng(5), 500)
    np.testing.assert_array_equal(a, b)


def test_mean_and_iqm_match_numpy():
    x = np.array([5.0, -1.0, 2.0, 9.0, 3.0, 100.0, 0.0, 4.0])
    mean, iqm = mean_and_iqm(x[:, None])
    assert mean == pytest.approx(x.mean())
    assert iqm == pytest.approx(np.sort(x)[2:6].mean())  # middle 50% of 8 runs
    assert iqm == pytest.approx(scipy.stats.trim_mean(x, 0.25))


def test_bootstrap_interval_agrees_with_rliable_when_available():
    try:
        from rliable import library as rly
        from rliable import metrics
    except Exception as exc:  # noqa: BLE001 - rliable.library needs arch + a compatible pandas
        pytest.skip(f"rliable.library does not import here: {exc}")
    x = np.array([[0.0], [1.0], [3.0], [10.0], [4.0], [2.0]])
    _, ours_low, ours_high = bootstrap_interval(x, mean_and_iqm, np.random.default_rng(0), 20_000)
    np.random.seed(0)
    _, theirs = rly.get_interval_estimates(
        {"x": x}, lambda s: np.array([metrics.aggregate_mean(s), metrics.aggregate_iqm(s)]), reps=20_000)
    np.testing.assert_allclose(ours_low, theirs["x"][0], atol=0.3)
    np.testing.assert_allclose(ours_high, theirs["x"][1], atol=0.3)


def test_bootstrap_difference_hand_cases_and_exact_distribution():
    assert bootstrap_difference(np.array([1.0, 1.0]), np.array([0.0, 0.0]), np.random.default_rng(0), 100) == (
        1.0, 1.0, 1.0)
    a, b = np.array([2.0, 5.0, 3.0]), np.array([0.0, 1.0, 4.0, 1.0])
    diff, low, high = bootstrap_difference(a, b, np.random.default_rng(0), 40_000)
    exact = (_exact_bootstrap_means(a)[:, None] - _exact_bootstrap_means(b)[None, :]).ravel()
    assert diff == pytest.approx(a.mean() - b.mean())
    assert low == pytest.approx(np.percentile(exact, 2.5), abs=0.15)
    assert high == pytest.approx(np.percentile(exact, 97.5), abs=0.15)


def test_common_grid_and_interpolation_match_np_interp():
    xs = [np.array([0.0, 10.0, 20.0]), np.array([5.0, 15.0, 25.0])]
    ys = [np.array([0.0, 1.0, 4.0]), np.array([2.0, 2.0, 0.0])]
    grid = common_grid(xs, num=4)
    np.testing.assert_allclose(grid, [5.0, 10.0, 15.0, 20.0])  # the range both curves cover
    out = interpolate_curves(xs, ys, grid)
    np.testing.assert_allclose(out[0], [0.5, 1.0, 2.5, 4.0])  # hand: halfway points of the segments
    np.testing.assert_allclose(out[1], np.interp(grid, xs[1], ys[1]))
    shuffled = interpolate_curves([xs[0][::-1]], [ys[0][::-1]], grid)  # unsorted input is sorted first
    np.testing.assert_allclose(shuffled[0], out[0])
    assert common_grid([np.array([0.0, 1.0]), np.array([2.0, 3.0])]).size == 0
    np.testing.assert_array_equal(common_grid([np.array([4.0]), np.array([4.0])]), [4.0])


# --------------------------------------------------------------------------- end to end
def test_tiny_compare_writes_the_report_folder(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "configs/simple_spread_ppo.yaml", *TINY, "--sharing", "shared,independent",
            "--seeds", "0,1", "--out", str(out), "--reps", "2000"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed
    for name in ("report.md", "results.json", "return_vs_env_steps.png", "return_vs_wall_time.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "return_vs_env_steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines()
            if line.startswith("| shared | 2/2") or line.startswith("| independent | 2/2")]
    assert len(rows) == 2 and "| independent − shared |" in report and "Only 2 successful seed(s)" in report

    cfgs = {v: yaml.safe_load((out / "runs" / v / "seed1" / "config.yaml").read_text())
            for v in ("shared", "independent")}
    assert cfgs["shared"]["model"]["sharing"] == "shared" and cfgs["independent"]["model"]["sharing"] == "independent"
    assert cfgs["shared"]["seed"] == cfgs["independent"]["seed"] == 1
    assert cfgs["shared"]["total_env_steps"] == cfgs["independent"]["total_env_steps"] == 200

    results = json.loads((out / "results.json").read_text())
    finals = {}
    for v in ("shared", "independent"):
        e = results["variants"][v]
        summaries = [json.loads((out / "runs" / v / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        finals[v] = np.array([s["final_eval"]["ep_return"] for s in summaries])
        assert e["final_mean"] == pytest.approx(finals[v].mean())
        assert e["final_mean_ci"][0] <= e["final_mean"] <= e["final_mean_ci"][1]
        assert e["n_parameters"] == summaries[0]["n_parameters"]
        assert len(e["curves"]["env_steps"]["x"]) > 1
    # independent: one parameter set per agent (3 agents) -> more parameters than one shared network
    assert results["variants"]["independent"]["n_parameters"] > 2.5 * results["variants"]["shared"]["n_parameters"]
    (pair,) = results["pairwise"]
    assert (pair["a"], pair["b"]) == ("independent", "shared")
    assert pair["difference"] == pytest.approx(finals["independent"].mean() - finals["shared"].mean())
    assert pair["excludes_zero"] == (pair["ci"][0] > 0 or pair["ci"][1] < 0)

    # same command again: every run is reused, numbers unchanged
    mtime = (out / "runs" / "shared" / "seed0" / "summary.json").stat().st_mtime
    assert main(args) == 0
    assert "reusing finished run" in capsys.readouterr().out
    assert (out / "runs" / "shared" / "seed0" / "summary.json").stat().st_mtime == mtime
    assert json.loads((out / "results.json").read_text())["variants"]["shared"]["final_mean"] == pytest.approx(
        finals["shared"].mean())
    # logging switches change no result: still reused
    assert main([*args, "log.progress=true"]) == 0
    assert "reusing finished run" in capsys.readouterr().out
    # a finished run of another config in the same folder is refused before anything trains
    assert main([*args[:2], *TINY, "algo.lr=0.01", *args[2 + len(TINY):]]) == 2
    assert "algo.lr" in capsys.readouterr().err


def test_a_crashing_variant_is_reported_and_the_others_finish(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "configs/simple_spread_ppo.yaml", *TINY, "--variant", "ok:", "--variant",
                 "broken:env.kwargs={N: 3, no_such_arg: 1}", "--seeds", "0", "--out", str(out), "--reps", "500"])
    assert code == 1
    capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    assert results["variants"]["ok"]["n_ok"] == 1 and results["variants"]["broken"]["n_ok"] == 0
    assert "no_such_arg" in (out / "runs" / "broken" / "seed0" / "error.txt").read_text()
    report = (out / "report.md").read_text()
    assert "| broken | 0/1 | all runs failed" in report and "## Failed runs" in report
    assert "A single seed per variant" in report


def _fake(variant: str, seed: int, final: float, history: list[tuple[float, float, float]]):
    from marl.comparison import RunResult, RunSpec

    summary = {"final_eval": {"ep_return": final}, "best_eval": {"ep_return": max(h[2] for h in history)},
               "n_parameters": 10, "sps": 100.0, "agent_sps": 300.0, "wall_time_s": history[-1][1], "env_steps": 1000,
               "eval_history": [{"env_steps": s, "wall_time_s": t, "ep_return": r} for s, t, r in history]}
    return RunResult(RunSpec(variant, seed, f"runs/{variant}/seed{seed}", (), None), "trained", summary, "")


def test_aggregate_curves_and_single_seed_pairs_from_summaries():
    from marl.comparison import aggregate

    results = [
        _fake("a", 0, 1.0, [(100, 1.0, 0.0), (200, 2.0, 1.0)]),
        _fake("a", 1, 3.0, [(100, 1.5, 2.0), (200, 3.0, 3.0)]),
        _fake("b", 0, 5.0, [(100, 1.0, 5.0), (200, 2.0, 5.0)]),
    ]
    agg = aggregate(results, [Variant("a", ()), Variant("b", ())], np.random.default_rng(0), reps=500)
    a = agg["variants"]["a"]
    assert a["final_mean"] == 2.0 and a["best_mean"] == 2.0 and a["wall_time_s"] == 2.5
    steps = a["curves"]["env_steps"]
    np.testing.assert_allclose(steps["x"], np.linspace(100, 200, 100))
    np.testing.assert_allclose(steps["mean"], np.linspace(1.0, 2.0, 100))  # mean of two straight lines
    wall = a["curves"]["wall_time_s"]
    assert wall["x"][0] == 1.5 and wall["x"][-1] == 2.0  # the wall-clock range both seeds cover
    np.testing.assert_allclose(wall["mean"][0], (0.5 + 2.0) / 2)  # seed 0 interpolated at 1.5 s
    assert all(lo <= m <= hi for lo, m, hi in zip(steps["low"], steps["mean"], steps["high"], strict=True))
    (pair,) = agg["pairwise"]
    assert (pair["a"], pair["b"], pair["difference"]) == ("b", "a", 3.0)
    assert pair["excludes_zero"] is None  # b has one seed: no interval to speak of


def test_a_stopped_or_killed_compare_stops_its_trainings_and_the_same_command_resumes(tmp_path):
    """``marl compare --jobs 2`` with one run. SIGKILL to compare alone: the kernel sends its ``marl train`` child
    SIGTERM (MARL_STOP_WITH_PARENT), which writes latest.pt and exits. The same command resumes the run; SIGTERM
    to compare alone (``kill PID``) is passed on: the child stops again, compare exits with 128 + 15. The same
    command then finishes the run from the second stop (its first progress line one iteration past it)."""
    import re
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    from marl import checkpoint as ckpt
    from tests.processes import wait_gone

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "cmp"
    budget = 4000
    cmd = [sys.executable, "-m", "marl", "compare", "configs/simple_spread_ppo.yaml", *TINY,
           f"total_env_steps={budget}", "eval.interval=0", "checkpoint.interval=100", "log.progress=true",
           "log.interval=1", "--variant", "a:", "--seeds", "0", "--jobs", "2", "--out", str(out), "--reps", "200"]
    run = out / "runs" / "a" / "seed0"
    log = run / "train.log"

    def stop(sig: int, ready) -> tuple[int, str]:
        """Start the command, send ``sig`` to compare alone once ``ready()``; its exit status and output."""
        proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 120
            while not ready():
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-2000:]
                time.sleep(0.05)
            children = [p.pid for p in psutil.Process(proc.pid).children()]
            assert len(children) == 1
            proc.send_signal(sig)
            printed = proc.communicate(timeout=60)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
        assert wait_gone(children) == []
        return proc.returncode, printed

    def stops() -> list[int]:
        return [int(n.replace(",", "")) for n in re.findall(r"SIGTERM: stopped at ([\d,]+) env steps", log.read_text())]

    code, _ = stop(signal.SIGKILL, lambda: (run / "checkpoints" / "latest.pt").is_file())
    assert code == -signal.SIGKILL and len(stops()) == 1, log.read_text()[-2000:]  # the child stopped by itself
    first_part = log.read_text()
    code, printed = stop(signal.SIGTERM, lambda: "] it" in log.read_text()[len(first_part):])
    assert code == 128 + signal.SIGTERM, printed[-2000:]
    assert "resuming interrupted run" in printed and "the same command resumes them" in printed
    s1, s2 = stops()
    assert 0 < s1 < s2 < budget and not (run / "summary.json").exists()
    assert ckpt.load(run / "checkpoints" / "latest.pt")["counters"]["env_steps"] == s2

    before = log.read_text()
    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    last_part = log.read_text()[len(before):]
    assert f"at {s2:,} env steps" in last_part.splitlines()[0]  # marl train's "resumed from ... at N"
    first = int(re.search(r"\[\s*([\d,]+) /", last_part).group(1).replace(",", ""))
    assert first == s2 + 100  # one iteration (4 copies x 25 steps) past the checkpoint, not 100 from scratch
    assert json.loads((run / "summary.json").read_text())["env_steps"] == budget


def test_an_interrupted_in_process_run_resumes_and_one_of_another_config_is_refused(tmp_path, capsys):
    """jobs=1: a run folder with latest.pt but no summary.json (as a stop or a crash leaves it) resumes from the
    checkpoint (same trained counters, nothing retrained); with another config it is refused, not emptied."""
    from marl import checkpoint as ckpt

    out = tmp_path / "cmp"
    args = ["compare", "configs/simple_spread_ppo.yaml", *TINY[:-1], "checkpoint.interval=100", "--variant", "a:",
            "--seeds", "0", "--out", str(out), "--reps", "200"]
    run = out / "runs" / "a" / "seed0"
    assert main(args) == 0
    capsys.readouterr()
    latest = run / "checkpoints" / "latest.pt"
    before = ckpt.load(latest)["counters"]
    (run / "summary.json").unlink()
    assert main([*args[:2], *TINY[:-1], "checkpoint.interval=100", "algo.lr=0.01", *args[2 + len(TINY):]]) == 2
    assert "interrupted run of another config" in capsys.readouterr().err and latest.is_file()
    (run / "kept.txt").write_text("a file the user left in the run folder")  # emptying the folder would delete it
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "resuming interrupted run" in printed and f"resumed from {latest} at 200 env steps" in printed
    assert (run / "kept.txt").is_file()
    summary = json.loads((run / "summary.json").read_text())
    after = ckpt.load(latest)["counters"]
    assert summary["env_steps"] == after["env_steps"] == 200 and after["iteration"] == before["iteration"]
    assert after["wall_time_s"] >= before["wall_time_s"]  # summed over the parts of the run
    assert main(args) == 0  # its config.yaml now names resume=...: still the same config, reused as finished
    assert "reusing finished run" in capsys.readouterr().out
    # an unreadable checkpoint of an interrupted run: one line naming the fix, nothing trained or deleted
    (run / "summary.json").unlink()
    latest.write_bytes(b"not a checkpoint")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "checkpoint cannot be resumed" in err and "cannot read the checkpoint" in err and f"delete {run}" in err
    assert latest.is_file()
