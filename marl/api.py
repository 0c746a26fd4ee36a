"""The entry points over every algorithm: :func:`train` a config, :func:`load_policy` from a checkpoint.

Both look the algorithm up in :mod:`marl.registry`; neither knows which paradigm it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from marl import checkpoint as ckpt
from marl.config import DEFAULT_CONFIG, Config, from_dict, load_config, with_overrides
from marl.env.make import env_spec
from marl.registry import algorithm
from marl.types import ActingPolicy


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
    return algorithm(cfg.algo.name).trainer_class()(cfg).train()


def load_policy(path: str | Path, device: str = "cpu") -> tuple[ActingPolicy, Config, dict[str, Any]]:
    """Rebuild the acting policy of a checkpoint, or of a run directory (its ``best.pt``, else ``latest.pt``).

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
    cfg = from_dict(state["config"])
    policy = algorithm(cfg.algo.name).build_acting_policy(env_spec(cfg), cfg, device)
    policy.load_state_dict(state["policy"])
    return policy, cfg, state
