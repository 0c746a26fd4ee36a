"""``marl compare``: train variants of one config over seeds and write a report (docs/compare.md).

A *variant* is a name plus config overrides (``shared`` = ``model.sharing=shared``). Every
variant runs the same config, budget and seeds. Runs train in ``OUT/runs/<variant>/seed<k>``
(ordinary run directories); ``OUT/`` then gets ``report.md`` (per variant: final evaluation
return, mean over seeds with a 95% bootstrap interval, IQM with its interval, best eval,
parameters, env and agent steps/s, wall time; per pair: the difference of means with its
interval), ``return_vs_env_steps.png`` / ``return_vs_wall_time.png`` (mean over seeds with a
pointwise bootstrap band, curves interpolated onto the range all seeds cover) and
``results.json``.

Intervals are percentile bootstrap intervals over seeds, stratified per task as in rliable
(``rliable.metrics`` gives the mean and IQM), drawn from an explicit ``np.random.Generator``
so reports are reproducible and the global numpy RNG is left alone. Finished runs (same
resolved config, ``summary.json`` present) are reused on a re-run with the same ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from marl.config import DEFAULT_CONFIG, Config, ConfigError, load_config, to_dict
from marl.stats import bootstrap_difference, bootstrap_interval, common_grid, interpolate_curves, mean_and_iqm

#: Keys a variant may not override: every variant runs the same seeds and budget.
_FIXED_KEYS = ("seed", "run_dir", "resume", "total_env_steps")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class CompareError(ConfigError):
    """A comparison that cannot be set up; the message names the problem and the fix."""


# --------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """A named set of config overrides (``key.sub=value`` strings)."""

    name: str
    overrides: tuple[str, ...]


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split ``text`` at ``sep`` outside brackets, braces and quotes; strip the parts.

    >>> split_top_level('a,b={"x": 1, "y": 2},c=[1, 2]')
    ['a', 'b={"x": 1, "y": 2}', 'c=[1, 2]']
    """
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if depth != 0 or quote:
        raise CompareError(f"unbalanced brackets or quotes in {text!r}")
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise CompareError(f"variant name {name!r}: use letters, digits and _ . + - (it becomes a folder name)")
    return name


def parse_sharing(text: str) -> list[Variant]:
    """``--sharing`` items -> variants that set ``model.sharing``.

    Items: ``shared``, ``independent``, or ``NAME=VALUE`` where VALUE is ``shared``,
    ``independent`` or a YAML mapping for selective sharing, e.g.
    ``leader={"agent_0": lead, "agent_*": rest}`` (see ``model.sharing``).
    """
    variants = []
    for item in split_top_level(text):
        name, eq, raw = (part.strip() for part in item.partition("="))
        try:
            value: Any = yaml.safe_load(raw) if eq else name
        except yaml.YAMLError as exc:
            raise CompareError(f"--sharing item {item!r}: {raw!r} is not valid YAML: {exc}") from None
        if not (value in ("shared", "independent") or isinstance(value, dict)):
            raise CompareError(
                f"--sharing item {item!r}: expected shared, independent or NAME=<yaml map>, "
                'e.g. leader={"agent_0": lead, "agent_*": rest}'
            )
        written = json.dumps(value) if isinstance(value, dict) else value
        variants.append(Variant(_check_name(name), (f"model.sharing={written}",)))
    return variants


def parse_variant(text: str) -> Variant:
    """``--variant NAME:key=value,key=value`` -> a variant (``NAME:`` alone = no overrides)."""
    name, colon, rest = text.partition(":")
    if not colon:
        raise CompareError(f"--variant {text!r}: expected NAME:key=value[,key=value...], "
                           "e.g. central:model.critic=central")
    overrides = split_top_level(rest)
    for o in overrides:
        if "=" not in o:
            raise CompareError(f"--variant {text!r}: {o!r} is not a key=value override")
    return Variant(_check_name(name.strip()), tuple(overrides))


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


# --------------------------------------------------------------------------- planning
class RunSpec(NamedTuple):
    """One training run of the comparison."""

    variant: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]
    cfg: Config


