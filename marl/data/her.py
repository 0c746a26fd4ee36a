"""Hindsight experience replay (Andrychowicz et al. 2017) for goal-conditioned rows.

Data follow Gymnasium's goal convention, flattened: each agent's observation
vector is ``concat(observation, desired_goal)`` with the goal at columns
``goal_slice = (start, stop)`` (``GroupSpec.goal``), and every row also stores
``next_achieved_goal [A, G]`` (the goal achieved in ``next_obs``; ``replay_schema``
adds it, with ``achieved_goal``, when the group has a goal).

Design: :class:`HerReplayBuffer` is a :class:`ReplayBuffer` whose ``add`` also
keeps per-agent trajectory bookkeeping and whose ``sample`` relabels part of the
drawn batch. Relabelling is a post-processing of a sample, so it composes with
any sampler (uniform or prioritized: priorities stay attached to stored rows);
the bookkeeping has to see every write, which is why it lives in ``add`` rather
than in a wrapper around a finished buffer.

Trajectories: for each lane and agent, a trajectory runs from the first row the
agent is alive to the row where it is terminated or truncated. Each row stores,
per agent, the absolute step of its trajectory's start and (once known) end.
Rows of a trajectory that is still running are sampled too: its end is taken to
be the newest row written so far, i.e. goals are drawn among the achieved goals
seen so far. A start whose row was overwritten is moved to the oldest stored row.

Relabelling at sample time: of a batch of B rows, ``floor(B * her_ratio)`` rows
chosen at random (``her_ratio = n_sampled_goal / (n_sampled_goal + 1)``) get a
new goal for every agent alive at the row, drawn per agent from the
``next_achieved_goal`` of a donor row ``t'``:

* ``future``: ``t'`` uniform in ``[t, end]`` of the agent's trajectory (default),
* ``final``: ``t' = end``,
* ``episode``: ``t'`` uniform in ``[start, end]``,
* ``random``: any stored row of any lane.

An agent keeps its stored goal when it is not alive at the row or at the donor
row (the donor's achieved goal then means nothing).

The goal columns of ``obs`` and ``next_obs`` are overwritten, the reward is
recomputed by ``compute_reward(next_achieved_goal [K, G], new_goal [K, G], None)
-> [K]`` (the env's vectorized ``compute_reward``; per-step infos are not stored,
so ``info`` is ``None``), never copied. ``terminated`` stays as stored unless
``terminate_on_success``: for envs that end an episode exactly when the goal is
reached, a relabelled row is terminated iff its new reward reaches
``success_reward`` (0.0 matches the ``-1`` / ``0`` sparse rewards of
Gymnasium-Robotics). A global ``state``/``next_state`` is left as stored (if it
holds goals, relabel it in the learner). Relabelling is one-step only (``n_step = 1``): an n-step
return would need every reward of the window recomputed and the window cut at
relabelled successes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from marl.data.replay import ReplayBuffer, ReplaySample, Sampler, Schema, uniform_rows

HerStrategy = Literal["final", "future", "episode", "random"]
HER_STRATEGIES: tuple[str, ...] = ("final", "future", "episode", "random")
ComputeReward = Callable[[np.ndarray, np.ndarray, Any], np.ndarray]


class TrajectoryIndex:
    """Start and end steps of each agent's trajectory, per stored row.

    Steps are absolute lane steps (the row written at absolute step ``s`` of a
    lane sits at slot ``s % L``).

    Attributes:
        start: ``[L, E, A]`` int64 first step of the row's trajectory.
        end: ``[L, E, A]`` int64 last step, or -1 while the trajectory runs.
    """

    def __init__(self, lane_length: int, n_envs: int, n_agents: int) -> None:
        self.lane_length = lane_length
        self.start = np.zeros((lane_length, n_envs, n_agents), dtype=np.int64)
        self.end = np.zeros((lane_length, n_envs, n_agents), dtype=np.int64)
        self._open = np.full((n_envs, n_agents), -1, dtype=np.int64)  # start of the running trajectory

    def record(self, lanes: np.ndarray, steps: np.ndarray, alive: np.ndarray, done: np.ndarray) -> None:
        """Register rows written at absolute ``steps [N]`` of ``lanes [N]``.

        ``alive [N, A]`` and ``done [N, A]`` (terminated or truncated) are the
        rows' flags. A row where an agent is not alive is its own one-row span.
        """
        slots = steps % self.lane_length
        here = steps[:, None]
        open_start = self._open[lanes]
        open_start = np.where(alive & (open_start < 0), here, open_start)
        self.start[slots, lanes] = np.where(alive, open_start, here)
        self.end[slots, lanes] = np.where(alive, -1, here)
        closing = alive & done
        for i, agent in zip(*np.nonzero(closing)):
            last = int(steps[i])
            first = max(int(open_start[i, agent]), last - self.lane_length + 1)
            self.end[np.arange(first, last + 1) % self.lane_length, lanes[i], agent] = last
        open_start[closing] = -1
        self._open[lanes] = open_start

    def close(self, lanes: np.ndarray, steps: np.ndarray) -> None:
        """End the running trajectories of ``lanes [N]`` at absolute ``steps [N]`` (their last rows)."""
        for lane, last in zip(lanes.tolist(), steps.tolist(), strict=True):
            for agent in np.nonzero(self._open[lane] >= 0)[0]:
                first = max(int(self._open[lane, agent]), last - self.lane_length + 1)
                self.end[np.arange(first, last + 1) % self.lane_length, lane, agent] = last
            self._open[lane] = -1

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of ``start``, ``end`` (``[L, E, A]``) and ``open`` (``[E, A]``: start of each running
        trajectory, -1 where none runs)."""
        return {"start": self.start.copy(), "end": self.end.copy(), "open": self._open.copy()}

    def load_state_dict(self, state: Mapping[str, ArrayLike]) -> None:
        """Restore a :meth:`state_dict`; ``ValueError`` naming the array whose shape differs (nothing changed)."""
        arrays = {"start": self.start, "end": self.end, "open": self._open}
        saved = {k: np.asarray(state[k], dtype=np.int64) for k in arrays}
        for k, dst in arrays.items():
            if saved[k].shape != dst.shape:
                raise ValueError(f"saved HER trajectory index {k!r} is {saved[k].shape}, the buffer's is {dst.shape} "
                                 "(the capacity, n_envs or number of agents differ)")
        for k, dst in arrays.items():
            dst[...] = saved[k]


