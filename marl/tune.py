"""``marl tune``: hyperparameter search with Optuna over any config (docs/tuning.md).

``marl tune CONFIG [key=value ...] --space SPACE.yaml --trials N [--jobs J] [--seeds K]
[--storage sqlite:///...] [--study NAME] [--out DIR] [--pruner median|none]``

* **Search space**: a YAML mapping ``config.key: {type: float|int|categorical, low, high, log, choices}``
  (configs/tune/). Every key must be a config key, every range non-empty, and each bound (each
  choice) must give a valid config: all of that is checked, with the key named, before any trial.
* **Sampling**: TPE (Bergstra et al. 2011), random for the first ``--startup-trials``.
* **Scoring**: a trial trains ``--seeds K`` runs (seeds ``seed .. seed+K-1`` of the config) in
  ``OUT/trials/trial_<n>/seed<s>``; its value is the mean over seeds of the final evaluation's
  :func:`marl.run.score` (mean team return, or the win rate against a fixed opponent).
* **Pruning**: every periodic evaluation (``eval.interval``) is reported to the trial at step
  ``k * total_env_steps + env_steps`` for the k-th seed, so trials are compared at the same seed and
  budget; the median pruner stops a trial whose return is below the median of earlier trials at the
  same step. A pruned run saves ``checkpoints/latest.pt``, writes ``pruned.json`` and closes its
  trackers as interrupted: its directory is an ordinary, resumable run directory.
* **Persistence**: the study lives in SQLite (default ``OUT/study.db``). ``--trials N`` means "until
  the study holds N finished (complete or pruned) trials", so re-running an interrupted command
  continues it, and a larger N extends a finished study.
* **Report** in ``OUT``: ``best.yaml`` (the best trial's resolved config, runnable with ``marl
  train``), ``report.md`` (best trial, parameter importance, a table of every trial),
  ``history.png``, ``importance.png`` and ``trials.json``.

``--jobs J`` starts J worker processes on the same SQLite study (Optuna's RDB storage serializes
them); ``--jobs 1`` trains in this process.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from marl.config import Config, ConfigError, from_dict, read_yaml, to_dict, with_overrides
from marl.logger import Logger
from marl.registry import algorithm
from marl.run import TrainingInterrupted, TrainingRun, score
from marl.tracking import check_backends, flatten

_FIXED_KEYS = ("seed", "run_dir", "resume")
_TYPES = ("float", "int", "categorical")


class TuneError(ConfigError):
    """A study that cannot be set up; the message names the key or option and the fix."""


# --------------------------------------------------------------------------- search space
class Param(NamedTuple):
    """One dimension of a search space.

    Attributes:
        key: dotted config key (``algo.lr``); also the Optuna parameter name.
        type: ``float``, ``int`` or ``categorical``.
        low, high: inclusive bounds (float/int).
        log: sample uniformly in log space (float/int, ``low > 0``).
        choices: the values of a categorical (lists and mappings are allowed, e.g. ``model.hidden``).
    """

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def override(self, value: Any) -> str:
        """The ``key=value`` override that sets this parameter (the value written as JSON, read back as YAML)."""
        return f"{self.key}={json.dumps(value)}"

    def encode(self, choice: Any) -> Any:
        """A choice as Optuna stores it: scalars as they are, lists and mappings as JSON text."""
        return choice if choice is None or isinstance(choice, (bool, int, float, str)) else json.dumps(choice)

    def decode(self, stored: Any) -> Any:
        """The config value of a stored choice (inverse of :meth:`encode`)."""
        for c in self.choices:
            if self.encode(c) == stored:
                return c
        return stored


def load_space(path: str | Path, cfg: Config, overrides: Sequence[str] = ()) -> list[Param]:
    """Read and check a search-space YAML against ``cfg`` (the config with ``overrides`` applied).

    Raises:
        TuneError: not a mapping, an unknown or fixed key, an unknown type, an empty range, a log range
            reaching 0, no choices, or a bound / choice that makes an invalid config (the key is named).
    """
    data = read_yaml(path)
    if not data:
        raise TuneError(f"{path}: the search space is empty; give key: {{type: float, low: ..., high: ...}} entries")
    valid = list(flatten(to_dict(cfg)))
    params = []
    for key, spec in data.items():
        where = f"{path}: {key}"
        if key in _FIXED_KEYS:
            raise TuneError(f"{where}: {key} cannot be searched (every trial sets it; use --seeds for seeds)")
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise TuneError(f"{where}: unknown config key{hint} (`marl config --keys` lists them)")
        if not isinstance(spec, dict) or spec.get("type") not in _TYPES:
            raise TuneError(f"{where}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
        unknown = set(spec) - {"type", "low", "high", "log", "choices"}
        if unknown:
            raise TuneError(f"{where}: unknown field(s) {sorted(unknown)} (fields: type, low, high, log, choices)")
        params.append(_param(where, key, spec))
    for p in params:  # every bound and choice must make a valid config
        values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
        for v in values:
            try:
                from_dict(with_overrides(to_dict(cfg), [p.override(v)]))
            except ConfigError as exc:
                raise TuneError(f"{path}: {p.key}={v!r} (a bound or choice of the space) is not a valid config: "
                                f"{exc}") from None
    return params


def _param(where: str, key: str, spec: dict) -> Param:
    kind = spec["type"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise TuneError(f"{where}: a categorical needs a non-empty list of choices")
        return Param(key, kind, choices=tuple(choices))
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise TuneError(f"{where}: a {kind} needs numeric low and high, got {spec!r}") from None
    if kind == "int":
        if not (low.is_integer() and high.is_integer()):
            raise TuneError(f"{where}: an int range needs integer bounds, got [{low}, {high}]")
        low, high = int(low), int(high)
    if not low < high:
        raise TuneError(f"{where}: empty range [{low}, {high}]; low must be below high")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise TuneError(f"{where}: a log range needs low > 0, got {low}")
    return Param(key, kind, low, high, log)


def suggest(trial: Any, params: Sequence[Param]) -> list[str]:
    """Draw every parameter for ``trial``; return the config overrides."""
    out = []
    for p in params:
        if p.type == "float":
            value = trial.suggest_float(p.key, p.low, p.high, log=p.log)
        elif p.type == "int":
            value = trial.suggest_int(p.key, p.low, p.high, log=p.log)
        else:
            value = p.decode(trial.suggest_categorical(p.key, [p.encode(c) for c in p.choices]))
        out.append(p.override(value))
    return out


def trial_overrides(trial_params: dict[str, Any], params: Sequence[Param]) -> list[str]:
    """The overrides of a finished trial's stored parameters."""
    return [p.override(p.decode(trial_params[p.key]) if p.type == "categorical" else trial_params[p.key])
            for p in params if p.key in trial_params]