def plan_runs(
    config: Path, base_overrides: Sequence[str], variants: Sequence[Variant], seeds: Sequence[int], out: Path
) -> list[RunSpec]:
    """Resolve and validate the config of every (variant, seed) before anything trains."""
    if not variants:
        raise CompareError("no variants: give --sharing shared,independent and/or --variant NAME:key=value,...")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise CompareError(f"variant names must be unique, got {names}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise CompareError(f"--seeds must list distinct seeds, e.g. 0,1,2; got {list(seeds)}")
    for o in base_overrides:
        if _key(o) in ("seed", "run_dir", "resume"):
            raise CompareError(f"{o!r}: seeds come from --seeds and run folders from --out; drop this override")
    specs = []
    for v in variants:
        for o in v.overrides:
            if _key(o) in _FIXED_KEYS:
                raise CompareError(f"variant {v.name!r}: {o!r} is not allowed; every variant runs the same "
                                   "seeds and total_env_steps (set the budget before --sharing/--variant)")
        for seed in seeds:
            run_dir = out / "runs" / v.name / f"seed{seed}"
            overrides = (*base_overrides, *v.overrides, f"seed={seed}", f"run_dir={run_dir}")
            try:
                cfg = load_config(config, list(overrides))
            except ConfigError as exc:
                raise CompareError(f"variant {v.name!r}: {exc}") from exc
            specs.append(RunSpec(v.name, seed, run_dir, overrides, cfg))
    return specs


def _config_diff(saved: dict, cfg: Config) -> list[str]:
    """Keys whose values differ, except the logging and checkpoint cadence (they change no result) and ``resume``
    (a resumed run's ``config.yaml`` names the folder it resumed)."""
    from marl.logger import flatten_dict

    old, new = flatten_dict(saved), flatten_dict(to_dict(cfg))
    keys = {k for k in set(old) | set(new) if not k.startswith(("log.", "checkpoint.")) and k != "resume"}
    return sorted(k for k in keys if old.get(k) != new.get(k))


def finished_summary(spec: RunSpec) -> dict | None:
    """The summary of a finished run of ``spec`` to reuse, or ``None`` when it has not finished.

    Raises:
        CompareError: the folder holds a finished run of a different config.
    """
    summary = spec.run_dir / "summary.json"
    if not summary.is_file() or not _same_config(spec, "a finished run", "retrain it"):
        return None
    return json.loads(summary.read_text())


def _same_config(spec: RunSpec, what: str, force_does: str) -> bool:
    """Whether ``spec``'s folder holds a ``config.yaml`` (``False`` when it holds none).

    Raises:
        CompareError: that config differs from ``spec``'s (``what`` the folder holds).
    """
    saved = spec.run_dir / "config.yaml"
    if not saved.is_file():
        return False
    diff = _config_diff(yaml.safe_load(saved.read_text()), spec.cfg)
    if diff:
        raise CompareError(f"{spec.run_dir} holds {what} of another config (differs in {', '.join(diff)}); "
                           f"use a new --out, or --force to {force_does}")
    return True


def interrupted_checkpoint(spec: RunSpec) -> Path | None:
    """The ``latest.pt`` of an interrupted run of ``spec`` (a stop signal, a crash, a lost machine: no
    ``summary.json``) to resume, or ``None`` when the folder holds no checkpoint.

    Raises:
        CompareError: the folder holds an interrupted run of a different config, or its checkpoint is unreadable.
    """
    latest = spec.run_dir / "checkpoints" / "latest.pt"
    if not latest.is_file() or not _same_config(spec, "an interrupted run", "train it again from scratch"):
        return None
    from marl import checkpoint as ckpt

    try:
        ckpt.load(latest, mmap=True)  # the whole structure checked, the tensors (a saved replay) left in the file
    except ckpt.CheckpointError as exc:
        raise CompareError(f"the interrupted run's checkpoint cannot be resumed: {exc} Or delete {spec.run_dir} "
                           "to train that run again from scratch, or use a new --out.") from None
    return latest


def resumed(spec: RunSpec) -> RunSpec:
    """``spec`` continued from its run folder's ``latest.pt`` (``resume=RUN_DIR``)."""
    from dataclasses import replace

    return spec._replace(overrides=(*spec.overrides, f"resume={spec.run_dir}"),
                         cfg=replace(spec.cfg, resume=str(spec.run_dir)))


# --------------------------------------------------------------------------- running
STOP_WITH_PARENT = "MARL_STOP_WITH_PARENT"
"""Environment variable naming the pid of a ``marl`` process's parent that, when it ends, stops it (``marl compare
--jobs`` sets it for its ``marl train`` subprocesses; see :func:`marl.run.stop_with_parent`)."""

class RunResult(NamedTuple):
    """Outcome of one run: ``status`` is ``trained``, ``reused`` or ``failed``."""

    spec: RunSpec
    status: str
    summary: dict | None
    error: str


def _train_in_process(spec: RunSpec) -> RunResult:
    from marl.api import train

    try:
        return RunResult(spec, "trained", train(spec.cfg), "")
    except Exception:  # noqa: BLE001 - a crashed run is reported; the other runs go on
        text = traceback.format_exc()
        (spec.run_dir / "error.txt").write_text(text)
        return RunResult(spec, "failed", None, text.strip().splitlines()[-1])


def _subprocess_result(spec: RunSpec, rc: int) -> RunResult:
    summary = spec.run_dir / "summary.json"
    if rc == 0 and summary.is_file():
        return RunResult(spec, "trained", json.loads(summary.read_text()), "")
    tail = (spec.run_dir / "train.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
    return RunResult(spec, "failed", None, f"exit status {rc}: {tail[0]} (see {spec.run_dir / 'train.log'})")


def _train_in_subprocesses(specs: Sequence[RunSpec], config: Path, jobs: int,
                           log: Callable[[str], None]) -> list[RunResult]:
    """Up to ``jobs`` ``marl train`` processes at once; each appends its output to ``RUN_DIR/train.log``.

    A stop signal (SIGINT, SIGTERM) sent to this process alone is passed on to the running trainings, which
    write their checkpoints and exit; then this process exits with ``128 + signal`` (the same command again
    resumes them). Runs not started yet stay unstarted. A second signal kills the trainings still running
    (each keeps its last checkpoint). If this process is killed outright, they get SIGTERM from the kernel
    (``MARL_STOP_WITH_PARENT``, :func:`marl.run.stop_with_parent`). Call from the main thread.
    """
    from marl.run import StopSignals, TrainingInterrupted

    results: dict[int, RunResult] = {}
    running: dict[int, tuple[subprocess.Popen, Any]] = {}
    queue = list(range(len(specs)))
    passed_on = killed = False
    env = {**os.environ, STOP_WITH_PARENT: str(os.getpid())}
    with StopSignals() as stop:
        while (queue and stop.signum is None) or running:
            while queue and len(running) < jobs and stop.signum is None:
                i = queue.pop(0)
                fh = open(specs[i].run_dir / "train.log", "a")  # noqa: SIM115 - closed when the process ends
                cmd = [sys.executable, "-m", "marl", "train", str(config), *specs[i].overrides]
                running[i] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), fh)
                log(f"started {specs[i].variant} seed {specs[i].seed} (log: {specs[i].run_dir / 'train.log'})")
            if stop.signum is not None and not passed_on:
                for proc, _ in running.values():
                    proc.send_signal(stop.signum)  # a repeat when the whole group got it (Ctrl-C): absorbed
                passed_on = True
                if running:
                    pids = ", ".join(str(proc.pid) for proc, _ in running.values())
                    log(f"{signal.Signals(stop.signum).name}: waiting for {len(running)} run(s) to write their "
                        f"checkpoints (pids {pids}); a second signal kills them")
            if stop.count > 1 and not killed:
                for proc, _ in running.values():
                    proc.kill()
                killed = True
            for i, (proc, fh) in list(running.items()):
                if proc.poll() is not None:
                    fh.close()
                    del running[i]
                    results[i] = _subprocess_result(specs[i], proc.returncode)
            time.sleep(0.2)
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        saved = ("were killed: they resume from their last periodic checkpoint (checkpoint.interval), or from "
                 "scratch without one" if killed else "wrote their checkpoints")
        log(f"{name}: stopped; {len(results)} run(s) ended, {len(queue)} not started. The runs that were training "
            f"{saved}: the same command resumes them")
        raise TrainingInterrupted(128 + stop.signum)
    return [results[i] for i in range(len(specs))]


