"""The entry points over every algorithm.

* :func:`train` (a :class:`Config`; what ``marl train`` runs) and :func:`load_policy` (a
  checkpoint's acting policy; what ``marl eval`` and ``marl record`` act with).
* The Python API, exported as ``marl.train``, ``marl.load``, ``marl.evaluate`` and
  ``marl.compare`` (``docs/api.md``): :func:`train_run` takes a path, a dict or a
  :class:`Config`, overrides as keyword arguments, and an env as an id or a callable, and
  returns a :class:`Run`; :func:`load` returns a :class:`marl.deploy.DeployedPolicy` that acts on
  plain env observations; :func:`evaluate` and :func:`compare` wrap
  :func:`marl.evaluation.evaluate` and :func:`marl.comparison.run_comparison`.

All of them look the algorithm up in :mod:`marl.registry`; none knows which paradigm it is.

Overrides, one convention: a key is the dotted config key (``algo.lr``), given either as a keyword
argument with ``__`` for each dot (``algo__lr=3e-4``, ``seed=1``) or as a key of the ``overrides``
mapping (``overrides={"algo.lr": 3e-4}``). Values are Python values (not YAML text) and replace
the key's value, as ``key=value`` does on the command line; a list of ``"key=value"`` strings
(parsed as YAML, the command-line form) is accepted as ``overrides`` too.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from marl import checkpoint as ckpt
from marl.config import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    dump_yaml,
    from_dict,
    load_config,
    parse_override,
    read_yaml,
    to_dict,
    with_overrides,
)
from marl.deploy import DeployedPolicy
from marl.env.make import UNIMPORTABLE, env_spec, register_env_callable
from marl.registry import algorithm
from marl.types import ActingPolicy

EnvArg = str | Callable[..., Any] | None
"""An env: an env id (``"CartPole-v1"``), or a callable returning a PettingZoo ``ParallelEnv`` /
``AECEnv`` or a ``gymnasium.Env`` (a class, a function, a ``functools.partial``), called with
``env.kwargs``."""


def train_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """The config a ``marl train [CONFIG] [key=value ...]`` call means.

    With a file: that file plus the overrides (with ``resume=`` the run checks it against the
    checkpoint's). Without a file but with ``resume=RUN_DIR_OR_CHECKPOINT``: the resumed run's own
    config (its ``config.yaml``, else the one inside the checkpoint) plus the overrides, so a run
    made from any config resumes with ``marl train resume=RUN_DIR``. Otherwise the embedded default.
    """
    if path is not None:
        return load_config(path, overrides)
    resume = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].strip() == "resume"]
    if not resume or not resume[-1]:
        return load_config(DEFAULT_CONFIG, overrides)
    checkpoint = ckpt.find_checkpoint(resume[-1], "latest")
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    if (run_dir / "config.yaml").is_file():
        return load_config(run_dir / "config.yaml", overrides)
    return from_dict(with_overrides(ckpt.load(checkpoint)["config"], overrides))


def train(cfg: Config) -> dict[str, Any]:
    """Train ``cfg`` from scratch or from ``cfg.resume``; return the run summary (``summary.json``).

    The trainer is the registry's for ``cfg.algo.name``: :class:`marl.on_policy.OnPolicyTrainer`
    (PPO) or :class:`marl.off_policy.OffPolicyTrainer` (DQN, SAC, TD3).
    """
    return algorithm(cfg.algo.name).trainer_class(cfg)(cfg).train()


def load_policy(
    path: str | Path, device: str = "cpu", env: EnvArg = None
) -> tuple[ActingPolicy, Config, dict[str, Any]]:
    """Rebuild the acting policy of a checkpoint, or of a run directory (its ``best.pt``, else ``latest.pt``).

    ``env`` (an id or a callable, see :data:`EnvArg`) replaces the run's ``env.id``: needed for a
    run trained on a callable that is not importable, in a process other than the one that trained it.

    Returns:
        ``(policy, config, checkpoint)``: the policy with the checkpoint's weights and normalizer
        statistics, the run's resolved config, and the whole checkpoint dict.

    Raises:
        CheckpointError: no checkpoint there, or not a readable marl checkpoint.
        ConfigError: the run's env cannot be built here (e.g. its module is not importable).
    """
    state = ckpt.load(ckpt.find_checkpoint(path, "best"), map_location=device)
    if "config" not in state or "policy" not in state:
        raise ckpt.CheckpointError(f"{path}: not a training checkpoint (no config or policy entry)")
    cfg = _with_env(from_dict(state["config"]), env)
    policy = algorithm(cfg.algo.name).build_acting_policy(env_spec(cfg), cfg, device)
    policy.load_state_dict(state["policy"])
    return policy, cfg, state


# --------------------------------------------------------------------------- the Python API
def _env_id(env: EnvArg) -> str | None:
    """The ``env.id`` recording ``env`` (a callable that is not importable is registered in this process)."""
    if env is None or isinstance(env, str):
        return env
    if not callable(env):
        raise TypeError(f"env must be an env id or a callable returning a PettingZoo or Gymnasium env, "
                        f"got {type(env).__name__}")
    return register_env_callable(env)


def _with_env(cfg: Config, env: EnvArg) -> Config:
    env_id = _env_id(env)
    return cfg if env_id is None else dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, id=env_id))


def override_pairs(
    overrides: Mapping[str, Any] | Sequence[str] | None, kwargs: Mapping[str, Any]
) -> list[tuple[str, Any]]:
    """``(dotted key, value)`` pairs of an ``overrides`` mapping (or ``key=value`` strings) and ``a__b=`` keywords.

    >>> override_pairs({"algo.lr": 3e-4}, {"seed": 1, "env__num_envs": 4})
    [('algo.lr', 0.0003), ('seed', 1), ('env.num_envs', 4)]
    >>> override_pairs(["model.hidden=[32, 32]"], {})
    [('model.hidden', [32, 32])]

    Raises:
        ConfigError: a key given twice.
    """
    pairs: list[tuple[str, Any]] = []
    if isinstance(overrides, Mapping):
        pairs += [(str(k), v) for k, v in overrides.items()]
    elif isinstance(overrides, str):
        raise ConfigError(f"overrides={overrides!r}: give a mapping {{'algo.lr': 3e-4}} "
                          "or a list of 'key=value' strings")
    elif overrides is not None:
        pairs += [(".".join(keys), value) for keys, value in map(parse_override, overrides)]
    pairs += [(k.replace("__", "."), v) for k, v in kwargs.items()]
    pairs = [(k, str(v.run_dir) if isinstance(v, Run) else (str(v) if isinstance(v, Path) else v)) for k, v in pairs]
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ConfigError(f"config key {key} is overridden twice "
                              f"(as {key.replace('.', '__')}= and in overrides); keep one")
        seen.add(key)
    return pairs


def _set(data: dict, key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part!r} is not a section; use a key listed by `marl config --keys`")
    node[parts[-1]] = value


def config_data(config: str | Path | Mapping[str, Any] | Config | None, resume: str = "") -> dict:
    """The nested mapping of ``config`` (a YAML path, a mapping as YAML gives, a :class:`Config`), not validated.

    ``None`` is the embedded default, or with ``resume`` the resumed run's own config (as ``marl train resume=``).
    """
    if isinstance(config, Config):
        return to_dict(config)
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    if isinstance(config, (str, Path)):
        data = read_yaml(config)
        data.pop("defaults", None)
        return data
    if config is None:
        return to_dict(train_config(None, [f"resume={resume}"])) if resume else read_yaml(DEFAULT_CONFIG)
    raise ConfigError(f"config must be a YAML path, a dict or a marl Config, got {type(config).__name__}")


def build_config(
    config: str | Path | Mapping[str, Any] | Config | None = None,
    *,
    env: EnvArg = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    **kwargs: Any,
) -> Config:
    """The validated :class:`Config` that :func:`train_run` trains (same arguments, nothing trained)."""
    pairs = override_pairs(overrides, kwargs)
    env_id = _env_id(env)
    if env_id is not None:
        if any(k == "env.id" for k, _ in pairs):
            raise ConfigError("env given twice (env= and env.id); keep one")
        pairs.insert(0, ("env.id", env_id))
    resume = next((str(v) for k, v in pairs if k == "resume"), "")
    data = config_data(config, resume)
    for key, value in pairs:
        _set(data, key, value)
    return from_dict(data)


_NOT_IMPORTABLE = ("env.id names a callable that is not importable (defined in __main__, a notebook or a "
                   "function): pass it again as env= to resume or evaluate this run (marl.train(resume=RUN_DIR, "
                   "env=...), marl.load(RUN_DIR, env=...), marl.evaluate(RUN_DIR, env=...)); `marl eval`, "
                   "`marl record` and `marl train resume=` cannot rebuild it")


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished training run (what :func:`train_run` returns).

    Attributes:
        run_dir: the run directory (``config.yaml``, ``checkpoints/``, ``summary.json``).
        summary: what ``summary.json`` holds (``env_steps``, ``final_eval``, ``best_eval``, ...).
        config: the resolved config as run.
    """

    run_dir: Path
    summary: dict[str, Any]
    config: Config

    @property
    def final_return(self) -> float:
        """Team return of the final deterministic evaluation (``summary["final_eval"]["ep_return"]``)."""
        return float(self.summary["final_eval"]["ep_return"])


def train_run(
    config: str | Path | Mapping[str, Any] | Config | None = None,
    *,
    env: EnvArg = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    **kwargs: Any,
) -> Run:
    """Train a config from Python (``marl.train``); return the :class:`Run`.

    Args:
        config: a YAML path, a nested mapping as YAML gives (``{"algo": {"name": "ppo"}}``), a
            :class:`Config`, or ``None`` for the embedded default (with ``resume=``: the run's own config).
        env: an env id, or a callable returning a PettingZoo ``ParallelEnv`` / ``AECEnv`` or a
            ``gymnasium.Env`` (e.g. your own env class), called with ``env.kwargs``. An importable
            callable is recorded as ``env.id = "module:qualname"`` (``marl eval`` and resume rebuild
            it); one that is not (``__main__``, a notebook, a function body) trains all the same,
            recorded as ``"unimportable:module:qualname"``, and ``config.yaml`` and ``summary.json``
            say that it must be passed again as ``env=`` to resume or evaluate.
        overrides: ``{"algo.lr": 3e-4}`` (dotted keys, Python values), or ``["algo.lr=3e-4"]``.
        **kwargs: overrides as keywords, ``__`` for each dot: ``seed=1, algo__lr=3e-4``.

    Raises:
        ConfigError: an unknown key (with the nearest valid one), a bad value or an env that
            cannot be built; one line naming the key and the fix.
    """
    cfg = build_config(config, env=env, overrides=overrides, **kwargs)
    trainer = algorithm(cfg.algo.name).trainer_class(cfg)(cfg)
    unimportable = trainer.cfg.env.id.startswith(UNIMPORTABLE)
    if unimportable:
        path = trainer.run_dir / "config.yaml"
        path.write_text(f"# NOTE: {_NOT_IMPORTABLE}\n" + path.read_text())
    summary = trainer.train()
    if unimportable:
        summary["env_note"] = _NOT_IMPORTABLE
        (trainer.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return Run(Path(trainer.run_dir), summary, trainer.cfg)


def _run_path(path: str | Path | Run) -> Path:
    return path.run_dir if isinstance(path, Run) else Path(path)


def load(path: str | Path | Run, device: str = "cpu", *, env: EnvArg = None) -> DeployedPolicy:
    """The policy of a run directory or checkpoint (``marl.load``), ready to act on plain env observations.

    Args:
        path: a run directory (its ``checkpoints/best.pt``, else ``latest.pt``), a checkpoint file or a :class:`Run`.
        device: torch device of the networks.
        env: the env, when the run's cannot be rebuilt from its config (a callable that is not importable).

    Raises:
        CheckpointError: not a marl checkpoint or run directory (the message of ``marl eval``).
    """
    policy, cfg, _ = load_policy(_run_path(path), device, env)
    return DeployedPolicy(policy, cfg, policy.spec)  # both registered acting policies keep their EnvSpec


def evaluate(
    run_or_policy: str | Path | Run | DeployedPolicy,
    episodes: int | None = None,
    *,
    seed: int | None = None,
    deterministic: bool | None = None,
    num_envs: int | None = None,
    opponent: str | None = None,
    env: EnvArg = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate a run, checkpoint or loaded policy as ``marl eval`` does; return
    :func:`marl.evaluation.evaluate`'s result.

    ``None`` arguments take the run's ``eval`` section (``episodes``, ``deterministic``,
    ``num_envs``, ``opponent``) and seed, as ``marl eval`` does. ``env``: as for :func:`load`.
    """
    from marl.env.make import eval_backend, vector_env
    from marl.evaluation import evaluate as run_evaluation

    if isinstance(run_or_policy, DeployedPolicy):
        policy, cfg = run_or_policy.policy, _with_env(run_or_policy.config, env)
    else:
        policy, cfg, _ = load_policy(_run_path(run_or_policy), device, env)
    episodes = episodes or cfg.eval.episodes
    return run_evaluation(
        policy, functools.partial(vector_env, cfg, backend=eval_backend(cfg)), episodes,
        cfg.seed if seed is None else seed,
        deterministic=cfg.eval.deterministic if deterministic is None else deterministic,
        num_envs=min(episodes, num_envs or cfg.eval.num_envs), opponent=opponent or cfg.eval.opponent,
    )


def _override_strings(overrides: Mapping[str, Any] | Sequence[str] | None) -> tuple[str, ...]:
    """``key=value`` strings (the form :mod:`marl.comparison` takes); values written as JSON, which YAML reads back."""
    if isinstance(overrides, Mapping):
        return tuple(f"{k}={json.dumps(v)}" for k, v in overrides.items())
    return tuple(overrides or ())


def compare(
    config: str | Path | Mapping[str, Any] | Config | None,
    variants: Mapping[str, Mapping[str, Any] | Sequence[str]] | Sequence[Any],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    out: str | Path | None = None,
    jobs: int = 1,
    force: bool = False,
    reps: int = 10_000,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]]:
    """Train variants of one config over seeds and write a report (``marl compare`` from Python).

    Args:
        config: as for :func:`train_run` (a mapping or :class:`Config` is written to ``OUT/base_config.yaml``,
            which the runs read; its env must then be an id, not a callable).
        variants: ``{name: {"model.sharing": "independent"}}`` (dotted keys as in :func:`train_run`, or
            ``key=value`` strings), or :class:`marl.comparison.Variant` objects.
        seeds: every variant trains with each of these seeds.
        overrides: applied to every variant, before its own (``{"total_env_steps": 20_000}``).
        out: report folder (default ``reports/compare-<config name>-<time>``); finished runs there are reused.
        jobs: runs trained at once (``1``: in this process).
        force: retrain runs that already finished.
        reps: bootstrap replications of each interval.
        log: where progress lines go.

    Returns:
        ``(report.md path, results)``, as :func:`marl.comparison.run_comparison` (``results.json``).
    """
    from marl.comparison import Variant, run_comparison

    if isinstance(variants, Mapping):
        variants = [Variant(name, _override_strings(o)) for name, o in variants.items()]
    path: Path | None = Path(config) if isinstance(config, (str, Path)) else None
    if out is None:
        stem = path.stem if path else "config"
        out = Path("reports") / f"compare-{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if config is not None and path is None:
        Path(out).mkdir(parents=True, exist_ok=True)
        path = Path(out) / "base_config.yaml"
        dump_yaml(build_config(config), path)
    return run_comparison(path, list(variants), list(seeds), overrides=_override_strings(overrides), out=out,
                          jobs=jobs, force=force, reps=reps, log=log)
