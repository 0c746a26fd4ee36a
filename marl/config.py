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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from marl.registry import ALGORITHMS, UnknownAlgorithm, algorithm

DEFAULT_CONFIG = Path(__file__).with_name("default_config.yaml")
"""The embedded default run (``marl train`` without a config file): a copy of
``configs/simple_spread_ppo.yaml`` shipped inside the package (a test keeps the two equal)."""


class ConfigError(ValueError):
    """A config key, type or value that cannot be used; the message says which and how to fix it."""


def _f(default: Any, doc: str) -> Any:
    """A dataclass field with a default (copied when mutable) and a one-line doc."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


# --------------------------------------------------------------------------- sections
@dataclass
class EnvConfig:
    """Which environment to train on and how its copies are run."""

    id: str = _f("mpe2.simple_spread_v3", "env id: a Gymnasium id (CartPole-v1) or a module path (mpe2.simple_spread_v3, envs.grid_nav)")
    kwargs: dict = _f({}, "keyword arguments passed to the env constructor")
    num_envs: int = _f(8, "env copies stepped together (E)")
    backend: Literal["sync", "subprocess"] = _f("sync", "sync: in-process; subprocess: worker processes with shared memory")
    num_workers: int = _f(0, "worker processes for the subprocess backend; 0 = one per CPU core (at most num_envs)")
    overlap: bool = _f(True, "subprocess backend: step one chunk of env copies while the policy acts on another")
    groups: dict = _f({}, "explicit agent groups {group: [agent, ...]}; empty = group by name prefix (adversary_0 -> adversary)")
    frame_stack: int = _f(1, "stack the last k observations (images: on the channel axis [H, W, C*k]); 1 = off")
    grayscale: bool = _f(False, "convert image observations to one channel")
    resize: list = _f([], "resize image observations to [H, W]; empty = keep")
    action_repeat: int = _f(1, "repeat each chosen action k env frames, summing rewards; env steps count agent decisions")
    pad: bool = _f(False, "pad observations/actions (SuperSuit) so unlike agents can share one network")


@dataclass
class NormConfig:
    """Observation, reward and advantage normalization switches."""

    obs: bool = _f(True, "standardize observations with running mean/std (float64 Welford), frozen in evaluation")
    obs_clip: float = _f(10.0, "clip normalized observations to [-obs_clip, obs_clip]")
    reward: bool = _f(True, "scale rewards by the running std of the discounted return (no mean subtraction)")
    reward_clip: float = _f(10.0, "clip scaled rewards to [-reward_clip, reward_clip]; 0 = no clipping")
    advantage: bool = _f(True, "standardize advantages per minibatch")


@dataclass
class ModelConfig:
    """Networks: sizes, and how agents share parameters."""

    hidden: list = _f([64, 64], "hidden layer widths of the MLPs")
    activation: Literal["tanh", "relu", "elu", "silu"] = _f("tanh", "hidden activation")
    sharing: Any = _f("shared", "shared | independent | {agent_or_glob: parameter_set_name}, per group")
    agent_id: bool = _f(True, "append a one-hot agent id to the input of a network that serves several agents")
    strategy: Literal["batched", "fork", "loop"] = _f("batched", "forward strategy for independent parameters")
    critic: Literal["local", "central"] = _f("local", "local: V(own obs) (IPPO); central: V(global state) (MAPPO)")
    init_log_std: float = _f(0.0, "initial log std of Gaussian policies")


@dataclass
class PPOConfig:
    """Proximal Policy Optimization (Schulman et al. 2017) hyperparameters."""

    name: Literal["ppo"] = _f("ppo", "algorithm name")
    lr: float = _f(3e-4, "Adam learning rate")
    anneal_lr: bool = _f(True, "decay the learning rate linearly to 0 over training")
    num_steps: int = _f(128, "rollout length per env copy (T)")
    num_minibatches: int = _f(4, "minibatches per epoch; rollout rows (T*E) must divide evenly")
    update_epochs: int = _f(4, "passes over each rollout (K)")
    gamma: float = _f(0.99, "discount factor, in (0, 1]")
    gae_lambda: float = _f(0.95, "GAE lambda, in [0, 1]")
    clip_coef: float = _f(0.2, "PPO ratio clip epsilon")
    anneal_clip: bool = _f(False, "decay clip_coef linearly to 0 over training (rl-zoo's lin_0.2)")
    clip_vloss: bool = _f(False, "clip the value update around the old value estimate (by clip_coef)")
    ent_coef: float = _f(0.01, "entropy bonus coefficient")
    vf_coef: float = _f(0.5, "value loss coefficient")
    max_grad_norm: float = _f(0.5, "global gradient norm clip; 0 = off")
    target_kl: float = _f(0.0, "stop the epochs of an update early when approx KL exceeds this; 0 = off")
    bootstrap_on_truncation: bool = _f(True, "bootstrap from V(final obs) on time limits; false treats them as terminal")
    optimizer: Literal["common", "per_group"] = _f("common", "one optimizer over all groups, or one per group")
    adam_eps: float = _f(1e-5, "Adam epsilon")


@dataclass
class OffPolicyConfig:
    """Fields every off-policy algorithm shares: replay, training cadence, targets, PER, HER.

    Not an algorithm itself: :class:`DQNConfig`, :class:`SACConfig` and :class:`TD3Config`
    extend it (and change some defaults). Units: ``env steps`` are summed over env copies
    (a vector step of E copies is E env steps); a *row* is one env step of one env copy,
    all agents of a group.
    """

    name: str = _f("", "algorithm name")
    lr: float = _f(3e-4, "Adam learning rate of every network (and of SAC's log_alpha)")
    adam_eps: float = _f(1e-8, "Adam epsilon")
    gamma: float = _f(0.99, "discount factor, in (0, 1]")
    buffer_size: int = _f(1_000_000, "replay capacity in rows per group; rounded down to a multiple of env.num_envs")
    learning_starts: int = _f(1_000, "env steps of uniformly random actions; training starts at max(this, batch_size) rows")
    batch_size: int = _f(256, "rows per gradient step (B)")
    train_freq: int = _f(1, "env steps collected between training phases")
    gradient_steps: int = _f(1, "gradient steps per training phase")
    tau: float = _f(0.005, "target update: target <- (1 - tau) target + tau online; 1 = hard copy")
    target_update_interval: int = _f(1, "gradient steps between target updates")
    max_grad_norm: float = _f(0.0, "global gradient norm clip of each optimizer; 0 = off")
    n_step: int = _f(1, "n-step TD targets, cut at episode ends; 1 = one-step")
    per: bool = _f(False, "prioritized replay (sum tree), priorities (|TD error| + per_eps)^per_alpha")
    per_alpha: float = _f(0.6, "PER prioritization exponent in [0, 1]; 0 = uniform")
    per_beta: float = _f(0.4, "PER importance exponent at the start, annealed linearly to 1 over training")
    per_eps: float = _f(1e-6, "PER constant added to |TD error| so no row has priority 0")
    her: bool = _f(False, "hindsight relabelling of goals (goal envs only; one-step targets)")
    her_strategy: Literal["future", "final", "episode", "random"] = _f("future", "where relabelled goals come from")
    n_sampled_goal: int = _f(4, "relabelled goals per real transition: a fraction k/(k+1) of each batch")
    save_replay: bool = _f(False, "also write the replay into latest.pt and step_*.pt (bytes: replay/bytes_per_row x buffer_size)")


@dataclass
class DQNConfig(OffPolicyConfig):
    """Deep Q-Network (Mnih et al. 2015) with double-Q targets (van Hasselt et al. 2016), Huber loss,
    epsilon-greedy exploration and an optional dueling head (Wang et al. 2016); discrete actions."""

    name: Literal["dqn"] = _f("dqn", "algorithm name")
    lr: float = _f(1e-4, "Adam learning rate")
    buffer_size: int = _f(100_000, "replay capacity in rows per group; rounded down to a multiple of env.num_envs")
    batch_size: int = _f(32, "rows per gradient step (B)")
    train_freq: int = _f(4, "env steps collected between training phases")
    tau: float = _f(1.0, "target update: target <- (1 - tau) target + tau online; 1 = hard copy")
    target_update_interval: int = _f(1_000, "gradient steps between target updates")
    max_grad_norm: float = _f(10.0, "global gradient norm clip; 0 = off")
    exploration_fraction: float = _f(0.1, "fraction of total_env_steps over which epsilon decays linearly")
    epsilon_start: float = _f(1.0, "epsilon-greedy: probability of a random action at the start")
    epsilon_final: float = _f(0.05, "epsilon after the decay (also the epsilon of stochastic evaluation)")
    double_q: bool = _f(True, "double DQN: the online network picks the next action, the target network values it")
    dueling: bool = _f(False, "dueling head Q = V + A - mean(A)")


@dataclass
class SACConfig(OffPolicyConfig):
    """Soft Actor-Critic (Haarnoja et al. 2018) with twin Q, automatic entropy tuning; tanh-Gaussian
    policy for Box groups, categorical policy with exact expectations for Discrete groups (Christodoulou 2019)."""

    name: Literal["sac"] = _f("sac", "algorithm name")
    autotune: bool = _f(True, "learn the entropy coefficient so the policy entropy tracks target_entropy")
    ent_coef: float = _f(1.0, "entropy coefficient alpha: the initial value when autotune, else fixed")
    target_entropy: float | None = _f(None, "entropy target in nats; null = -action_dim (Box) or target_entropy_scale*log(n) (Discrete)")
    target_entropy_scale: float = _f(0.89, "Discrete groups: target entropy as a fraction of the uniform policy's log(n)")


@dataclass
class TD3Config(OffPolicyConfig):
    """Twin Delayed DDPG (Fujimoto et al. 2018): deterministic actor, target policy smoothing, delayed
    actor and target updates; Box actions. Noise scales are fractions of the half-range of the action box."""

    name: Literal["td3"] = _f("td3", "algorithm name")
    lr: float = _f(1e-3, "Adam learning rate")
    target_update_interval: int = _f(2, "gradient steps between target updates")
    exploration_noise: float = _f(0.1, "std of the Gaussian noise added to actions while collecting")
    policy_noise: float = _f(0.2, "std of the target policy smoothing noise")
    noise_clip: float = _f(0.5, "target policy smoothing noise is clipped to [-noise_clip, noise_clip]")
    policy_delay: int = _f(2, "gradient steps between actor updates")


@dataclass
class EvalConfig:
    """Periodic deterministic evaluation on separate, separately seeded envs."""

    interval: int = _f(20_000, "env steps between evaluations; 0 = only at the end")
    episodes: int = _f(10, "episodes per evaluation")
    num_envs: int = _f(5, "eval env copies")
    deterministic: bool = _f(True, "mode of the action distribution instead of sampling")
    opponent: Literal["none", "random"] = _f("none", "random: the policy plays one seat, every other agent acts randomly (win rate vs random)")


@dataclass
class CheckpointConfig:
    """When checkpoints are written."""

    interval: int = _f(50_000, "env steps between latest.pt writes (also at the end and on interrupt)")
    keep_last: int = _f(1, "also keep this many numbered checkpoints (step_<env_steps>.pt); 0 = none")


@dataclass
class LogConfig:
    """TensorBoard and console output."""

    tensorboard: bool = _f(True, "write TensorBoard event files to the run directory")
    progress: bool = _f(True, "live progress display when the terminal is a TTY")
    interval: int = _f(1, "iterations between console/TensorBoard training logs")


@dataclass
class HealthConfig:
    """Numeric checks and the thresholds of the warning signs (a check = one PPO iteration, or
    ``log.interval`` off-policy training phases)."""

    enabled: bool = _f(True, "watch the training metrics and report warning signs")
    patience: int = _f(5, "consecutive checks a sign must persist before it is reported")
    entropy_floor_frac: float = _f(0.05, "entropy collapse: below this fraction of the first entropy "
                                         "(Gaussian policies: of the first action std)")
    entropy_abs_floor: float = _f(0.01, "entropy collapse: below this entropy in nats (categorical policies)")
    kl_high: float = _f(0.05, "approx KL above this: the update step is too large")
    clip_low: float = _f(0.005, "clip fraction below this: clipping has no effect")
    clip_high: float = _f(0.9, "clip fraction above this: nearly every sample is clipped")
    lr_quiet_frac: float = _f(0.5, "skip clip_fraction_low once train/lr has annealed below this fraction "
                                   "of its first value (small steps clip nothing)")
    ev_low: float = _f(0.0, "explained variance below this: the critic is worse than the mean return")
    ev_warmup: int = _f(10, "checks before explained variance is judged (a fresh critic starts near 0)")
    collapse_frac: float = _f(0.5, "returns collapse: smoothed return below "
                                   "best - collapse_frac * (best - first)")
    return_window: int = _f(10, "moving-average window of rollout/ep_return, in checks")
    return_min_rise: float = _f(3.0, "a rise (best - first) counts only above this many noise std "
                                     "of the returns")
    q_bound_factor: float = _f(2.0, "Q divergence: |train/q_mean| above this multiple of the largest possible "
                                     "return max|r| / (1 - gamma)")
    q_growth: float = _f(10.0, "Q divergence before any nonzero reward was seen: |train/q_mean| rising at each "
                               "of patience checks, to this multiple of where it started")
    alpha_floor_frac: float = _f(1e-3, "entropy coefficient collapse (SAC autotune): train/alpha below this "
                                       "fraction of its first value")
    check_inputs: bool = _f(False, "check every observation and reward for NaN/inf (one pass over each step)")

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for every value out of range; empty when the config is usable."""
        rules = [
            (self.patience >= 1, "patience", "must be >= 1"),
            (0 <= self.entropy_floor_frac < 1, "entropy_floor_frac", "must be in [0, 1)"),
            (self.kl_high > 0, "kl_high", "must be > 0"),
            (0 <= self.clip_low < self.clip_high <= 1, "clip_low", "need 0 <= clip_low < clip_high <= 1"),
            (0 <= self.lr_quiet_frac <= 1, "lr_quiet_frac", "must be in [0, 1]"),
            (self.ev_warmup >= 0, "ev_warmup", "must be >= 0"),
            (0 < self.collapse_frac <= 1, "collapse_frac", "must be in (0, 1]"),
            (self.return_window >= 1, "return_window", "must be >= 1"),
            (self.return_min_rise >= 0, "return_min_rise", "must be >= 0"),
            (self.q_bound_factor >= 1, "q_bound_factor", "must be >= 1"),
            (self.q_growth > 1, "q_growth", "must be > 1"),
            (0 < self.alpha_floor_frac < 1, "alpha_floor_frac", "must be in (0, 1)"),
        ]
        return [(key, f"{msg}, got {getattr(self, key)!r}") for ok, key, msg in rules if not ok]


