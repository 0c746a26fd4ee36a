"""Experiment trackers behind :class:`marl.logger.Logger`: TensorBoard, Weights & Biases, MLflow.

``log.backends`` lists the trackers of a run (default ``[tensorboard]``; ``log.tensorboard: false``
drops TensorBoard from the list). Every tracker receives the same things:

* scalars under the tag scheme of :mod:`marl.logger` (``rollout/ep_return``, ``eval/ep_return``,
  ``train/approx_kl`` ...) with ``env_steps`` as the x-axis: TensorBoard's ``global_step``, a W&B
  ``env_steps`` column declared as every metric's step (``define_metric``), MLflow's ``step``;
* the resolved config as hyperparameters (W&B ``config``, MLflow params with dotted keys,
  TensorBoard's ``config`` text and ``add_hparams`` at the end);
* text (health warnings): TensorBoard text, a W&B string column, an MLflow ``text/`` artifact;
* at the end of a run, ``checkpoints/best.pt``, ``summary.json`` and ``videos/*`` as artifacts
  (a W&B ``model`` artifact, MLflow artifacts under ``checkpoints/`` and ``videos/``).

``RUN_DIR/tracking.json`` holds each tracker's run id; a resumed run (``resume=RUN_DIR``) reopens
the same W&B run (``id=..., resume="allow"``) and the same MLflow run instead of starting new ones.

W&B and MLflow are optional extras (``pip install marl[wandb]``, ``marl[mlflow]``);
:func:`check_backends` turns a missing one into a one-line :class:`~marl.config.ConfigError`.
See docs/tracking.md.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from marl.config import Config, ConfigError, to_dict
from marl.schemas import LogConfig

BACKENDS = ("tensorboard", "wandb", "mlflow")
"""Values of ``log.backends``."""

EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}
"""Backend -> the import it needs, which is also the name of the marl extra that installs it."""

TRACKING_FILE = "tracking.json"
"""In the run directory: ``{backend: {"run_id": ..., ...}}`` for resuming the same tracked run."""

ARTIFACT_GLOBS = ("checkpoints/best.pt", "summary.json", "videos/*.mp4", "videos/*.gif")
"""Files of a run directory logged as artifacts at the end of a run (those that exist)."""


class Tracker(Protocol):
    """One experiment-tracking backend. ``env_steps`` is the x-axis of everything logged."""

    name: str

    def scalars(self, metrics: Mapping[str, float], env_steps: int) -> None:
        """Finite scalar metrics under their tags (NaN/None already removed by the logger)."""

    def text(self, tag: str, text: str, env_steps: int) -> None:
        """A text entry (the config at the start, health warnings)."""

    def hparams(self, flat_config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """End of run: the flattened config with the final metrics (TensorBoard's hparams view)."""

    def artifacts(self, run_dir: Path, paths: Sequence[Path]) -> None:
        """End of run: files of ``run_dir`` (best checkpoint, summary, videos) kept with the tracked run."""

    def close(self, status: str) -> None:
        """Flush and end the tracked run; ``status`` is ``finished``, ``interrupted`` or ``failed``."""


# --------------------------------------------------------------------------- choosing backends
def selected_backends(log: LogConfig) -> list[str]:
    """``log.backends`` without duplicates, minus ``tensorboard`` when ``log.tensorboard`` is false.

    Raises:
        ConfigError: an unknown backend name (with the nearest valid one).
    """
    out: list[str] = []
    for name in log.backends:
        if name not in BACKENDS:
            close = difflib.get_close_matches(str(name), BACKENDS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"log.backends: unknown backend {name!r}{hint} (valid: {', '.join(BACKENDS)})")
        if name not in out and not (name == "tensorboard" and not log.tensorboard):
            out.append(name)
    return out


def check_backends(log: LogConfig) -> list[str]:
    """:func:`selected_backends`, after checking that each one's library is installed.

    Raises:
        ConfigError: an unknown backend, or a missing optional extra, e.g.
            ``log.backends: wandb is not installed; pip install 'marl[wandb]'``.
    """
    names = selected_backends(log)
    for name in names:
        module = EXTRAS.get(name)
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(f"log.backends: {name} is not installed; pip install 'marl[{module}]' "
                              f"(or remove {name} from log.backends)")
    return names


def tracked_config(cfg: Config) -> dict[str, Any]:
    """The resolved config as hyperparameters: everything but ``run_dir`` and ``resume``."""
    return {k: v for k, v in to_dict(cfg).items() if k not in ("run_dir", "resume")}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"algo": {"lr": 1e-3}}`` -> ``{"algo.lr": 1e-3}`` (empty mappings kept as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_ids(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``RUN_DIR/tracking.json`` (empty when absent or unreadable)."""
    try:
        data = json.loads((Path(run_dir) / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_ids(run_dir: Path, ids: Mapping[str, Mapping[str, Any]]) -> None:
    path = Path(run_dir) / TRACKING_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(ids, indent=2))
    os.replace(tmp, path)


def run_artifacts(run_dir: Path) -> list[Path]:
    """The files of :data:`ARTIFACT_GLOBS` that exist in ``run_dir``, in that order."""
    return [p for pattern in ARTIFACT_GLOBS for p in sorted(Path(run_dir).glob(pattern)) if p.is_file()]


def open_trackers(cfg: Config, run_dir: Path, resuming: bool) -> list[Tracker]:
    """Start the trackers of ``cfg.log.backends`` for ``run_dir`` and record their run ids.

    Args:
        cfg: the run's resolved config (logged as hyperparameters).
        run_dir: the run directory (W&B files, the default MLflow store and ``tracking.json`` go there).
        resuming: reopen the tracked runs named in ``tracking.json`` instead of starting new ones.

    Raises:
        ConfigError: an unknown backend, a missing extra or an unusable MLflow store; trackers
            already opened are closed first.
    """
    names = check_backends(cfg.log)
    ids = read_ids(run_dir) if resuming else {}
    opened: list[Tracker] = []
    try:
        for name in names:
            if name == "tensorboard":
                opened.append(TensorBoardTracker(run_dir))
            elif name == "wandb":
                opened.append(WandbTracker(cfg, run_dir, ids.get("wandb", {}).get("run_id")))
            else:
                opened.append(MlflowTracker(cfg, run_dir, ids.get("mlflow", {})))
    except BaseException:
        for tracker in opened:
            tracker.close("failed")
        raise
    new_ids = {t.name: t.ids() for t in opened if isinstance(t, (WandbTracker, MlflowTracker))}
    if new_ids:
        _write_ids(run_dir, {**read_ids(run_dir), **new_ids})
    return opened


def attach_artifacts(run_dir: str | Path, paths: Sequence[Path] | None = None) -> list[str]:
    """Add files to a run's tracked runs after it ended (e.g. a video ``marl record`` wrote later).

    Reopens the W&B and MLflow runs named in ``RUN_DIR/tracking.json`` (with the run's ``config.yaml``
    for the W&B project and mode), logs ``paths`` (default: :func:`run_artifacts`) and closes them again
    as finished. Returns the backends that received the files (none without ``tracking.json``).
    """
    from marl.config import load_config

    run_dir = Path(run_dir)
    ids = read_ids(run_dir)
    files = list(run_artifacts(run_dir) if paths is None else paths)
    if not ids or not files:
        return []
    cfg = load_config(run_dir / "config.yaml")
    names = [n for n in check_backends(replace(cfg.log, backends=[n for n in EXTRAS if n in ids])) if n in ids]
    for name in names:
        tracker = WandbTracker(cfg, run_dir, ids[name]["run_id"]) if name == "wandb" else \
            MlflowTracker(cfg, run_dir, ids[name])
        try:
            tracker.artifacts(run_dir, files)
        finally:
            tracker.close("finished")
    return names


# --------------------------------------------------------------------------- TensorBoard
class TensorBoardTracker:
    """Event files in the run directory (``torch.utils.tensorboard``)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir))

    def scalars(self, metrics: Mapping[str, float], env_steps: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, env_steps)

    def text(self, tag: str, text: str, env_steps: int) -> None:
        self.writer.add_text(tag, text, env_steps)

    def hparams(self, flat_config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flat_config.items()}
        self.writer.add_hparams(clean, {f"hparam/{k}": v for k, v in metrics.items()}, run_name="hparams")

    def artifacts(self, run_dir: Path, paths: Sequence[Path]) -> None:
        """Nothing to copy: the files are already beside the event files."""

    def close(self, status: str) -> None:
        self.writer.flush()
        self.writer.close()


