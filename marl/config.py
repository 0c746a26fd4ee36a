"""Experiment configuration: typed schemas, strict YAML loading and dotted overrides.

An experiment is ``env × algo × model × run settings``; each section is a dataclass
whose fields carry a type, a default and a one-line doc (with the unit). The same
names are used as YAML keys, constructor arguments and metric names.

* ``load_config(path, overrides)`` reads YAML with ``yaml.safe_load`` (a
  ``!!python/...`` tag is refused), applies ``key.sub=value`` overrides, and
  validates: an unknown key is an error that names the nearest valid key, a value of
  the wrong type or out of range is an error that names the key and the fix.
* Derived values (batch size, minibatch size, iterations) are computed by
  properties, never written back into the config.
* ``to_dict(cfg)`` gives the resolved config saved with every run and checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from marl.registry import ALGORITHMS, UnknownAlgorithm, algorithm
from marl.schemas import (  # noqa: F401 - the schemas are part of this module's interface
    SECTIONS,
    APPOConfig,
    CheckpointConfig,
    Config,
    DQNConfig,
    EnvConfig,
    EvalConfig,
    HealthConfig,
    LogConfig,
    ModelConfig,
    NormConfig,
    OffPolicyConfig,
    PPOConfig,
    QMIXConfig,
    RayConfig,
    SACConfig,
    TD3Config,
    VDNConfig,
)

DEFAULT_CONFIG = Path(__file__).with_name("default_config.yaml")
"""The embedded default run (``marl train`` without a config file): a copy of
``configs/simple_spread_ppo.yaml`` shipped inside the package (a test keeps the two equal)."""


class ConfigError(ValueError):
    """A config key, type or value that cannot be used; the message says which and how to fix it."""


# --------------------------------------------------------------------------- loading
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader: a ``!!python/...`` tag raises a ConstructorError (never executes anything)."""


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with the safe loader; refuse python tags with a clear error."""
    p = Path(path)
    if not p.is_file():
        hint = "it is a directory: give its config.yaml, or resume=DIR to continue a run" if p.is_dir() else \
            "check the path (the shipped configs are in configs/; `marl train` alone runs the default)"
        raise ConfigError(f"{path}: no such config file ({hint})")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(f"{path}: unsupported YAML tag ({exc.problem}); "
                          "configs are plain YAML, python tags are refused") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"algo.lr=1e-3"`` -> (["algo", "lr"], 0.001); the value is parsed as YAML (safe)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_StrictLoader) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: cannot parse value {raw!r}: {exc}") from exc
    return key.strip().split("."), value


def _set_path(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(path)}: {part!r} is not a section")
    node[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a validated :class:`Config` from an optional YAML file and ``key=value`` overrides."""
    data = read_yaml(path) if path else {}
    data.pop("defaults", None)
    return from_dict(with_overrides(data, overrides))


def with_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A copy of the nested mapping ``data`` with ``key.sub=value`` overrides applied (not yet validated)."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        _set_path(data, keys, value)
    return data


def from_dict(data: dict) -> Config:
    """Validate a nested mapping into a :class:`Config` (strict keys, checked types and values)."""
    data = dict(data)
    algo_data = data.pop("algo", None) or {}
    if not isinstance(algo_data, dict):
        raise ConfigError(f"algo must be a mapping with a name (one of {sorted(ALGORITHMS)}), got {algo_data!r}")
    try:
        entry = algorithm(algo_data.get("name", "ppo"))
    except UnknownAlgorithm as exc:
        raise ConfigError(f"algo.name: {exc}") from None
    cfg = _build(Config, data, "")
    cfg.algo = _build(entry.config_class(), algo_data, "algo.")
    validate(cfg)
    return cfg


# Names other libraries use for our keys (Stable-Baselines3, CleanRL), for "did you mean" hints.
ALIASES = {
    "learning_rate": "lr", "n_steps": "num_steps", "n_epochs": "update_epochs", "clip_range": "clip_coef",
    "n_envs": "num_envs", "total_timesteps": "total_env_steps", "lam": "gae_lambda", "gae": "gae_lambda",
    "ent": "ent_coef", "vf": "vf_coef", "max_grad": "max_grad_norm", "num_epochs": "update_epochs",
    "clip_range_vf": "clip_value_loss", "clip_vloss": "clip_value_loss", "normalize_advantage": "advantage",
    "env_id": "id", "net_arch": "hidden",
}