def run_all(specs: Sequence[RunSpec], config: Path, jobs: int = 1, force: bool = False,
            log: Callable[[str], None] = print) -> list[RunResult]:
    """Train every run that has not finished (all of them with ``force``); return results in ``specs`` order.

    A run folder without ``summary.json`` but with ``checkpoints/latest.pt`` (an interrupted or crashed
    run of the same config) resumes from it; one without a checkpoint is emptied and trained from
    scratch, as every run is with ``force``. ``jobs == 1`` trains in this process, one run after the
    other; ``jobs > 1`` runs up to ``jobs`` ``marl train`` subprocesses at once.
    """
    results: list[RunResult | None] = []
    for spec in specs:
        summary = None if force else finished_summary(spec)
        results.append(None if summary is None else RunResult(spec, "reused", summary, ""))
        if summary is not None:
            log(f"[{spec.variant} seed {spec.seed}] reusing finished run {spec.run_dir}")
    todo = [spec for spec, r in zip(specs, results, strict=True) if r is None]
    latest = {spec.run_dir: None if force else interrupted_checkpoint(spec) for spec in todo}  # before any change
    for n, spec in enumerate(todo):
        if latest[spec.run_dir] is not None:
            log(f"[{spec.variant} seed {spec.seed}] resuming interrupted run from {latest[spec.run_dir]}")
            (spec.run_dir / "error.txt").unlink(missing_ok=True)  # an earlier crash's; this part writes its own
            todo[n] = resumed(spec)
            continue
        if spec.run_dir.exists():
            shutil.rmtree(spec.run_dir)
        spec.run_dir.mkdir(parents=True)
    if jobs > 1:
        trained = _train_in_subprocesses(todo, config, jobs, log)
    else:
        trained = []
        for n, spec in enumerate(todo, 1):
            log(f"[{n}/{len(todo)}] training {spec.variant} seed {spec.seed} -> {spec.run_dir}")
            trained.append(_train_in_process(spec))
    fresh = iter(trained)
    final = [r if r is not None else next(fresh) for r in results]
    for r in final:
        if r.status == "failed":
            log(f"FAILED {r.spec.variant} seed {r.spec.seed}: {r.error}")
    return final


