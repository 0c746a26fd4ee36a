"""The entry points over every algorithm: :func:`train` a config, :func:`load_policy` from a checkpoint.

Both look the algorithm up in :mod:`marl.registry`; neither knows which paradigm it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marl import checkpoint as ckpt
from marl.config import Config, from_dict
from marl.env.make import env_spec
from marl.registry import algorithm
from marl.types import ActingPolicy


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