# --------------------------------------------------------------------------- training with pruning
class Pruned(TrainingInterrupted):
    """Raised from an evaluation the pruner rejected, after ``latest.pt`` and ``pruned.json`` are written.

    A :class:`~marl.run.TrainingInterrupted` (a ``SystemExit``), so the run stops like one stopped by a
    signal: its trackers are closed as interrupted and its directory can be resumed.
    """


EvalHook = Callable[[int, dict[str, Any]], bool]
"""``hook(env_steps, eval_result) -> prune?``, called after each evaluation of a run."""


def reporting_trainer(base: type[TrainingRun], hook: EvalHook) -> type[TrainingRun]:
    """``base`` whose every evaluation is passed to ``hook``; when the hook says prune, the run saves
    ``latest.pt``, writes ``RUN_DIR/pruned.json`` and raises :class:`Pruned`.

    A subclass rather than a callback argument of :class:`~marl.run.TrainingRun`: only tuning needs it,
    and the run itself stays unaware of studies.
    """

    class Reporting(base):  # type: ignore[misc, valid-type]
        def evaluate_and_keep_best(self, logger: Logger) -> dict[str, Any]:
            result = super().evaluate_and_keep_best(logger)
            if hook(self.env_steps, result):
                self.save()
                (self.run_dir / "pruned.json").write_text(json.dumps(
                    {"env_steps": self.env_steps, "last_eval": self.eval_history[-1],
                     "eval_history": self.eval_history, "resume": f"marl train resume={self.run_dir}"}, indent=2))
                logger.message(f"pruned at {self.env_steps:,} env steps (eval return {score(result):.2f}); "
                               f"saved {self.ckpt_dir / 'latest.pt'}")
                raise Pruned(0)
            return result

    Reporting.__name__ = Reporting.__qualname__ = f"Reporting{base.__name__}"
    return Reporting


