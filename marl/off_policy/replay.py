"""Replay plumbing of the off-policy loop: buffers per group, rows in, batches out, persistence.

* :func:`build_replays`: one buffer per group (uniform, prioritized, hindsight), capacity
  ``algo.buffer_size`` rounded down to a multiple of the env copies.
* :func:`replay_rows`: one vector step as rows ``[E, A, ...]``, the real final observation as
  ``next_obs`` where an episode ended.
* :func:`to_batch`: a sample as tensors, observations normalized with frozen statistics.
* :func:`goal_functions`: the goal env's ``compute_reward`` (and whether it ends on success) for HER.
* :func:`replay_state` / :func:`load_replay_state`: checkpointing a buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from marl import checkpoint as ckpt
from marl.algos.targets import OffPolicyBatch
from marl.config import Config, OffPolicyConfig
from marl.data import (
    HerReplayBuffer,
    PrioritizedReplayBuffer,
    PrioritizedSampler,
    ReplayBuffer,
    ReplaySample,
    replay_schema,
)
from marl.data.storage import Schema
from marl.env.make import make_raw_env
from marl.normalization import ObsNormalizer
from marl.types import EnvSpec, GroupObs, GroupTransition


class GoalFunctions(NamedTuple):
    """What HER needs from a goal env (Gymnasium's goal-env API).

    Attributes:
        compute_reward: vectorized ``(achieved [K, G], desired [K, G], info) -> [K]``.
        terminate_on_success: the env ends an episode when the goal is reached (its
            ``compute_terminated(g, g, None)`` is true); relabelled successes are then terminal.
        success_reward: ``compute_reward(g, g, None)``, the reward of a reached goal.
        env: the env the functions are bound to (close it when done).
    """

    compute_reward: Callable[[np.ndarray, np.ndarray, Any], np.ndarray]
    terminate_on_success: bool
    success_reward: float
    env: Any


def goal_functions(cfg: Config, spec: EnvSpec) -> GoalFunctions:
    """The reward (and termination) functions of the config's goal env, for HER."""
    missing = [g.name for g in spec.groups if g.goal is None]
    if missing:
        raise ValueError(f"algo.her: groups {missing} have no goal (the env's observations are not "
                         "Dict(observation, achieved_goal, desired_goal)). Set algo.her=false")
    env = make_raw_env(cfg.env.id, cfg.env.kwargs)
    base = getattr(env, "unwrapped", env)
    reward_fn = getattr(base, "compute_reward", None)
    if not callable(reward_fn):
        env.close()
        raise ValueError(f"algo.her needs the env's compute_reward(achieved_goal, desired_goal, info); "
                         f"{cfg.env.id!r} has none. Set algo.her=false")
    start, stop = spec.groups[0].goal
    goal = np.zeros((1, stop - start), np.float32)
    terminated_fn = getattr(base, "compute_terminated", None)
    terminates = bool(np.all(terminated_fn(goal, goal, None))) if callable(terminated_fn) else False
    return GoalFunctions(reward_fn, terminates, float(np.asarray(reward_fn(goal, goal, None)).reshape(-1)[0]), env)


def build_replays(spec: EnvSpec, cfg: Config, goals: GoalFunctions | None, world_size: int = 1
                  ) -> dict[str, ReplayBuffer]:
    """One replay buffer per group (PER and/or HER as configured); capacity rounded down to a multiple of E.

    Under torchrun (``world_size`` ranks) each rank's buffers hold its own env copies' rows, and
    ``algo.buffer_size`` and ``env.num_envs`` count those of the whole run, as everywhere: a rank gets
    ``buffer_size / world_size`` rows, so the replay spans as many env steps of the run as in one process.
    """
    algo: OffPolicyConfig = cfg.algo
    n_envs = cfg.env.num_envs // world_size
    size = algo.buffer_size // world_size
    capacity = size - size % n_envs
    out: dict[str, ReplayBuffer] = {}
    for g in spec.groups:
        schema = replay_schema(g)
        if algo.her:
            out[g.name] = HerReplayBuffer(
                schema, capacity, n_envs, goal_slice=g.goal, compute_reward=goals.compute_reward,
                strategy=algo.her_strategy, n_sampled_goal=algo.n_sampled_goal,
                terminate_on_success=goals.terminate_on_success, success_reward=goals.success_reward,
                gamma=algo.gamma, sampler=PrioritizedSampler(capacity, per_alpha=algo.per_alpha, per_eps=algo.per_eps,
                                                             per_beta=algo.per_beta) if algo.per else None)
        else:
            out[g.name] = replay_buffer(schema, capacity, n_envs, algo)
    return out


def replay_buffer(schema: Schema, capacity: int, n_envs: int, algo: OffPolicyConfig,
                  n_step: int | None = None) -> ReplayBuffer:
    """A :class:`PrioritizedReplayBuffer` with ``algo.per``, else a uniform :class:`ReplayBuffer`; ``n_step``
    defaults to ``algo.n_step``."""
    n_step = algo.n_step if n_step is None else n_step
    if algo.per:
        return PrioritizedReplayBuffer(schema, capacity, n_envs, n_step=n_step, gamma=algo.gamma,
                                       per_alpha=algo.per_alpha, per_eps=algo.per_eps, per_beta=algo.per_beta)
    return ReplayBuffer(schema, capacity, n_envs, n_step=n_step, gamma=algo.gamma)


def replay_rows(before: GroupObs, action: np.ndarray, tr: GroupTransition, after: GroupObs,
                achieved: np.ndarray | None, next_achieved: np.ndarray | None,
                episode_end: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One group's replay rows ``[E, A, ...]`` of one vector step.

    ``next_obs`` is the real observation after the step: ``tr.final_obs`` where the
    agent's episode ended (never the auto-reset observation). Where an episode ended,
    ``next_alive`` is the agent's ``alive`` and ``next_action_mask`` is ``tr.final_action_mask``
    (the mask given with the final observation; every action where the env gave none), which a
    truncated agent's bootstrap chooses among.

    ``episode_end [E]`` (bool, optional): the env copies whose episode ended at this step. There an agent
    that did not end at the step was gone already: its next fields are those of a gone agent (zeros, not
    alive, every action allowed), never the next episode's first observation, ``alive`` and mask. The team
    learners read other agents' next fields in a row (``next_alive`` says who is in the bootstrap), so
    they pass it; independent learners train on alive rows only.
    """
    ended = tr.terminated | tr.truncated
    if episode_end is not None:
        ended = ended | episode_end[:, None]  # the gone agents' final_obs are zeros and alive is False
    ended_obs = ended.reshape(*ended.shape, *([1] * (after.obs.ndim - ended.ndim)))
    rows = {
        "obs": before.obs,
        "action": action,
        "reward": np.asarray(tr.reward, np.float32),
        "next_obs": np.where(ended_obs, tr.final_obs, after.obs),
        "terminated": tr.terminated,
        "truncated": tr.truncated,
        "alive": before.alive,
        "next_alive": np.where(ended, before.alive, after.alive),
    }
    if before.action_mask is not None:
        rows["action_mask"] = before.action_mask.astype(bool)
        final = True if tr.final_action_mask is None else tr.final_action_mask.astype(bool)
        rows["next_action_mask"] = np.where(ended[..., None], final, after.action_mask.astype(bool))
    if achieved is not None:
        rows["achieved_goal"], rows["next_achieved_goal"] = achieved, next_achieved
    return rows


def to_batch(sample: ReplaySample, norm: ObsNormalizer | None, device: torch.device) -> OffPolicyBatch:
    """A sample as tensors on ``device``, observations normalized with frozen statistics."""

    def obs(x: np.ndarray) -> Tensor:
        return torch.as_tensor(x if norm is None else norm.normalize(x), device=device)

    def t(x: np.ndarray | None) -> Tensor | None:
        return None if x is None else torch.as_tensor(x, device=device)

    return OffPolicyBatch(obs(sample.obs), t(sample.action), t(sample.reward_n), t(sample.discount_n),
                          obs(sample.next_obs_n), t(sample.terminated_n), t(sample.alive), t(sample.weights),
                          t(sample.action_mask), t(sample.next_action_mask_n))


def replay_bytes_per_row(buf: ReplayBuffer) -> int:
    """Bytes one stored row takes in a checkpoint: its fields, plus 8 per PER priority, plus 16 per agent for HER."""
    n = sum(int(np.prod(spec.shape)) * spec.dtype.itemsize for spec in buf.schema.values())
    if buf.sampler.prioritized:
        n += 8
    if isinstance(buf, HerReplayBuffer):
        n += 16 * buf.trajectories.start.shape[2]
    return n


def replay_state(buf: ReplayBuffer) -> dict[str, Any]:
    """A replay buffer's :meth:`~marl.data.ReplayBuffer.state_dict` as tensors and numbers."""
    return ckpt.to_checkpoint(buf.state_dict())


def load_replay_state(buf: ReplayBuffer, state: dict[str, Any]) -> None:
    """Restore :func:`replay_state` into a buffer built from the same config.

    Raises:
        CheckpointError: the saved replay does not fit the buffer (the message names the
            field); the buffer is left as it was.
    """
    try:
        buf.load_state_dict(ckpt.from_checkpoint(state))
    except ValueError as exc:
        raise ckpt.CheckpointError(f"{exc}; algo.buffer_size, env.num_envs, algo.per or algo.her changed since the "
                                   "checkpoint: resume with the run's config.yaml") from exc