@dataclass
class Config:
    """One experiment. ``total_env_steps`` counts vectorized env steps summed over env copies."""

    seed: int = _f(0, "seed of every RNG (python, numpy, torch, env copies)")
    total_env_steps: int = _f(400_000, "training budget in env steps summed over env copies (agent decisions with action_repeat)")
    run_dir: str = _f("", "output folder; empty = runs/<env>-<algo>-seed<seed>-<time>")
    resume: str = _f("", "run directory or checkpoint to continue from")
    device: Literal["cpu", "cuda", "auto"] = _f("cpu", "torch device")
    torch_threads: int = _f(1, "torch intra-op threads (1 is fastest for small networks); 0 = torch default")
    update_threads: int = _f(-1, "PPO: torch threads during the update, when env worker processes sit idle; "
                                 "-1 = auto (one per core the subprocess workers leave idle, at most 4; else torch_threads)")
    env: EnvConfig = _f(None, "environment")
    algo: Any = _f(None, "algorithm section; algo.name selects the schema")
    model: ModelConfig = _f(None, "networks")
    norm: NormConfig = _f(None, "normalization")
    eval: EvalConfig = _f(None, "evaluation")
    checkpoint: CheckpointConfig = _f(None, "checkpoints")
    log: LogConfig = _f(None, "logging")
    health: HealthConfig = _f(None, "training health: non-finite checks and warning signs")

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            if getattr(self, name) is None:
                setattr(self, name, cls())
        if self.algo is None:
            self.algo = PPOConfig()

    @property
    def batch_size(self) -> int:
        """Rollout rows per update: ``algo.num_steps * env.num_envs``."""
        return self.algo.num_steps * self.env.num_envs

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.algo.num_minibatches

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_env_steps // self.batch_size)