def train_reporting(cfg: Config, hook: EvalHook) -> dict[str, Any]:
    """Train ``cfg`` with its registry trainer, passing every evaluation to ``hook`` (may raise :class:`Pruned`)."""
    return reporting_trainer(algorithm(cfg.algo.name).trainer_class(cfg), hook)(cfg).train()


def run_trial(trial: Any, base: dict, params: Sequence[Param], seeds: Sequence[int], out: Path,
              study_name: str) -> float:
    """The objective: train one run per seed with the trial's parameters; the mean final :func:`score`."""
    import optuna

    overrides = suggest(trial, params)
    finals, run_dirs = [], []
    for k, seed in enumerate(seeds):
        run_dir = out / "trials" / f"trial_{trial.number:04d}" / f"seed{seed}"
        extra = [f"seed={seed}", f"run_dir={run_dir}"]
        cfg = from_dict(with_overrides(base, [*overrides, *extra]))
        if not cfg.log.wandb_group:
            cfg = replace(cfg, log=replace(cfg.log, wandb_group=study_name))
        offset = k * cfg.total_env_steps

        def hook(env_steps: int, result: dict[str, Any], offset: int = offset,
                 total: int = cfg.total_env_steps) -> bool:
            trial.report(score(result), offset + env_steps)
            return env_steps < total and trial.should_prune()  # the final evaluation completes the run

        run_dirs.append(str(run_dir))
        trial.set_user_attr("run_dirs", run_dirs)
        try:
            summary = train_reporting(cfg, hook)
        except Pruned:
            raise optuna.TrialPruned(f"pruned in {run_dir}") from None
        finals.append(score(summary["final_eval"]))
        trial.set_user_attr("final_scores", finals)
    return float(sum(finals) / len(finals))


# --------------------------------------------------------------------------- the study
def finished_trials(study: Any) -> list[Any]:
    """Complete and pruned trials, in order (failed and running ones are left out)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def open_study(name: str, storage: str, startup_trials: int, pruner: Any, sampler_seed: int | None) -> Any:
    """Create or load the study ``name`` in ``storage`` (maximizing), with a TPE sampler and ``pruner``."""
    import optuna

    # Heartbeats let a later run fail trials left RUNNING by a killed process (after the grace period).
    store = optuna.storages.RDBStorage(storage, heartbeat_interval=30, grace_period=90)
    sampler = optuna.samplers.TPESampler(n_startup_trials=startup_trials, seed=sampler_seed)
    return optuna.create_study(study_name=name, storage=store, sampler=sampler, pruner=pruner,
                               direction="maximize", load_if_exists=True)


def make_pruner(name: str, startup_trials: int) -> Any:
    """``median``: Optuna's MedianPruner after ``startup_trials`` trials, from the first report; ``none``."""
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)


def optimize(study: Any, objective: Callable[[Any], float], n_trials: int) -> None:
    """Run trials until the study holds ``n_trials`` finished ones; a trial that diverged (NaN/inf) fails
    and the study goes on."""
    from marl.health import NonFiniteError

    optuna_logging_quiet()
    while len(finished_trials(study)) < n_trials:
        study.optimize(objective, n_trials=1, catch=(NonFiniteError,))