# --------------------------------------------------------------------------- aggregation
_RUN_KEYS = ("n_parameters", "sps", "agent_sps", "wall_time_s", "env_steps")


def run_row(r: RunResult) -> dict[str, Any]:
    """The per-run numbers of ``results.json`` (no result fields for a failed run)."""
    row = {"seed": r.spec.seed, "status": r.status, "run_dir": str(r.spec.run_dir), "error": r.error}
    if r.summary is not None:
        row["final_return"] = r.summary["final_eval"]["ep_return"]
        row["best_return"] = r.summary["best_eval"]["ep_return"]
        row.update({k: r.summary[k] for k in _RUN_KEYS})
    return row


def mean_curve(summaries: Sequence[dict], axis: str, rng: np.random.Generator, reps: int,
               confidence: float) -> dict[str, list[float]] | None:
    """Eval return against ``axis`` (``env_steps`` or ``wall_time_s``): mean over runs and bootstrap band."""
    curves = [(np.array([h[axis] for h in s["eval_history"]], np.float64),
               np.array([h["ep_return"] for h in s["eval_history"]], np.float64))
              for s in summaries if s.get("eval_history")]
    grid = common_grid([x for x, _ in curves]) if curves else np.zeros(0)
    if not grid.size:
        return None
    ys = interpolate_curves([x for x, _ in curves], [y for _, y in curves], grid)
    mean, low, high = bootstrap_interval(ys, lambda s: s.mean(axis=0), rng, reps, confidence)
    return {"x": grid.tolist(), "mean": mean.tolist(), "low": low.tolist(), "high": high.tolist()}