# --------------------------------------------------------------------------- Weights & Biases
class WandbTracker:
    """A W&B run with its files in ``RUN_DIR/wandb`` (``log.wandb_mode: offline`` by default: nothing
    leaves the machine until ``wandb sync RUN_DIR/wandb/offline-run-*``).

    Every metric is plotted against the ``env_steps`` column (``define_metric("*", step_metric=...)``),
    so W&B's own step counter never has to be monotonic across a resume.
    """

    name = "wandb"

    def __init__(self, cfg: Config, run_dir: Path, run_id: str | None) -> None:
        import wandb

        log = cfg.log
        self.wandb = wandb
        # console="off": the W&B console capture would wrap stdout under the rich progress bar.
        settings = wandb.Settings(silent=True, console="off", disable_git=True, save_code=False,
                                  x_disable_stats=True)
        try:
            self.run = wandb.init(
                project=log.wandb_project, entity=log.wandb_entity or None, group=log.wandb_group or None,
                tags=list(log.wandb_tags) or None, name=Path(run_dir).name, dir=str(run_dir), mode=log.wandb_mode,
                id=run_id, resume="allow" if run_id else None, settings=settings, reinit="create_new",
            )
        except wandb.errors.Error as exc:  # e.g. online without an API key
            raise ConfigError(f"log.backends: W&B did not start ({str(exc).splitlines()[0]}); run `wandb login` "
                              "or set log.wandb_mode=offline") from None
        self.run.config.update(tracked_config(cfg), allow_val_change=True)
        self.run.define_metric("env_steps")
        self.run.define_metric("*", step_metric="env_steps")

    def ids(self) -> dict[str, Any]:
        return {"run_id": self.run.id, "project": self.run.project, "mode": self.run.settings.mode}

    def scalars(self, metrics: Mapping[str, float], env_steps: int) -> None:
        self.run.log({**metrics, "env_steps": env_steps})

    def text(self, tag: str, text: str, env_steps: int) -> None:
        self.run.log({tag: text, "env_steps": env_steps})

    def hparams(self, flat_config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The config is already the run's ``config``; the final metrics are its summary."""
        self.run.summary.update({f"final/{k}": v for k, v in metrics.items()})

    def artifacts(self, run_dir: Path, paths: Sequence[Path]) -> None:
        if not paths:
            return
        art = self.wandb.Artifact(f"run-{self.run.id}", type="model",
                                  metadata={"run_dir": str(run_dir)})
        for p in paths:
            art.add_file(str(p), name=str(p.relative_to(run_dir)))
        self.run.log_artifact(art)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


# --------------------------------------------------------------------------- MLflow
MLFLOW_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
_MLFLOW_BATCH = 100  # MLflow's log_batch limit on params (metrics: 1000)


def mlflow_uri(cfg: Config, run_dir: Path) -> str:
    """``log.mlflow_uri``, or ``sqlite:///RUN_DIR/mlflow.db`` when empty."""
    return cfg.log.mlflow_uri or f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def _mlflow_key(tag: str) -> str:
    """MLflow names allow letters, digits and ``_ - . / : `` and space; anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-./: " else "_" for c in tag)


class MlflowTracker:
    """An MLflow run in ``log.mlflow_experiment`` of the store ``log.mlflow_uri``.

    The default store is a SQLite file in the run directory (``RUN_DIR/mlflow.db``, artifacts in
    ``RUN_DIR/mlartifacts``): MLflow 3 refuses plain ``file:`` stores unless
    ``MLFLOW_ALLOW_FILE_STORE=true``. Point several runs at one store with
    ``log.mlflow_uri=sqlite:////abs/path/mlflow.db`` (artifacts then go beside that file).
    """

    name = "mlflow"

    def __init__(self, cfg: Config, run_dir: Path, saved: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.uri = mlflow_uri(cfg, run_dir)
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            experiment = self.client.get_experiment_by_name(cfg.log.mlflow_experiment)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                location = None
                if self.uri.startswith("sqlite:///"):
                    location = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
                experiment_id = self.client.create_experiment(cfg.log.mlflow_experiment, artifact_location=location)
            run_id = saved.get("run_id") if saved.get("tracking_uri") == self.uri else None
            if run_id is not None:
                self.client.update_run(run_id, status="RUNNING")
            else:
                run_id = self.client.create_run(experiment_id, run_name=Path(run_dir).name,
                                                tags={"marl.run_dir": str(Path(run_dir).resolve())}).info.run_id
        except MlflowException as exc:
            raise ConfigError(f"log.mlflow_uri: cannot use the MLflow store {self.uri!r}: "
                              f"{str(exc).splitlines()[0]}") from None
        self.run_id = run_id
        self.experiment_id = experiment_id
        # Params cannot change once logged: a resumed run keeps the values it started with.
        have = self.client.get_run(run_id).data.params
        params = [Param(k, str(v)[:6000]) for k, v in flatten(tracked_config(cfg)).items() if k not in have]
        for i in range(0, len(params), _MLFLOW_BATCH):
            self.client.log_batch(run_id, params=params[i:i + _MLFLOW_BATCH])

    def ids(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.uri}

    def scalars(self, metrics: Mapping[str, float], env_steps: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(_mlflow_key(k), float(v), now, int(env_steps)) for k, v in metrics.items()]
        for i in range(0, len(rows), 1000):
            self.client.log_batch(self.run_id, metrics=rows[i:i + 1000])

    def text(self, tag: str, text: str, env_steps: int) -> None:
        self.client.log_text(self.run_id, text, f"text/{_mlflow_key(tag).replace('/', '_')}-{env_steps}.txt")

    def hparams(self, flat_config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Params were logged at the start; the final metrics are tags here (searchable in the UI)."""
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.client.set_tag(self.run_id, f"final/{_mlflow_key(k)}", str(v))

    def artifacts(self, run_dir: Path, paths: Sequence[Path]) -> None:
        for p in paths:
            parent = p.relative_to(run_dir).parent
            self.client.log_artifact(self.run_id, str(p), None if str(parent) == "." else str(parent))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))
