"""The five batched MPE scenarios: layouts, observations, rewards and terminations, as mpe2 1.1 defines them.

Each class mirrors one mpe2 module (``mpe2/<name>/<name>.py``) with the same keyword arguments;
``dynamic_rescaling`` only scales mpe2's rendering and is accepted for compatibility.
Shapes as in :mod:`envs.batched_mpe._core`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core import BatchedMPE, WorldLayout, distance, flat, nearest, others_index, take_padded

#: landmark colours of simple_speaker_listener (red, green, blue); the speaker observes its goal's.
SPEAKER_LISTENER_COLOURS = np.array([[0.65, 0.15, 0.15], [0.15, 0.65, 0.15], [0.15, 0.15, 0.65]])
#: landmark colours of simple_reference; each agent observes its own goal landmark's.
REFERENCE_COLOURS = np.array([[0.75, 0.25, 0.25], [0.25, 0.75, 0.25], [0.25, 0.25, 0.75]])


def _layout(
    agents: list[str],
    *,
    dim_c: int,
    size: list[float],
    n_landmarks: int,
    landmark_size: float = 0.05,
    collide: bool = False,
    landmark_collide: bool = False,
    silent: bool = True,
    movable: list[bool] | None = None,
    accel: list[float] | None = None,
    max_speed: list[float] | None = None,
    landmark_spawn: float = 1.0,
    n_goals: int = 0,
) -> WorldLayout:
    """A :class:`WorldLayout` from per-scenario lists; agents spawn in ``[-1, 1]^2``."""
    A, L = len(agents), n_landmarks
    silent_flags = np.array([silent] * A) if isinstance(silent, bool) else np.array(silent)
    return WorldLayout(
        agents=tuple(agents),
        movable=np.array(movable if movable is not None else [True] * A),
        silent=silent_flags,
        collide=np.full(A, collide),
        size=np.array(size, dtype=np.float64),
        accel=np.array(accel if accel is not None else [5.0] * A, dtype=np.float64),
        max_speed=np.array(max_speed if max_speed is not None else [np.inf] * A, dtype=np.float64),
        landmark_collide=np.full(L, landmark_collide),
        landmark_size=np.full(L, landmark_size),
        dim_c=dim_c,
        spawn_low=np.array([-1.0] * A + [-landmark_spawn] * L),
        spawn_high=np.array([1.0] * A + [landmark_spawn] * L),
        n_goals=n_goals,
    )


def _check_neighbors(**counts: int | None) -> None:
    for key, n in counts.items():
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
            raise ValueError(f"{key}={n!r} must be a positive int or None")


def _check_local_ratio(local_ratio: float) -> None:
    if not 0.0 <= local_ratio <= 1.0:
        raise ValueError(f"local_ratio={local_ratio} is a proportion and must be in [0, 1]")


def _observed(rel: np.ndarray, n: int | None, *aligned: np.ndarray) -> tuple[np.ndarray, ...]:
    """``rel [A, K, 2, E]`` and arrays ``[A, K, d, E]`` aligned with it cut to the ``n`` nearest, zero-padded.

    ``n=None`` (full observability) keeps them all, in entity order.
    """
    if n is None:
        return (rel, *aligned)
    order = nearest(rel, n)
    return tuple(take_padded(x, order, n) for x in (rel, *aligned))


class SimpleSpread(BatchedMPE):
    """simple_spread: ``N`` agents (``agent_*``) cover ``N`` landmarks without colliding.

    Observation ``[vel, pos, landmark_rel (N), other_rel (N-1), other_comm (N-1, 2)]``
    (``6N``; zeros for comm: agents are silent). Reward ``(1 - local_ratio) * global +
    local_ratio * local``: global ``-sum_landmarks min_agents dist``, local ``-1`` per other
    agent within 0.3 (none in curriculum stage 0; mpe2 1.1.1 never leaves stage 0, this env can
    move to stage 1 as mpe2 documents). With ``terminate_on_success`` a copy
    terminates once every landmark has an agent within 0.1.
    """

    mpe2_name = "simple_spread_v3"
    CAPTURE_RADIUS = 0.1
    CURRICULUM_STAGES = 2  # stage 0: no collision penalty; stage 1: with it

    def __init__(
        self,
        num_envs: int,
        continuous_actions: bool = False,
        max_cycles: int = 25,
        N: int = 3,
        local_ratio: float = 0.5,
        dynamic_rescaling: bool = True,
        curriculum: bool = False,
        terminate_on_success: bool = False,
        num_agent_neighbors: int | None = None,
        num_landmark_neighbors: int | None = None,
    ) -> None:
        if N < 1:
            raise ValueError(f"N={N} must be >= 1")
        _check_local_ratio(local_ratio)
        _check_neighbors(
            num_agent_neighbors=num_agent_neighbors, num_landmark_neighbors=num_landmark_neighbors
        )
        self.local_ratio = float(local_ratio)
        self.curriculum = bool(curriculum)
        self.curriculum_stage = 0
        self.terminate_on_success = bool(terminate_on_success)
        self.num_agent_neighbors = num_agent_neighbors
        self.num_landmark_neighbors = num_landmark_neighbors
        self._others = others_index(N)
        agents = [f"agent_{i}" for i in range(N)]
        layout = _layout(agents, dim_c=2, size=[0.15] * N, n_landmarks=N, collide=True)
        super().__init__(layout, num_envs, continuous_actions, max_cycles)
        self._collision_dist = (layout.size[:, None] + layout.size)[..., None]  # [A, A, 1]

    def set_curriculum_stage(self, stage: int) -> None:
        """Curriculum stage (clamped to 0..1); takes effect at once (only with ``curriculum=True``)."""
        self.curriculum_stage = max(0, min(int(stage), self.CURRICULUM_STAGES - 1))

    def advance_curriculum(self) -> None:
        """Next curriculum stage; no-op at the last one."""
        self.set_curriculum_stage(self.curriculum_stage + 1)

    def _mpe2_settings(self) -> dict[str, Any]:
        return {
            "local_ratio": self.local_ratio,
            "curriculum": self.curriculum,
            "curriculum_stage": self.curriculum_stage,
            "terminate_on_success": self.terminate_on_success,
            "num_agent_neighbors": self.num_agent_neighbors,
            "num_landmark_neighbors": self.num_landmark_neighbors,
        }

    def _observe_groups(self) -> dict[str, np.ndarray]:
        A = self._n_agents
        pos, landmarks = self._pos[:A], self._pos[A:]
        (landmark_rel,) = _observed(landmarks[None] - pos[:, None], self.num_landmark_neighbors)
        other_rel, other_comm = _observed(
            pos[self._others] - pos[:, None], self.num_agent_neighbors, self._comm[self._others]
        )
        return {"agent": flat(self._vel, pos, landmark_rel, other_rel, other_comm)}

    def _landmark_cover(self) -> np.ndarray:
        """``[L, E]``: distance from each landmark to its closest agent."""
        A = self._n_agents
        return distance(self._pos[:A, None] - self._pos[None, A:]).min(axis=0)

    def _reward(self) -> np.ndarray:
        A = self._n_agents
        global_reward = -self._landmark_cover().sum(axis=0)  # [E]; summed landmark by landmark as mpe2
        local = np.zeros((A, self.num_envs))
        if not self.curriculum or self.curriculum_stage >= 1:
            pos = self._pos[:A]
            close = distance(pos[:, None] - pos[None]) < self._collision_dist  # [A, A, E]
            close[np.arange(A), np.arange(A)] = False
            local = -close.sum(axis=1).astype(np.float64)
        return global_reward * (1 - self.local_ratio) + local * self.local_ratio

    def _terminal(self) -> np.ndarray:
        if not self.terminate_on_success:
            return np.zeros(self.num_envs, dtype=bool)
        return (self._landmark_cover() < self.CAPTURE_RADIUS).all(axis=0)


class SimpleSpeakerListener(BatchedMPE):
    """simple_speaker_listener: an immovable ``speaker_0`` sees the goal's colour and says one of
    3 words; ``listener_0`` hears it and moves to the goal among 3 landmarks.

    Observations: speaker ``[goal colour (3)]``; listener ``[vel, landmark_rel (3), speaker comm (3)]``.
    Both get ``-|listener - goal|^2``.
    """

    mpe2_name = "simple_speaker_listener_v4"

    def __init__(
        self,
        num_envs: int,
        continuous_actions: bool = False,
        max_cycles: int = 25,
        dynamic_rescaling: bool = True,
    ) -> None:
        layout = _layout(
            ["speaker_0", "listener_0"],
            dim_c=3,
            size=[0.075, 0.075],
            n_landmarks=3,
            landmark_size=0.04,
            silent=[False, True],
            movable=[False, True],
            n_goals=1,
        )
        super().__init__(layout, num_envs, continuous_actions, max_cycles)

    def _goals_from_world(self, world: Any) -> list[int]:
        return [world.landmarks.index(world.agents[0].goal_b)]

    def _observe_groups(self) -> dict[str, np.ndarray]:
        listener = self._pos[1]  # [2, E]
        landmark_rel = self._pos[2:] - listener  # [3, 2, E]
        colour = SPEAKER_LISTENER_COLOURS.T[:, self._goals[0]]  # [3, E]
        return {
            "speaker": flat(colour[None]),
            "listener": flat(self._vel[1:2], landmark_rel[None], self._comm[None, 0]),
        }

    def _reward(self) -> np.ndarray:
        goal = self._landmark_at(self._goals[0])  # [2, E]
        reward = -(np.square(self._pos[1, 0] - goal[0]) + np.square(self._pos[1, 1] - goal[1]))
        return np.repeat(reward[None], 2, axis=0)


class SimpleReference(BatchedMPE):
    """simple_reference: ``agent_0`` and ``agent_1`` each know the other's goal landmark and say
    one of 10 words; each must reach its own goal.

    Observation ``[vel, landmark_rel (3), own goal's colour (3), other's comm (10)]``. Local reward of
    agent ``i``: ``-|other - goal_i|``; global: the mean of the two; mixed with ``local_ratio``.
    """

    mpe2_name = "simple_reference_v3"

    def __init__(
        self,
        num_envs: int,
        continuous_actions: bool = False,
        max_cycles: int = 25,
        local_ratio: float = 0.5,
        dynamic_rescaling: bool = True,
    ) -> None:
        _check_local_ratio(local_ratio)
        self.local_ratio = float(local_ratio)
        layout = _layout(
            ["agent_0", "agent_1"], dim_c=10, size=[0.05, 0.05], n_landmarks=3, silent=False, n_goals=2
        )
        super().__init__(layout, num_envs, continuous_actions, max_cycles)

    def _mpe2_settings(self) -> dict[str, Any]:
        return {"local_ratio": self.local_ratio}

    def _goals_from_world(self, world: Any) -> list[int]:
        return [world.landmarks.index(a.goal_b) for a in world.agents]

    def _observe_groups(self) -> dict[str, np.ndarray]:
        pos = self._pos[:2]
        landmark_rel = self._pos[None, 2:] - pos[:, None]  # [2, 3, 2, E]
        colour = REFERENCE_COLOURS.T[:, self._goals].transpose(1, 0, 2)  # [2, 3, E]
        other_comm = self._comm[::-1]
        return {"agent": flat(self._vel, landmark_rel, colour, other_comm)}

    def _reward(self) -> np.ndarray:
        goals = np.stack([self._landmark_at(g) for g in self._goals])  # [2, 2, E]
        local = -distance(self._pos[1::-1] - goals)  # agent i's goal is for the other agent to reach
        global_reward = (local[0] + local[1]) / 2
        return global_reward * (1 - self.local_ratio) + local * self.local_ratio


class SimpleAdversary(BatchedMPE):
    """simple_adversary: ``adversary_0`` and ``N`` good agents (``agent_*``); ``N`` landmarks, one the
    goal, known to the good agents only.

    Observations: good ``[goal_rel, landmark_rel (N), other_rel (N)]``; adversary
    ``[landmark_rel (N), other_rel (N)]`` (the nearest ones only under ``num_*_neighbors``).
    Rewards: adversary ``-|adv - goal|``; good ``-min_good |good - goal| + |adv - goal|``.
    """

    mpe2_name = "simple_adversary_v3"

    def __init__(
        self,
        num_envs: int,
        continuous_actions: bool = False,
        max_cycles: int = 25,
        N: int = 2,
        dynamic_rescaling: bool = True,
        num_agent_neighbors: int | None = None,
        num_landmark_neighbors: int | None = None,
    ) -> None:
        if N < 1:
            raise ValueError(f"N={N} must be >= 1")
        _check_neighbors(
            num_agent_neighbors=num_agent_neighbors, num_landmark_neighbors=num_landmark_neighbors
        )
        self.num_agent_neighbors = num_agent_neighbors
        self.num_landmark_neighbors = num_landmark_neighbors
        self._others = others_index(N + 1)
        agents = ["adversary_0"] + [f"agent_{i}" for i in range(N)]
        layout = _layout(agents, dim_c=2, size=[0.15] * (N + 1), n_landmarks=N, landmark_size=0.08, n_goals=1)
        super().__init__(layout, num_envs, continuous_actions, max_cycles)

    def _mpe2_settings(self) -> dict[str, Any]:
        return {
            "num_agent_neighbors": self.num_agent_neighbors,
            "num_landmark_neighbors": self.num_landmark_neighbors,
        }

    def _goals_from_world(self, world: Any) -> list[int]:
        return [world.landmarks.index(world.agents[0].goal_a)]

    def _observe_groups(self) -> dict[str, np.ndarray]:
        A = self._n_agents
        pos = self._pos[:A]
        (landmark_rel,) = _observed(self._pos[None, A:] - pos[:, None], self.num_landmark_neighbors)
        (other_rel,) = _observed(pos[self._others] - pos[:, None], self.num_agent_neighbors)
        goal_rel = self._landmark_at(self._goals[0])[None] - pos[1:]
        return {
            "adversary": flat(landmark_rel[:1], other_rel[:1]),
            "agent": flat(goal_rel, landmark_rel[1:], other_rel[1:]),
        }

    def _reward(self) -> np.ndarray:
        A = self._n_agents
        to_goal = distance(self._pos[:A] - self._landmark_at(self._goals[0])[None])  # [A, E]
        good = -to_goal[1:].min(axis=0) + to_goal[0]
        return np.concatenate([-to_goal[:1], np.repeat(good[None], A - 1, axis=0)])


class SimpleTag(BatchedMPE):
    """simple_tag: ``num_adversaries`` slower predators (``adversary_*``) chase ``num_good`` faster
    prey (``agent_*``) among ``num_obstacles`` colliding obstacles.

    Observation ``[vel, pos, obstacle_rel, other_rel, good_other_vel]`` (nearest ones only, with zero
    velocity slots for adversaries, under ``num_*_neighbors``). Rewards: each adversary gets +10 per
    colliding (prey, adversary) pair; a prey gets -10 per adversary touching it and a bound
    penalty per coordinate ``x = |p|``: 0 below 0.9, ``10 (x - 0.9)`` below 1, then
    ``min(exp(2x - 2), 10)``. With ``terminate_on_success`` a copy terminates once every prey
    touches an adversary. The curriculum scales prey speed and accel by 0.5, 0.75, 1 (stages 0-2)
    at each copy's next reset, as mpe2 documents (mpe2 1.1.1 itself never leaves stage 0).
    """

    mpe2_name = "simple_tag_v3"
    PREY_SPEED_FACTORS = (0.5, 0.75, 1.0)
    PREY_MAX_SPEED = 1.3
    PREY_ACCEL = 4.0

    def __init__(
        self,
        num_envs: int,
        continuous_actions: bool = False,
        max_cycles: int = 25,
        num_good: int = 1,
        num_adversaries: int = 3,
        num_obstacles: int = 2,
        dynamic_rescaling: bool = True,
        curriculum: bool = False,
        terminate_on_success: bool = False,
        num_agent_neighbors: int | None = None,
        num_landmark_neighbors: int | None = None,
    ) -> None:
        if num_good < 1 or num_adversaries < 1 or num_obstacles < 0:
            raise ValueError(
                f"need num_good >= 1, num_adversaries >= 1, num_obstacles >= 0; "
                f"got {num_good}, {num_adversaries}, {num_obstacles}"
            )
        _check_neighbors(
            num_agent_neighbors=num_agent_neighbors, num_landmark_neighbors=num_landmark_neighbors
        )
        self.curriculum = bool(curriculum)
        self.curriculum_stage = 0
        self.terminate_on_success = bool(terminate_on_success)
        self.num_agent_neighbors = num_agent_neighbors
        self.num_landmark_neighbors = num_landmark_neighbors
        n_adv, A = num_adversaries, num_adversaries + num_good
        self._n_adversaries = n_adv
        self._others = others_index(A)
        # velocities seen in full observability: every prey for an adversary, the other prey for a prey
        self._prey_others = np.array(
            [[j for j in range(n_adv, A) if j != i] for i in range(n_adv, A)], dtype=np.int64
        ).reshape(num_good, num_good - 1)
        agents = [f"adversary_{i}" for i in range(n_adv)] + [f"agent_{i}" for i in range(num_good)]
        layout = _layout(
            agents,
            dim_c=2,
            size=[0.075] * n_adv + [0.05] * num_good,
            n_landmarks=num_obstacles,
            landmark_size=0.2,
            collide=True,
            landmark_collide=True,
            accel=[3.0] * n_adv + [self.PREY_ACCEL] * num_good,
            max_speed=[1.0] * n_adv + [self.PREY_MAX_SPEED] * num_good,
            landmark_spawn=0.9,
        )
        super().__init__(layout, num_envs, continuous_actions, max_cycles)
        self._catch_dist = (layout.size[n_adv:, None] + layout.size[:n_adv])[..., None]  # [n_good, n_adv, 1]

    def set_curriculum_stage(self, stage: int) -> None:
        """Curriculum stage (clamped to 0..2); prey speeds change at each copy's next reset."""
        self.curriculum_stage = max(0, min(int(stage), len(self.PREY_SPEED_FACTORS) - 1))

    def advance_curriculum(self) -> None:
        """Next curriculum stage; no-op at the last one."""
        self.set_curriculum_stage(self.curriculum_stage + 1)

    def _mpe2_settings(self) -> dict[str, Any]:
        return {
            "curriculum": self.curriculum,
            "curriculum_stage": self.curriculum_stage,
            "terminate_on_success": self.terminate_on_success,
            "num_agent_neighbors": self.num_agent_neighbors,
            "num_landmark_neighbors": self.num_landmark_neighbors,
        }

    def _after_reset(self, idx: np.ndarray) -> None:
        if self.curriculum:
            factor = self.PREY_SPEED_FACTORS[self.curriculum_stage]
            prey = slice(self._n_adversaries, None)
            self._max_speed[prey][:, idx] = self.PREY_MAX_SPEED * factor
            self._accel[prey][:, idx] = self.PREY_ACCEL * factor

    def _load_extra(self, i: int, world: Any) -> None:
        self._max_speed[:, i] = [np.inf if a.max_speed is None else a.max_speed for a in world.agents]
        self._accel[:, i] = [5.0 if a.accel is None else a.accel for a in world.agents]

    def _observe_groups(self) -> dict[str, np.ndarray]:
        A, n_adv = self._n_agents, self._n_adversaries
        pos = self._pos[:A]
        (landmark_rel,) = _observed(self._pos[None, A:] - pos[:, None], self.num_landmark_neighbors)
        other_rel = pos[self._others] - pos[:, None]  # [A, A - 1, 2, E]
        if self.num_agent_neighbors is None:
            prey_vel = self._vel[n_adv:]
            vel_seen = [
                np.broadcast_to(prey_vel[None], (n_adv, *prey_vel.shape)),
                self._vel[self._prey_others],
            ]
        else:
            is_prey = (self._others >= n_adv)[:, :, None, None]  # adversaries' velocity slots are zeros
            other_vel = np.where(is_prey, self._vel[self._others], 0.0)
            other_rel, other_vel = _observed(other_rel, self.num_agent_neighbors, other_vel)
            vel_seen = [other_vel[:n_adv], other_vel[n_adv:]]
        groups = {"adversary": slice(None, n_adv), "agent": slice(n_adv, None)}
        return {
            g: flat(self._vel[s], pos[s], landmark_rel[s], other_rel[s], vel)
            for (g, s), vel in zip(groups.items(), vel_seen, strict=True)
        }

    def _caught(self) -> np.ndarray:
        """``bool [n_good, n_adv, E]``: prey ``g`` touches adversary ``a``."""
        n_adv = self._n_adversaries
        prey, adv = self._pos[n_adv : self._n_agents], self._pos[:n_adv]
        return distance(prey[:, None] - adv[None]) < self._catch_dist

    def _reward(self) -> np.ndarray:
        n_adv = self._n_adversaries
        caught = self._caught()
        x = np.abs(self._pos[n_adv : self._n_agents])  # [n_good, 2, E]
        exp_part = np.minimum(np.exp(np.minimum(2 * x - 2, 10.0)), 10)  # mpe2: min(exp(2x - 2), 10)
        bound = np.where(x < 0.9, 0.0, np.where(x < 1.0, (x - 0.9) * 10, exp_part))
        prey = -10.0 * caught.sum(axis=1) - bound[:, 0] - bound[:, 1]
        adversary = 10.0 * caught.sum(axis=(0, 1))
        return np.concatenate([np.repeat(adversary[None], n_adv, axis=0), prey])

    def _terminal(self) -> np.ndarray:
        if not self.terminate_on_success:
            return np.zeros(self.num_envs, dtype=bool)
        return self._caught().any(axis=1).all(axis=0)
