"""Data structures between the collector and the learners.

On-policy rollouts live in ``marl.data.rollout``; off-policy replay in
:mod:`marl.data.storage` (row schema, per-env-copy lanes, packed rows),
:mod:`marl.data.replay` (uniform sampling, n-step targets),
:mod:`marl.data.prioritized` (PER), :mod:`marl.data.her` (hindsight relabelling)
and :mod:`marl.data.sum_tree`.
"""

from marl.data.her import HER_STRATEGIES, HerReplayBuffer, HerStrategy, TrajectoryIndex
from marl.data.prioritized import (
    PrioritizedReplayBuffer,
    PrioritizedSampler,
    importance_weights,
    per_beta_at,
    td_priority,
)
from marl.data.replay import (
    ReplayBuffer,
    ReplaySample,
    Sampler,
    UniformSampler,
    nstep_lengths,
    nstep_return,
    reduce_td_errors,
)
from marl.data.storage import (
    OPTIONAL_FIELDS,
    PACK_LIMIT_BYTES,
    REQUIRED_FIELDS,
    FieldSpec,
    LaneStorage,
    replay_schema,
)
from marl.data.sum_tree import SumTree

__all__ = [
    "HER_STRATEGIES",
    "OPTIONAL_FIELDS",
    "PACK_LIMIT_BYTES",
    "REQUIRED_FIELDS",
    "FieldSpec",
    "HerReplayBuffer",
    "HerStrategy",
    "LaneStorage",
    "PrioritizedReplayBuffer",
    "PrioritizedSampler",
    "ReplayBuffer",
    "ReplaySample",
    "Sampler",
    "SumTree",
    "TrajectoryIndex",
    "UniformSampler",
    "importance_weights",
    "nstep_lengths",
    "nstep_return",
    "per_beta_at",
    "reduce_td_errors",
    "replay_schema",
    "td_priority",
]