class HerReplayBuffer(ReplayBuffer):
    """Replay buffer that relabels goals at sample time (see the module docstring).

    Args:
        schema: as for :class:`ReplayBuffer`; ``obs``/``next_obs`` must be
            ``[A, D]`` and ``next_achieved_goal`` ``[A, stop - start]``.
        capacity, n_envs, gamma, sampler: as for :class:`ReplayBuffer`.
        goal_slice: ``(start, stop)`` columns of the desired goal in an agent's
            observation vector.
        compute_reward: vectorized ``(achieved [K, G], desired [K, G], info) -> [K]``.
        strategy: ``"future"`` (default), ``"final"``, ``"episode"`` or ``"random"``.
        n_sampled_goal: relabelled goals per real transition (default 4), i.e. a
            fraction ``n / (n + 1)`` of each batch is relabelled; 0 disables it.
        terminate_on_success: recompute ``terminated`` of relabelled rows as
            ``reward >= success_reward`` (for envs that end on success).
        success_reward: reward at or above which a step counts as a success.
    """

    def __init__(
        self,
        schema: Schema,
        capacity: int,
        n_envs: int,
        *,
        goal_slice: tuple[int, int],
        compute_reward: ComputeReward,
        strategy: HerStrategy = "future",
        n_sampled_goal: int = 4,
        terminate_on_success: bool = False,
        success_reward: float = 0.0,
        gamma: float = 0.99,
        sampler: Sampler | None = None,
    ) -> None:
        super().__init__(schema, capacity, n_envs, n_step=1, gamma=gamma, sampler=sampler)
        if strategy not in HER_STRATEGIES:
            raise ValueError(f"unknown HER strategy {strategy!r}; pick one of {HER_STRATEGIES}")
        if n_sampled_goal < 0:
            raise ValueError(f"n_sampled_goal must be >= 0, got {n_sampled_goal}")
        obs_shape = self.schema["obs"].shape
        start, stop = (int(goal_slice[0]), int(goal_slice[1]))
        if len(obs_shape) != 2 or not 0 <= start < stop <= obs_shape[1]:
            raise ValueError(f"goal_slice {goal_slice} must lie inside flat observations [A, D], obs is {obs_shape}")
        goal_shape = (obs_shape[0], stop - start)
        achieved = self.schema.get("next_achieved_goal")
        if achieved is None or achieved.shape != goal_shape:
            raise ValueError(
                f"HER needs a next_achieved_goal field of shape {goal_shape}; "
                f"got {None if achieved is None else achieved.shape} (see replay_schema with GroupSpec.goal)"
            )
        self.goal_slice = (start, stop)
        self.compute_reward = compute_reward
        self.strategy: HerStrategy = strategy
        self.n_sampled_goal = int(n_sampled_goal)
        self.her_ratio = self.n_sampled_goal / (self.n_sampled_goal + 1)
        self.terminate_on_success = bool(terminate_on_success)
        self.success_reward = float(success_reward)
        self.trajectories = TrajectoryIndex(self.storage.lane_length, self.n_envs, obs_shape[0])

    def add(self, batch: Mapping[str, ArrayLike], env_indices: ArrayLike | None = None) -> np.ndarray:
        """Store rows (see :meth:`ReplayBuffer.add`) and record their trajectories."""
        indices = super().add(batch, env_indices)
        lanes = indices % self.n_envs
        alive = np.asarray(batch["alive"], dtype=bool)
        done = np.asarray(batch["terminated"], dtype=bool) | np.asarray(batch["truncated"], dtype=bool)
        self.trajectories.record(lanes, self.storage.count[lanes] - 1, alive, done)
        return indices

    def cut(self, lanes: ArrayLike) -> None:
        """:meth:`ReplayBuffer.cut`, and the lanes' running trajectories end there (relabelling stays inside)."""
        self.trajectories.close(*self.storage.cut(lanes))

    def state_dict(self) -> dict[str, Any]:
        """:meth:`ReplayBuffer.state_dict` plus ``her``: the trajectory index (:meth:`TrajectoryIndex.state_dict`)."""
        return {**super().state_dict(), "her": self.trajectories.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a buffer built alike; ``ValueError`` naming what differs."""
        if "her" not in state:
            raise ValueError("saved replay has no HER trajectory index (it was not a hindsight buffer)")
        before = self.trajectories.state_dict()
        self.trajectories.load_state_dict(state["her"])
        try:
            super().load_state_dict(state)
        except ValueError:
            self.trajectories.load_state_dict(before)  # a refused state changes nothing
            raise

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float | None = None) -> ReplaySample:
        """Draw rows as :meth:`ReplayBuffer.sample`, then relabel a fraction ``her_ratio``."""
        batch = super().sample(batch_size, rng, beta)
        n_her = int(batch_size * self.her_ratio)
        if n_her == 0:
            return batch
        chosen = rng.permutation(batch_size)[:n_her]
        donors = self._donor_rows(batch.indices[chosen], rng)  # [n_her, A] flat row indices
        storage = self.storage
        relabel = np.zeros(batch.alive.shape, dtype=bool)  # [B, A]
        relabel[chosen] = batch.alive[chosen] & storage.gather_per_agent("alive", donors)
        new_goal = storage.gather_per_agent("next_achieved_goal", donors)  # [n_her, A, G]
        goal = np.zeros((batch_size, *new_goal.shape[1:]), dtype=new_goal.dtype)
        goal[chosen] = new_goal
        return self._relabel(batch, relabel, goal)

    def _donor_rows(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Flat indices ``[K, A]`` of the rows whose achieved goals become the new goals."""
        storage = self.storage
        n_agents = self.trajectories.start.shape[2]
        if self.strategy == "random":
            return uniform_rows(storage.size, self.n_envs, (indices.shape[0], n_agents), rng)
        slots, lanes = storage.unravel(indices)
        count, size = storage.count[lanes], storage.size[lanes]
        now = (count - 1 - storage.steps_ahead(slots, lanes))[:, None]  # absolute step of each row
        first = np.maximum(self.trajectories.start[slots, lanes], (count - size)[:, None])
        last = self.trajectories.end[slots, lanes]
        last = np.where(last < 0, (count - 1)[:, None], last)
        if self.strategy == "final":
            step = last
        else:
            low = now if self.strategy == "future" else first
            step = low + np.floor(rng.random(low.shape) * (last - low + 1)).astype(np.int64)
        return (step % storage.lane_length) * self.n_envs + lanes[:, None]

    def _relabel(self, batch: ReplaySample, relabel: np.ndarray, goal: np.ndarray) -> ReplaySample:
        """Write ``goal [B, A, G]`` where ``relabel [B, A]`` and recompute rewards."""
        start, stop = self.goal_slice
        obs, next_obs = batch.obs, batch.next_obs  # fresh copies from the storage gather
        obs[relabel, start:stop] = goal[relabel]
        next_obs[relabel, start:stop] = goal[relabel]
        reward = batch.reward
        achieved = batch.extras["next_achieved_goal"][relabel]
        new_reward = np.asarray(self.compute_reward(achieved, goal[relabel], None), dtype=reward.dtype)
        if new_reward.shape != (achieved.shape[0],):
            raise ValueError(
                f"compute_reward must return one reward per goal pair, shape {(achieved.shape[0],)}; "
                f"got {new_reward.shape}"
            )
        reward[relabel] = new_reward
        terminated = batch.terminated
        if self.terminate_on_success:
            terminated[relabel] = new_reward >= self.success_reward
        return batch._replace(
            obs=obs,
            next_obs=next_obs,
            reward=reward,
            terminated=terminated,
            reward_n=reward,
            next_obs_n=next_obs,
            terminated_n=terminated,
        )