def aggregate(results: Sequence[RunResult], variants: Sequence[Variant], rng: np.random.Generator,
              reps: int = 10_000, confidence: float = 0.95) -> dict[str, Any]:
    """All numbers of the report: per run, per variant (with intervals and curves) and per pair."""
    out: dict[str, Any] = {"confidence": confidence, "bootstrap_reps": reps, "variants": {}, "pairwise": []}
    finals: dict[str, np.ndarray] = {}
    for v in variants:
        mine = [r for r in results if r.spec.variant == v.name]
        rows = [run_row(r) for r in mine]
        ok = [row for row in rows if "final_return" in row]
        entry: dict[str, Any] = {"overrides": list(v.overrides), "runs": rows, "n_ok": len(ok), "n_runs": len(rows)}
        out["variants"][v.name] = entry
        if not ok:
            continue
        finals[v.name] = final = np.array([row["final_return"] for row in ok])
        point, low, high = bootstrap_interval(final[:, None], mean_and_iqm, rng, reps, confidence)
        entry.update(final_mean=float(point[0]), final_mean_ci=[float(low[0]), float(high[0])],
                     final_iqm=float(point[1]), final_iqm_ci=[float(low[1]), float(high[1])],
                     best_mean=float(np.mean([row["best_return"] for row in ok])))
        entry.update({k: float(np.mean([row[k] for row in ok])) for k in _RUN_KEYS[:4]})
        summaries = [r.summary for r in mine if r.summary is not None]
        entry["curves"] = {}
        for axis in ("env_steps", "wall_time_s"):
            curve = mean_curve(summaries, axis, rng, min(reps, 2000), confidence)
            if curve is not None:
                entry["curves"][axis] = curve
    names = [v.name for v in variants if v.name in finals]
    for i, first in enumerate(names):
        for later in names[i + 1:]:  # "later - first": the first listed variant is the baseline
            diff, low, high = bootstrap_difference(finals[later], finals[first], rng, reps, confidence)
            enough = min(finals[later].size, finals[first].size) > 1  # one run: the interval is a point
            out["pairwise"].append({"a": later, "b": first, "difference": diff, "ci": [low, high],
                                    "excludes_zero": bool(low > 0 or high < 0) if enough else None})
    return out


# --------------------------------------------------------------------------- report
def _fmt(x: float) -> str:
    return f"{x:,.2f}" if abs(x) < 1e5 else f"{x:,.0f}"


def variant_table(agg: dict[str, Any]) -> str:
    """The per-variant markdown table."""
    pct = round(100 * agg["confidence"])
    lines = [f"| variant | seeds ok | final return: mean [{pct}% CI] | IQM [{pct}% CI] | best eval | parameters "
             "| env steps/s | agent steps/s | wall time (s) |", "|" + " --- |" * 9]
    for name, e in agg["variants"].items():
        if not e["n_ok"]:
            lines.append(f"| {name} | 0/{e['n_runs']} | all runs failed | | | | | | |")
            continue
        ci, iqm = e["final_mean_ci"], e["final_iqm_ci"]
        lines.append(
            f"| {name} | {e['n_ok']}/{e['n_runs']} | {_fmt(e['final_mean'])} [{_fmt(ci[0])}, {_fmt(ci[1])}] "
            f"| {_fmt(e['final_iqm'])} [{_fmt(iqm[0])}, {_fmt(iqm[1])}] | {_fmt(e['best_mean'])} "
            f"| {int(round(e['n_parameters'])):,} | {e['sps']:,.0f} | {e['agent_sps']:,.0f} | {e['wall_time_s']:,.1f} |"
        )
    return "\n".join(lines)


def pairwise_table(agg: dict[str, Any]) -> str:
    pct = round(100 * agg["confidence"])
    lines = [f"| difference | mean final return | {pct}% CI | CI excludes 0 |", "| --- | --- | --- | --- |"]
    for p in agg["pairwise"]:
        lines.append(f"| {p['a']} − {p['b']} | {_fmt(p['difference'])} | [{_fmt(p['ci'][0])}, {_fmt(p['ci'][1])}] "
                     f"| {({True: 'yes', False: 'no', None: 'n/a (1 seed)'})[p['excludes_zero']]} |")
    return "\n".join(lines)