_SECTIONS: dict[str, type] = {
    "env": EnvConfig,
    "model": ModelConfig,
    "norm": NormConfig,
    "eval": EvalConfig,
    "checkpoint": CheckpointConfig,
    "log": LogConfig,
    "health": HealthConfig,
}


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
        raise ConfigError(f"{path}: unsupported YAML tag ({exc.problem}); configs are plain YAML, python tags are refused") from exc
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
    "clip_range_vf": "clip_vloss", "normalize_advantage": "advantage", "env_id": "id", "net_arch": "hidden",
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
            close = nearest_key(str(key), list(fields))
            hint = f"; did you mean {prefix}{close}?" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint} (valid keys here: {', '.join(fields)})")
        if key in _SECTIONS and cls is Config:
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} must be a section (a mapping), got {value!r}")
            kwargs[key] = _build(_SECTIONS[key], value, f"{prefix}{key}.")
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
    _require(all(isinstance(h, int) and h > 0 for h in cfg.model.hidden), "model.hidden", "must be a list of positive integers")
    _require(cfg.norm.obs_clip > 0, "norm.obs_clip", "must be > 0")
    for key, message in cfg.health.problems():
        _require(False, f"health.{key}", message)
    _require(cfg.norm.reward_clip >= 0, "norm.reward_clip", "must be >= 0 (0 = no clipping)")
    sharing = cfg.model.sharing
    _require(
        sharing in ("shared", "independent") or isinstance(sharing, dict),
        "model.sharing",
        "must be shared, independent, or a mapping {agent_or_glob: parameter_set}",
    )
    algo = cfg.algo
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
        _require(
            not (cfg.norm.advantage and cfg.minibatch_size < 2),
            "algo.num_minibatches",
            f"minibatches of {cfg.minibatch_size} row cannot be advantage-normalized; use fewer minibatches "
            "or set norm.advantage=false",
        )
    if isinstance(algo, OffPolicyConfig):
        _validate_off_policy(cfg, algo)


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
             f"{algo.learning_starts} random steps do not fit in a replay of {algo.buffer_size} rows; lower it or raise algo.buffer_size")
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
    if isinstance(algo, DQNConfig):
        _require(0 < algo.exploration_fraction <= 1, "algo.exploration_fraction", "must be in (0, 1]")
        for key in ("epsilon_start", "epsilon_final"):
            value = getattr(algo, key)
            _require(0 <= value <= 1, f"algo.{key}", f"a probability in [0, 1], got {value}")
    if isinstance(algo, SACConfig):
        _require(algo.ent_coef > 0, "algo.ent_coef", f"must be > 0, got {algo.ent_coef}")
        _require(0 < algo.target_entropy_scale <= 1, "algo.target_entropy_scale", "must be in (0, 1]")
    if isinstance(algo, TD3Config):
        for key in ("exploration_noise", "policy_noise", "noise_clip"):
            _require(getattr(algo, key) >= 0, f"algo.{key}", "must be >= 0")
        _require(algo.policy_delay >= 1, "algo.policy_delay", "must be >= 1")


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
        if cls is Config and f.name in _SECTIONS:
            rows += describe(_SECTIONS[f.name], key + ".")
        elif cls is Config and f.name == "algo":
            for name, entry in ALGORITHMS.items():
                rows += describe(entry.config_class(), f"algo[{name}].")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((key, repr(default), f.metadata.get("doc", "")))
    return rows