def optuna_logging_quiet() -> None:
    """Optuna's per-trial INFO lines off (the report has them); warnings stay."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def tune(
    config: str | Path,
    space: str | Path,
    *,
    trials: int,
    overrides: Sequence[str] = (),
    seeds: int = 1,
    jobs: int = 1,
    storage: str = "",
    study_name: str = "",
    out: str | Path = "",
    pruner: Any = "median",
    startup_trials: int = 5,
    sampler_seed: int | None = 0,
) -> dict[str, Any]:
    """Run (or continue) a study and write its report; return the report's summary.

    Args:
        config: the base config YAML; ``overrides`` apply to every trial.
        space: the search-space YAML (:func:`load_space`).
        trials: finished trials the study should hold at the end (complete or pruned).
        seeds: runs per trial, seeds ``cfg.seed .. cfg.seed + seeds - 1``; the value is their mean score.
        jobs: trials at once, in worker processes on the same storage (1 = in this process).
        storage: an Optuna RDB URL; default ``sqlite:///OUT/study.db``.
        study_name: default ``<config stem>-<space stem>``.
        out: report and run folder; default ``tune/<study name>``.
        pruner: ``median``, ``none`` or an ``optuna.pruners.BasePruner``.
        startup_trials: random trials before TPE models the space (and before the median pruner prunes).
        sampler_seed: seed of the TPE sampler (``None``: fresh entropy).

    Raises:
        TuneError / ConfigError: a bad config, space, option or a missing extra, before any trial runs.
    """
    if trials < 1 or seeds < 1 or jobs < 1:
        raise TuneError("--trials, --seeds and --jobs must be >= 1")
    if jobs > 1 and not isinstance(pruner, str):
        raise TuneError("a pruner object works with jobs=1 only; worker processes take --pruner median|none")
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise TuneError("marl tune needs Optuna; pip install 'marl[tune]'") from None
    base = with_overrides(read_yaml(config), overrides)
    base.pop("defaults", None)
    cfg = from_dict(base)
    params = load_space(space, cfg)
    check_backends(cfg.log)
    name = study_name or f"{Path(config).stem}-{Path(space).stem}"
    out_dir = Path(out or Path("tune") / name)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    seed_list = [cfg.seed + k for k in range(seeds)]
    pruner_obj = make_pruner(pruner, startup_trials) if isinstance(pruner, str) else pruner
    optuna_logging_quiet()
    study = open_study(name, storage, startup_trials, pruner_obj, sampler_seed)
    before = len(finished_trials(study))
    start = time.time()
    if jobs == 1:
        optimize(study, lambda t: run_trial(t, base, params, seed_list, out_dir, name), trials)
    else:
        _run_workers(jobs, config, space, overrides, trials, seeds, storage, name, out_dir, pruner, startup_trials)
    study = open_study(name, storage, startup_trials, pruner_obj, sampler_seed)
    return write_report(study, params, base, out_dir, {
        "config": str(config), "space": str(space), "overrides": list(overrides), "seeds": seed_list,
        "storage": storage, "study": name, "out": str(out_dir), "total_env_steps": cfg.total_env_steps,
        "trials_this_call": len(finished_trials(study)) - before, "wall_time_s": time.time() - start,
    })


def _run_workers(jobs: int, config: str | Path, space: str | Path, overrides: Sequence[str], trials: int, seeds: int,
                 storage: str, name: str, out_dir: Path, pruner: str, startup_trials: int) -> None:
    """``jobs`` worker processes (``python -m marl.tune --worker``), each logging to ``OUT/worker<i>.log``."""
    cmd = [sys.executable, "-m", "marl.tune", str(config), *overrides, "--space", str(space), "--trials", str(trials),
           "--seeds", str(seeds), "--storage", storage, "--study", name, "--out", str(out_dir), "--pruner", pruner,
           "--startup-trials", str(startup_trials), "--worker"]
    procs = []
    for i in range(jobs):
        fh = open(out_dir / f"worker{i}.log", "a")  # noqa: SIM115 - closed below
        # A different sampler seed per worker, so concurrent workers do not propose the same points.
        procs.append((subprocess.Popen([*cmd, "--sampler-seed", str(i)], stdout=fh, stderr=subprocess.STDOUT), fh))
    failed = []
    for i, (proc, fh) in enumerate(procs):
        if proc.wait() != 0:
            failed.append(f"worker {i} exited with status {proc.returncode} (see {out_dir / f'worker{i}.log'})")
        fh.close()
    if failed:
        raise RuntimeError("; ".join(failed))


# --------------------------------------------------------------------------- report
def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def write_report(study: Any, params: Sequence[Param], base: dict, out: Path, header: dict[str, Any]) -> dict[str, Any]:
    """``best.yaml``, ``report.md``, ``trials.json``, ``history.png`` and ``importance.png`` in ``out``."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    rows = [{"number": t.number, "state": t.state.name.lower(), "value": t.value,
             "final_scores": t.user_attrs.get("final_scores", []),
             "last_report": (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None),
             "params": {p.key: (p.decode(t.params[p.key]) if p.type == "categorical" else t.params[p.key])
                        for p in params if p.key in t.params},
             "duration_s": t.duration.total_seconds() if t.duration else None,
             "run_dirs": t.user_attrs.get("run_dirs", [])} for t in trials]
    importance = _importance(study) if len(complete) >= 2 else {}
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    states = {name: n for name, n in counts.items() if n}
    summary = {**header, "n_trials": len(trials), "states": states,
               "best": None if best is None else {"number": best.number, "value": best.value, **rows[best.number]},
               "importance": importance}
    (out / "trials.json").write_text(json.dumps({"summary": summary, "trials": rows}, indent=2, default=str))
    if best is not None:
        cfg = from_dict(with_overrides(base, [*trial_overrides(best.params, params), "run_dir=", "resume="]))
        text = (f"# marl tune: best trial {best.number} of study {header['study']} (value {best.value:.4g}, mean final "
                f"eval over seeds {header['seeds']})\n# train it: marl train {out / 'best.yaml'}\n")
        (out / "best.yaml").write_text(text + yaml.safe_dump(to_dict(cfg), sort_keys=False))
    plots = _plots(study, out, bool(importance))
    (out / "report.md").write_text(_report_md(summary, rows, params, plots))
    return summary