def plot_curves(agg: dict[str, Any], axis: str, path: Path) -> bool:
    """Plot every variant's mean eval return with its band against ``axis``; ``False`` if nothing to plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = False
    for name, e in agg["variants"].items():
        c = e.get("curves", {}).get(axis)
        if not c:
            continue
        drawn = True
        (line,) = ax.plot(c["x"], c["mean"], marker="o" if len(c["x"]) == 1 else None, label=f"{name} (n={e['n_ok']})")
        ax.fill_between(c["x"], c["low"], c["high"], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel({"env_steps": "env steps", "wall_time_s": "wall-clock time (s)"}[axis])
    ax.set_ylabel("evaluation return (team, mean over seeds)")
    ax.set_title(f"mean and pointwise {round(100 * agg['confidence'])}% bootstrap band over seeds")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend()
        fig.savefig(path, dpi=120)
    return drawn


def write_report(out: Path, agg: dict[str, Any], header: dict[str, Any]) -> Path:
    """Write ``report.md``, the PNG plots and ``results.json`` into ``out``; return the report path."""
    plots = {axis: f"return_vs_{axis.removesuffix('_s')}.png" for axis in ("env_steps", "wall_time_s")}
    drawn = {axis: plot_curves(agg, axis, out / name) for axis, name in plots.items()}
    seeds = header["seeds"]
    min_ok = min((e["n_ok"] for e in agg["variants"].values() if e["n_ok"]), default=0)
    how = "one after the other in one process" if header["jobs"] <= 1 else f"{header['jobs']} at a time"
    lines = [
        f"# Comparison: {header['config']}", "",
        f"Command: `{header['command']}`", "",
        f"Same config, budget ({header['total_env_steps']:,} env steps) and seeds ({', '.join(map(str, seeds))}) "
        "for every variant. Returns are evaluation team returns (sum over agents) of the final evaluation. "
        f"Runs trained {how}; wall time and steps/s include the periodic evaluations and any other load "
        "on the machine.", "",
        "| variant | overrides |", "| --- | --- |",
        *[f"| {n} | `{' '.join(e['overrides']) or '(none)'}` |" for n, e in agg["variants"].items()], "",
        variant_table(agg), "",
    ]
    if 0 < min_ok < 10:
        lines += [f"> Only {min_ok} successful seed(s) in the smallest variant: bootstrap intervals over so few runs "
                  "are coarse and tend to be too narrow; treat them as indicative." if min_ok > 1 else
                  "> A single seed per variant: the intervals collapse to the point estimate.", ""]
    if agg["pairwise"]:
        lines += ["Differences of mean final return, later-listed variant minus earlier (runs of each variant "
                  "resampled independently):", "", pairwise_table(agg), ""]
    for axis, name in plots.items():
        lines += [f"![eval return vs {axis}]({name})" if drawn[axis] else f"(no {axis} curve: no overlap)", ""]
    failed = [(n, r) for n, e in agg["variants"].items() for r in e["runs"] if r["status"] == "failed"]
    if failed:
        lines += ["## Failed runs", ""]
        lines += [f"- {n} seed {r['seed']}: {r['error']} ({r['run_dir']})" for n, r in failed] + [""]
    lines += ["## Runs", "", "| variant | seed | status | final return | best eval | wall time (s) | run dir |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for n, e in agg["variants"].items():
        for r in e["runs"]:
            vals = ("-",) * 3
            if "final_return" in r:
                vals = (_fmt(r["final_return"]), _fmt(r["best_return"]), f"{r['wall_time_s']:.1f}")
            lines.append(f"| {n} | {r['seed']} | {r['status']} | {' | '.join(vals)} | {r['run_dir']} |")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({**header, **agg}, indent=1))
    return report


# --------------------------------------------------------------------------- entry points
def run_comparison(
    config: str | Path | None,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    *,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    jobs: int = 1,
    force: bool = False,
    reps: int = 10_000,
    bootstrap_seed: int = 0,
    command: str = "",
    log: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]]:
    """Train every variant on every seed (reusing finished runs) and write the report folder.

    Args:
        config: YAML config path (``None``: the embedded default).
        variants: the variants (see :func:`parse_sharing`, :func:`parse_variant`).
        seeds: the seeds every variant trains with.
        overrides: ``key=value`` overrides applied to every variant (before its own).
        out: report folder; default ``reports/compare-<config stem>-<YYYYmmdd-HHMMSS>``.
        jobs: runs trained at once (``1``: in this process, one after the other).
        force: train every run from scratch (finished and interrupted ones included).
        reps: bootstrap replications of each interval.
        bootstrap_seed: seed of the bootstrap generator.
        command: the command line, quoted in the report.

    Returns:
        ``(report.md path, results)``; ``results`` is what ``results.json`` holds.
    """
    config = Path(config) if config else DEFAULT_CONFIG
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(out) if out else Path("reports") / f"compare-{config.stem}-{stamp}"
    specs = plan_runs(config, list(overrides), variants, list(seeds), out)
    for spec in specs:  # refuse a mismatched finished run before training anything
        if not force:
            finished_summary(spec)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = run_all(specs, config, jobs, force, log)
    agg = aggregate(results, variants, np.random.default_rng(bootstrap_seed), reps)
    header = {"config": str(config), "command": command or f"marl compare {config}", "overrides": list(overrides),
              "seeds": list(seeds), "total_env_steps": specs[0].cfg.total_env_steps, "jobs": jobs,
              "compare_wall_time_s": time.time() - started, "created": stamp}
    return write_report(out, agg, header), {**header, **agg}


HELP = """\
variants (same config, overrides, total_env_steps and seeds for all; see docs/compare.md):
  --sharing 'shared,independent,leader={"agent_0": lead, "agent_*": rest}'   sets model.sharing
  --variant central:model.critic=central --variant local:model.critic=local   any overrides