# Keys renamed since they were introduced: old dotted key -> new one (the old key is an error naming the new).
RENAMED = {
    "health.alpha_floor_frac": "health.ent_coef_floor_frac",
    "algo.clip_vloss": "algo.clip_value_loss",
}


def nearest_key(key: str, valid: list[str]) -> str | None:
    """The valid key closest to ``key`` (by spelling, or through a known alias), or ``None``."""
    candidates = {k: k for k in valid}
    candidates.update({alias: k for alias, k in ALIASES.items() if k in valid})
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return candidates[close[0]] if close else None


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            if f"{prefix}{key}" in RENAMED:
                raise ConfigError(f"{prefix}{key} was renamed to {RENAMED[prefix + key]}; use that key instead")
            close = nearest_key(str(key), list(fields))
            hint = f"; did you mean {prefix}{close}?" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint} (valid keys here: {', '.join(fields)})")
        if key in SECTIONS and cls is Config:
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} must be a section (a mapping), got {value!r}")
            kwargs[key] = _build(SECTIONS[key], value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_type(f"{prefix}{key}", value, hints[key])
    return cls(**kwargs)


def _check_type(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_type(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not fit type {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp in (list, dict) or origin in (list, dict):
        base = origin or tp
        if not isinstance(value, base):
            raise ConfigError(f"{key}: expected a {base.__name__}, got {value!r}")
        return value
    return value


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: Config) -> None:
    """Check values that types alone cannot (ranges, divisibility); raise :class:`ConfigError`."""
    _require(cfg.seed >= 0, "seed", f"must be a non-negative integer, got {cfg.seed}")
    _require(not (cfg.env.single_group and cfg.env.groups), "env.single_group",
             "puts every agent in one group: leave env.groups empty, or set env.single_group=false")
    _require(cfg.total_env_steps > 0, "total_env_steps", "must be > 0")
    _require(cfg.env.num_envs >= 1, "env.num_envs", "must be >= 1")
    _require(cfg.env.num_workers >= 0, "env.num_workers", "must be >= 0 (0 = one per core)")
    _require(cfg.env.frame_stack >= 1, "env.frame_stack", "must be >= 1 (1 = off)")
    _require(cfg.env.action_repeat >= 1, "env.action_repeat", "must be >= 1 (1 = off)")
    _require(len(cfg.env.resize) in (0, 2), "env.resize", "must be [] or [height, width]")
    _require(cfg.torch_threads >= 0, "torch_threads", "must be >= 0")
    _require(cfg.update_threads >= -1, "update_threads", "must be >= 1, 0 (= torch_threads) or -1 (auto)")
    _require(cfg.eval.episodes >= 1, "eval.episodes", "must be >= 1")
    _require(cfg.eval.num_envs >= 1, "eval.num_envs", "must be >= 1")
    _require(cfg.eval.interval >= 0, "eval.interval", "must be >= 0")
    _require(cfg.checkpoint.interval >= 0, "checkpoint.interval", "must be >= 0")
    _require(cfg.checkpoint.keep_last >= 0, "checkpoint.keep_last", "must be >= 0")
    _require(all(isinstance(h, int) and h > 0 for h in cfg.model.hidden), "model.hidden",
             "must be a list of positive integers")
    _require(cfg.norm.obs_clip > 0, "norm.obs_clip", "must be > 0")
    for section in ("health", "log", "distributed", "ray"):
        for key, message in getattr(cfg, section).problems():
            _require(False, f"{section}.{key}", message)
    _require(cfg.norm.reward_clip >= 0, "norm.reward_clip", "must be >= 0 (0 = no clipping)")
    if cfg.runtime == "ray":
        _validate_ray(cfg)
    sharing = cfg.model.sharing
    _require(
        sharing in ("shared", "independent") or isinstance(sharing, dict),
        "model.sharing",
        "must be shared, independent, or a mapping {agent_or_glob: parameter_set}",
    )
    algo = cfg.algo
    if isinstance(algo, APPOConfig):
        _validate_appo(cfg, algo)
    if isinstance(algo, PPOConfig):
        _require(algo.lr > 0, "algo.lr", f"learning rate must be > 0, got {algo.lr}")
        _require(0 < algo.gamma <= 1, "algo.gamma", f"must be in (0, 1], got {algo.gamma}")
        _require(0 <= algo.gae_lambda <= 1, "algo.gae_lambda", f"must be in [0, 1], got {algo.gae_lambda}")
        _require(algo.num_steps >= 1, "algo.num_steps", "must be >= 1")
        _require(algo.update_epochs >= 1, "algo.update_epochs", "must be >= 1")
        _require(algo.num_minibatches >= 1, "algo.num_minibatches", "must be >= 1")
        _require(algo.clip_coef > 0, "algo.clip_coef", "must be > 0")
        _require(algo.max_grad_norm >= 0, "algo.max_grad_norm", "must be >= 0 (0 = off)")
        _require(algo.target_kl >= 0, "algo.target_kl", "must be >= 0 (0 = off)")
        _require(
            cfg.batch_size % algo.num_minibatches == 0,
            "algo.num_minibatches",
            f"the rollout has num_steps*num_envs = {cfg.batch_size} rows, not divisible by "
            f"{algo.num_minibatches} minibatches; change algo.num_minibatches, algo.num_steps or env.num_envs",
        )
        if cfg.model.recurrent != "none":
            _validate_recurrent_ppo(cfg, algo)
        _require(
            not (cfg.norm.advantage and cfg.minibatch_size < 2),
            "algo.num_minibatches",
            f"minibatches of {cfg.minibatch_size} row cannot be advantage-normalized; use fewer minibatches "
            "or set norm.advantage=false",
        )
    if isinstance(algo, OffPolicyConfig):
        _validate_off_policy(cfg, algo)


def _validate_ray(cfg: Config) -> None:
    """``runtime=ray``: Ray installed, an env backend of adapters, and a split of ``env.num_envs`` over workers."""
    import importlib.util

    _require(importlib.util.find_spec("ray") is not None, "runtime",
             "runtime=ray needs Ray: pip install 'marl[ray]'")
    _require(cfg.env.backend != "batched", "env.backend",
             "batched is one simulation in one process; runtime=ray steps env copies on workers: "
             "use env.backend=sync (or runtime=local)")
    if getattr(cfg.algo, "num_actors", 0) > 0:  # Ape-X: the actors split the copies (checked with algo)
        return
    n, workers, per = cfg.env.num_envs, cfg.ray.num_workers, cfg.ray.envs_per_worker
    if workers and per:
        _require(workers * per == n, "ray.envs_per_worker",
                 f"ray.num_workers={workers} x ray.envs_per_worker={per} != env.num_envs={n}; "
                 f"set env.num_envs={workers * per} or leave one of the two at 0")
    elif workers:
        _require(n % workers == 0 and workers <= n, "ray.num_workers",
                 f"env.num_envs={n} does not split evenly over {workers} workers; "
                 "use a divisor of env.num_envs or change env.num_envs")
    else:
        _require(n % per == 0, "ray.envs_per_worker",
                 f"env.num_envs={n} is not a multiple of ray.envs_per_worker={per}")


def _validate_recurrent_ppo(cfg: Config, algo: PPOConfig) -> None:
    """Chunking checks of recurrent PPO (``model.recurrent`` set): whole chunks per minibatch."""
    _require(algo.bptt_len >= 0, "algo.bptt_len", "must be >= 0 (0 = the whole rollout)")
    length = algo.chunk_len()
    _require(algo.num_steps % length == 0, "algo.bptt_len",
             f"algo.num_steps={algo.num_steps} is not divisible by algo.bptt_len={length}; pick a divisor")
    chunks = algo.num_steps // length * cfg.env.num_envs
    _require(chunks % algo.num_minibatches == 0, "algo.num_minibatches",
             f"the rollout has (num_steps/bptt_len)*num_envs = {chunks} chunks, not divisible by "
             f"{algo.num_minibatches} minibatches; change algo.num_minibatches, algo.bptt_len or env.num_envs")
    _require(cfg.model.rnn_hidden >= 1, "model.rnn_hidden", "must be >= 1")
    _require(len(cfg.model.hidden) >= 1, "model.hidden",
             "a recurrent model needs at least one encoder width before its core, e.g. [64]")


def _validate_appo(cfg: Config, algo: APPOConfig) -> None:
    """What asynchronous PPO needs beyond PPO: V-trace clips, the lag bound, equal worker rollouts."""
    _require(algo.c_bar > 0, "algo.c_bar", f"must be > 0, got {algo.c_bar}")
    _require(algo.rho_bar >= algo.c_bar, "algo.rho_bar", f"must be >= algo.c_bar ({algo.c_bar}), got {algo.rho_bar}")
    _require(algo.max_lag >= -1, "algo.max_lag", f"must be >= 0, or -1 = never drop, got {algo.max_lag}")
    _require(algo.worker_timeout_s > 0, "algo.worker_timeout_s", "must be > 0")
    _require(cfg.env.backend != "batched", "env.backend",
             "appo steps its env copies inside its worker processes; use env.backend=sync or subprocess")
    _require(cfg.model.recurrent == "none", "model.recurrent",
             "appo's workers carry no hidden states yet; use algo.name=ppo for recurrent policies (or "
             "model.recurrent=none)")
    if cfg.runtime == "ray":  # the split over actors is checked by _validate_ray
        key, workers = "ray.num_workers", cfg.ray.num_workers or cfg.env.num_envs // max(cfg.ray.envs_per_worker, 1)
    else:
        key, workers = "env.num_workers", cfg.env.num_workers
    if workers > 0:
        _require(workers <= cfg.env.num_envs and cfg.env.num_envs % workers == 0, key,
                 f"appo splits env.num_envs={cfg.env.num_envs} copies evenly over its workers; "
                 f"{workers} workers do not divide them")
        rows = algo.num_steps * cfg.env.num_envs // workers
        _require(rows % algo.num_minibatches == 0, "algo.num_minibatches",
                 f"a worker's rollout has num_steps*num_envs/num_workers = {rows} rows, not divisible by "
                 f"{algo.num_minibatches} minibatches; change algo.num_minibatches, algo.num_steps or env.num_envs")
        _require(not (cfg.norm.advantage and rows // algo.num_minibatches < 2), "algo.num_minibatches",
                 f"minibatches of {rows // algo.num_minibatches} row cannot be advantage-normalized; "
                 "use fewer minibatches or set norm.advantage=false")


def _validate_off_policy(cfg: Config, algo: OffPolicyConfig) -> None:
    """Value checks of the off-policy sections (DQN, SAC, TD3)."""
    _require(algo.lr > 0, "algo.lr", f"learning rate must be > 0, got {algo.lr}")
    _require(algo.adam_eps > 0, "algo.adam_eps", "must be > 0")
    _require(0 < algo.gamma <= 1, "algo.gamma", f"must be in (0, 1], got {algo.gamma}")
    _require(algo.buffer_size >= cfg.env.num_envs, "algo.buffer_size",
             f"must hold at least one row per env copy (>= env.num_envs = {cfg.env.num_envs})")
    _require(algo.batch_size >= 1, "algo.batch_size", "must be >= 1")
    _require(algo.learning_starts >= 0, "algo.learning_starts", "must be >= 0")
    _require(algo.learning_starts <= algo.buffer_size, "algo.learning_starts",
             f"{algo.learning_starts} random steps do not fit in a replay of {algo.buffer_size} rows; "
             "lower it or raise algo.buffer_size")
    _require(algo.train_freq >= 1, "algo.train_freq", "must be >= 1")
    _require(algo.gradient_steps >= 1, "algo.gradient_steps", "must be >= 1")
    _require(0 < algo.tau <= 1, "algo.tau", f"must be in (0, 1] (1 = hard copy), got {algo.tau}")
    _require(algo.target_update_interval >= 1, "algo.target_update_interval", "must be >= 1")
    _require(algo.max_grad_norm >= 0, "algo.max_grad_norm", "must be >= 0 (0 = off)")
    _require(algo.n_step >= 1, "algo.n_step", "must be >= 1")
    _require(0 <= algo.per_alpha <= 1, "algo.per_alpha", f"must be in [0, 1], got {algo.per_alpha}")
    _require(0 <= algo.per_beta <= 1, "algo.per_beta", f"must be in [0, 1], got {algo.per_beta}")
    _require(algo.per_eps > 0, "algo.per_eps", "must be > 0 so that no row gets priority 0")
    _require(algo.n_sampled_goal >= 0, "algo.n_sampled_goal", "must be >= 0")
    _require(not (algo.her and algo.n_step > 1), "algo.n_step",
             "hindsight relabelling recomputes one-step rewards only; use algo.n_step=1 with algo.her=true")
    _require(not cfg.norm.reward, "norm.reward",
             f"{algo.name} stores raw rewards in the replay (HER recomputes them); set norm.reward=false")
    _require(cfg.model.critic == "local", "model.critic",
             f"{algo.name} critics see each agent's own observation; set model.critic=local")
    if cfg.model.recurrent != "none":
        _validate_recurrent_dqn(cfg, algo)
    _validate_apex(cfg, algo)
    if isinstance(algo, DQNConfig):
        _require(0 < algo.exploration_fraction <= 1, "algo.exploration_fraction", "must be in (0, 1]")
        for key in ("epsilon_start", "epsilon_final"):
            value = getattr(algo, key)
            _require(0 <= value <= 1, f"algo.{key}", f"a probability in [0, 1], got {value}")
    if isinstance(algo, VDNConfig):
        _require(not algo.her, "algo.her", f"{algo.name} learns a team value, not goal-conditioned agents; "
                 "set algo.her=false")
        _require(algo.return_reg >= 0, "algo.return_reg", f"must be >= 0 (0 = off), got {algo.return_reg}")
        _require(algo.return_horizon >= 1, "algo.return_horizon", f"must be >= 1, got {algo.return_horizon}")
        _require(algo.softmax_beta >= 0, "algo.softmax_beta", f"must be >= 0 (0 = the max), got {algo.softmax_beta}")
        if algo.softmax_beta > 0:
            _require(cfg.model.recurrent == "none", "algo.softmax_beta", "the softmax target is built for "
                     "feed-forward agents; set algo.softmax_beta=0 or model.recurrent=none")
        if algo.return_stats == "returns":
            _require(algo.standardize_returns, "algo.return_stats", "'returns' sets the units of "
                     "algo.standardize_returns; set algo.standardize_returns=true or algo.return_stats=targets")
            _require(cfg.model.recurrent == "none", "algo.return_stats", "recurrent agents see only the returns of "
                     "episodes that end inside a sampled sequence (their tails, unless algo.seq_len covers whole "
                     "episodes), a biased mean and std; set algo.return_stats=targets or model.recurrent=none")
        for key, on in (("return_reg", algo.return_reg > 0), ("return_stats", algo.return_stats == "returns")):
            if not on:
                continue
            _require(not algo.standardize_rewards, f"algo.{key}",
                     "the Monte-Carlo returns are in raw reward units, which per-batch standardized rewards change; "
                     f"set algo.standardize_rewards=false or algo.{key}={'0' if key == 'return_reg' else 'targets'}")
    if isinstance(algo, QMIXConfig):
        _require(algo.mixer_embed >= 1, "algo.mixer_embed", "must be >= 1")
        _require(algo.hypernet_layers in (1, 2), "algo.hypernet_layers", f"must be 1 or 2, got {algo.hypernet_layers}")
        _require(algo.hypernet_embed >= 1, "algo.hypernet_embed", "must be >= 1")
    if isinstance(algo, SACConfig):
        _require(algo.ent_coef > 0, "algo.ent_coef", f"must be > 0, got {algo.ent_coef}")
        _require(0 < algo.target_entropy_scale <= 1, "algo.target_entropy_scale", "must be in (0, 1]")
    if isinstance(algo, TD3Config):
        for key in ("exploration_noise", "policy_noise", "noise_clip"):
            _require(getattr(algo, key) >= 0, f"algo.{key}", "must be >= 0")
        _require(algo.policy_delay >= 1, "algo.policy_delay", "must be >= 1")


def _validate_recurrent_dqn(cfg: Config, algo: OffPolicyConfig) -> None:
    """Sequence replay checks of recurrent DQN, VDN and QMIX (``model.recurrent`` set)."""
    _require(isinstance(algo, DQNConfig), "model.recurrent",
             f"{algo.name} has no recurrent networks; set model.recurrent=none (recurrent models train with algo "
             "ppo, dqn, vdn or qmix)")
    _require(cfg.model.rnn_hidden >= 1, "model.rnn_hidden", "must be >= 1")
    _require(len(cfg.model.hidden) >= 1, "model.hidden",
             "a recurrent model needs at least one encoder width before its core, e.g. [64]")
    _require(algo.seq_len >= 1, "algo.seq_len", f"must be >= 1, got {algo.seq_len}")
    _require(algo.burn_in >= 0, "algo.burn_in", f"must be >= 0, got {algo.burn_in}")
    _require(algo.burn_in < algo.seq_len, "algo.burn_in",
             f"burn_in={algo.burn_in} leaves no trained step in a sequence of seq_len={algo.seq_len}; "
             f"lower algo.burn_in or raise algo.seq_len above it")
    _require(algo.n_step <= algo.seq_len - algo.burn_in, "algo.n_step",
             f"n-step windows stay inside one sequence: n_step={algo.n_step} must be <= seq_len - burn_in = "
             f"{algo.seq_len - algo.burn_in}; lower algo.n_step or raise algo.seq_len")
    _require(0 <= algo.per_eta <= 1, "algo.per_eta", f"must be in [0, 1], got {algo.per_eta}")
    _require(algo.buffer_size // (algo.seq_len - algo.burn_in) >= algo.batch_size, "algo.buffer_size",
             f"the replay holds buffer_size / (seq_len - burn_in) = {algo.buffer_size // (algo.seq_len - algo.burn_in)}"
             f" sequences, fewer than algo.batch_size={algo.batch_size}; raise algo.buffer_size or lower "
             "algo.batch_size")
    _require(not algo.her, "algo.her", "recurrent dqn stores sequences, which hindsight relabelling does not "
             "handle; set algo.her=false or model.recurrent=none")
    _require(algo.num_actors == 0, "algo.num_actors", "Ape-X actors carry no hidden states; set algo.num_actors=0 "
             "or model.recurrent=none")


def _validate_apex(cfg: Config, algo: OffPolicyConfig) -> None:
    """``algo.num_actors > 0`` (Ape-X actor processes): what the asynchronous off-policy trainer supports."""
    _require(algo.num_actors >= 0, "algo.num_actors", "must be >= 0 (0 = the synchronous loop)")
    _require(algo.actor_batch >= 1, "algo.actor_batch", "must be >= 1")
    _require(algo.weight_sync_interval >= 1, "algo.weight_sync_interval", "must be >= 1")
    if isinstance(algo, DQNConfig):
        _require(0 < algo.apex_epsilon_base <= 1, "algo.apex_epsilon_base", "a probability in (0, 1]")
        _require(algo.apex_epsilon_alpha >= 0, "algo.apex_epsilon_alpha", "must be >= 0")
    if algo.num_actors == 0:
        return
    _require(algo.name in ("dqn", "sac", "td3"), "algo.num_actors",
             f"Ape-X actors run dqn, sac and td3, not {algo.name}; set algo.num_actors=0")
    _require(cfg.env.num_envs % algo.num_actors == 0, "algo.num_actors",
             f"{algo.num_actors} actors must split env.num_envs={cfg.env.num_envs} evenly; "
             "set env.num_envs to a multiple of algo.num_actors")
    _require(not algo.her, "algo.her", "hindsight relabelling is not available with Ape-X actors; "
             "set algo.her=false or algo.num_actors=0")


def to_dict(cfg: Any) -> dict:
    """The resolved config as plain data (what config.yaml and checkpoints hold)."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, default, doc)`` rows of every field, for ``marl config --help`` style listings."""
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if cls is Config and f.name in SECTIONS:
            rows += describe(SECTIONS[f.name], key + ".")
        elif cls is Config and f.name == "algo":
            for name, entry in ALGORITHMS.items():
                rows += describe(entry.config_class(), f"algo[{name}].")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((key, repr(default), f.metadata.get("doc", "")))
    return rows