def _evaluator() -> Any:
    """fANOVA (Hutter et al. 2014) on a seeded random forest (scikit-learn, part of the ``tune`` extra)."""
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def _importance(study: Any) -> dict[str, float]:
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study, evaluator=_evaluator()))
    except (ImportError, RuntimeError, ValueError):  # no scikit-learn; or nothing varies among complete trials
        return {}


def _plots(study: Any, out: Path, with_importance: bool) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    made = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna.visualization.matplotlib is marked experimental
        jobs = [("history.png", ovm.plot_optimization_history)]
        if with_importance:
            jobs.append(("importance.png", lambda st: ovm.plot_param_importances(st, evaluator=_evaluator())))
        for name, plot in jobs:
            try:
                ax = plot(study)
            except (ValueError, RuntimeError):
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 4.5)
            fig.tight_layout()
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            made.append(name)
    return made


def _report_md(summary: dict[str, Any], rows: list[dict], params: Sequence[Param], plots: list[str]) -> str:
    keys = [p.key for p in params]
    lines = [f"# marl tune: {summary['study']}", "",
             (f"Config `{summary['config']}` {' '.join(summary['overrides'])}, space `{summary['space']}`, "
             f"{summary['total_env_steps']:,} env steps per run, seeds {summary['seeds']} per trial; "
             f"storage `{summary['storage']}`."), "",
             (f"Trials: {summary['n_trials']} ({', '.join(f'{k} {v}' for k, v in summary['states'].items())}); "
             f"{summary['trials_this_call']} finished in this call ({summary['wall_time_s']:.0f} s)."), ""]
    best = summary["best"]
    if best:
        lines += [(f"**Best: trial {best['number']}**, value {best['value']:.4g} (final scores "
                  f"{', '.join(_fmt(x) for x in best['final_scores'])}); config in `best.yaml`:"), ""]
        lines += [f"- `{k}`: {_fmt(v)}" for k, v in best["params"].items()] + [""]
    if summary["importance"]:
        lines += ["## Parameter importance (fANOVA over complete trials)", "", "| parameter | importance |",
                  "| --- | --- |"]
        lines += [f"| `{k}` | {v:.3f} |" for k, v in summary["importance"].items()] + [""]
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [])
    lines += ["## Trials", "", "| trial | state | value | last report | " + " | ".join(f"`{k}`" for k in keys)
              + " | seconds |", "|" + " --- |" * (len(keys) + 5)]
    for r in rows:
        cells = [str(r["number"]), r["state"], _fmt(r["value"]) if r["value"] is not None else "",
                 _fmt(r["last_report"]) if r["last_report"] is not None else "",
                 *(_fmt(r["params"].get(k, "")) for k in keys),
                 f"{r['duration_s']:.0f}" if r["duration_s"] is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line
HELP = """\
examples:
  marl tune configs/cartpole_ppo.yaml --space configs/tune/ppo.yaml --trials 20
  marl tune configs/cartpole_ppo.yaml total_env_steps=50000 --space configs/tune/ppo.yaml --trials 30 --seeds 2 --jobs 2
  (re-run the same command to continue an interrupted study; raise --trials to extend it)

search space YAML (configs/tune/ppo.yaml):
  algo.lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
  algo.update_epochs: {type: int, low: 4, high: 10}
  algo.num_minibatches: {type: categorical, choices: [1, 2, 4, 8]}
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="marl tune", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=HELP,
                                description="Search hyperparameters with Optuna (TPE, median pruning, SQLite study).")
    p.add_argument("args", nargs="+", help="CONFIG.yaml [key=value ...] applied to every trial")
    p.add_argument("--space", required=True, help="search-space YAML (see configs/tune/)")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    p.add_argument("--jobs", type=int, default=1, help="trials at once in worker processes (default 1: in-process)")
    p.add_argument("--seeds", type=int, default=1, help="runs per trial (seeds seed..seed+K-1); value = mean")
    p.add_argument("--storage", default="", help="Optuna storage URL (default sqlite:///OUT/study.db)")
    p.add_argument("--study", default="", help="study name (default <config stem>-<space stem>)")
    p.add_argument("--out", default="", help="report and run folder (default tune/<study>)")
    p.add_argument("--pruner", choices=["median", "none"], default="median", help="pruning of bad trials")
    p.add_argument("--startup-trials", type=int, default=5, help="random trials before TPE and pruning (default 5)")
    p.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed (default 0)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config, *overrides = args.args
    bad = [o for o in overrides if "=" not in o]
    try:
        if bad:
            raise TuneError(f"unexpected argument {bad[0]!r}: give one config file and key=value overrides")
        if args.worker:  # one of --jobs worker processes: trials only, the parent writes the report
            base = with_overrides(read_yaml(config), overrides)
            base.pop("defaults", None)
            params = load_space(args.space, from_dict(base))
            study = open_study(args.study, args.storage, args.startup_trials,
                               make_pruner(args.pruner, args.startup_trials), args.sampler_seed)
            seeds = [from_dict(base).seed + k for k in range(args.seeds)]
            optimize(study, lambda t: run_trial(t, base, params, seeds, Path(args.out), args.study), args.trials)
            return 0
        summary = tune(config, args.space, trials=args.trials, overrides=overrides, seeds=args.seeds, jobs=args.jobs,
                       storage=args.storage, study_name=args.study, out=args.out, pruner=args.pruner,
                       startup_trials=args.startup_trials, sampler_seed=args.sampler_seed)
    except ConfigError as exc:
        print(f"marl tune: error: {exc}", file=sys.stderr)
        return 2
    best = summary["best"]
    print(f"study {summary['study']}: {summary['n_trials']} trials; "
          + (f"best trial {best['number']} value {best['value']:.4g}" if best else "no complete trial yet")
          + f"; report in {summary['out']}/report.md, best config {summary['out']}/best.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