runs go to OUT/runs/<variant>/seed<k>; the same command with the same --out reuses finished runs
and resumes interrupted ones from their checkpoints (--force trains all from scratch). Example:
  marl compare configs/simple_spread_ppo.yaml total_env_steps=150000 \\
      --sharing shared,independent --seeds 0,1,2 --out reports/spread-sharing
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marl compare", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=HELP,
        description="Train variants of one config over seeds; write report.md, plots and results.json.",
    )
    p.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...] applied to every variant")
    p.add_argument("--sharing", default="", help="parameter sharing variants (see below)")
    p.add_argument("--variant", action="append", default=[], help="NAME:key=value,... (repeatable; see below)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--out", default="", help="report folder (default reports/compare-<config stem>-<time>)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once in subprocesses (default 1: in-process)")
    p.add_argument("--force", action="store_true",
                   help="train every run from scratch (do not reuse finished runs or resume interrupted ones)")
    p.add_argument("--reps", type=int, default=10_000, help="bootstrap replications (default 10000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``marl compare`` entry point; returns 0 when every run succeeded, 1 when some failed, 2 on bad input."""
    args = build_parser().parse_intermixed_args(argv)  # key=value overrides may follow the flags
    try:
        configs, overrides = [a for a in args.args if "=" not in a], [a for a in args.args if "=" in a]
        if len(configs) > 1:
            raise CompareError(f"unexpected arguments {configs[1:]}: give one config file and key=value overrides")
        try:
            seeds = [int(s) for s in split_top_level(args.seeds)]
        except ValueError:
            raise CompareError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
        variants = (parse_sharing(args.sharing) if args.sharing else []) + [parse_variant(v) for v in args.variant]
        command = "marl compare " + " ".join(argv if argv is not None else sys.argv[2:])
        report, results = run_comparison(configs[0] if configs else None, variants, seeds, overrides=overrides,
                                         out=args.out or None, jobs=args.jobs, force=args.force, reps=args.reps,
                                         bootstrap_seed=args.bootstrap_seed, command=command)
    except ConfigError as exc:
        print(f"marl compare: error: {exc}", file=sys.stderr)
        return 2
    print()
    print(variant_table(results))
    if results["pairwise"]:
        print()
        print(pairwise_table(results))
    print(f"\nreport: {report}")
    return 0 if all(e["n_ok"] == e["n_runs"] for e in results["variants"].values()) else 1
