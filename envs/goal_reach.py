"""Goal-conditioned point mass in the square ``[-1, 1]^2`` (single agent, continuous actions).

The point starts uniformly in the square and must get within ``distance_threshold``
(default 0.05) of a goal drawn uniformly in the square (redrawn until it lies farther than
the threshold from the start).

Spaces:

* observation ``Dict(observation, achieved_goal, desired_goal)``, each
  ``Box(-1, 1, (2,), float32)``: ``observation`` and ``achieved_goal`` are the position,
  ``desired_goal`` the goal.
* action ``Box(-1, 1, (2,), float32)``: velocity as a fraction of ``max_speed`` (default 0.1
  per step). Actions are clipped to the box; positions to the square.

Reward after each step: ``0`` when ``||position - goal|| <= distance_threshold``, else ``-1``,
from :meth:`GoalReachEnv.compute_reward`, which also takes batches.

Termination: none by default; with ``terminate_on_success=True`` on the step that reaches
the goal. Truncation: after ``max_steps`` steps (default 50). Infos: ``{"is_success": bool}``.

``render()`` (``render_mode="rgb_array"``) returns ``uint8 [128, 128, 3]``: the goal's success
disc in green, the point in blue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium
import numpy as np

from . import _common

DISTANCE_THRESHOLD = 0.05
RENDER_PIXELS = 128
#: RGB of the goal's success disc and of the point in ``render()``.
GOAL_COLOUR = (60, 180, 80)
POINT_COLOUR = (40, 90, 220)


def compute_reward(
    achieved_goal: np.ndarray,
    desired_goal: np.ndarray,
    info: Any = None,
    distance_threshold: float = DISTANCE_THRESHOLD,
) -> np.ndarray:
    """Sparse reward ``0`` within ``distance_threshold`` (Euclidean) of the goal, ``-1`` farther.

    Args:
        achieved_goal: ``[..., 2]`` positions (e.g. ``[2]``, ``[B, 2]`` or ``[B, A, 2]``).
        desired_goal: ``[..., 2]`` goals, broadcastable with ``achieved_goal``.
        info: unused; there for the Gymnasium goal-env signature.
        distance_threshold: success radius, in position units.

    Returns:
        ``float32 [...]`` rewards (a 0-d array for single goals).
    """
    distance = np.linalg.norm(np.asarray(achieved_goal, dtype=np.float64) - desired_goal, axis=-1)
    return -(distance > distance_threshold).astype(np.float32)


def move(position: np.ndarray, action: np.ndarray, max_speed: float) -> np.ndarray:
    """Positions after one step: ``clip(position + max_speed * clip(action, -1, 1), -1, 1)``.

    Args:
        position: ``float32 [..., 2]`` positions in ``[-1, 1]^2``.
        action: ``float32 [..., 2]`` velocities as fractions of ``max_speed`` (clipped to ``[-1, 1]``).
        max_speed: distance moved per step at full action, in position units.

    Returns:
        ``float32 [..., 2]`` new positions, clipped to the square.
    """
    return np.clip(position + max_speed * np.clip(action, -1.0, 1.0), -1.0, 1.0)


def check_point_args(distance_threshold: float, max_speed: float) -> None:
    """Raise unless the success radius and the speed (both in position units) are positive."""
    if distance_threshold <= 0 or max_speed <= 0:
        raise ValueError(f"distance_threshold={distance_threshold} and max_speed={max_speed} must be > 0")


def draw_discs(
    image: np.ndarray, centres: np.ndarray, radius_px: float, colour: tuple[int, int, int]
) -> None:
    """Paint discs of ``radius_px`` pixels at ``centres [K, 2]`` in ``[-1, 1]^2`` (x right, y up)."""
    side = image.shape[0]
    ys, xs = np.mgrid[0:side, 0:side] + 0.5
    for x, y in np.asarray(centres, dtype=np.float64).reshape(-1, 2):
        px, py = (x + 1.0) / 2.0 * side, (1.0 - y) / 2.0 * side
        image[(xs - px) ** 2 + (ys - py) ** 2 <= radius_px**2] = colour


def render_square(
    goals: np.ndarray,
    positions: np.ndarray,
    distance_threshold: float,
    goal_colours: Sequence[tuple[int, int, int]],
    point_colours: Sequence[tuple[int, int, int]],
) -> np.ndarray:
    """``uint8 [128, 128, 3]`` picture of ``[-1, 1]^2``: success discs of the goals, then the points.

    Args:
        goals: ``[K, 2]`` goals; each is drawn as a disc of radius ``distance_threshold``
            (at least 2 pixels) in its colour of ``goal_colours``.
        positions: ``[K, 2]`` points, drawn over every goal as 3-pixel discs in ``point_colours``.
        distance_threshold: success radius, in position units.
        goal_colours: ``K`` RGB colours of the goal discs.
        point_colours: ``K`` RGB colours of the points.
    """
    image = np.full((RENDER_PIXELS, RENDER_PIXELS, 3), 240, dtype=np.uint8)
    radius = max(distance_threshold * RENDER_PIXELS / 2.0, 2.0)
    for goal, colour in zip(goals, goal_colours, strict=True):
        draw_discs(image, goal, radius, colour)
    for position, colour in zip(positions, point_colours, strict=True):
        draw_discs(image, position, 3.0, colour)
    return image


class GoalReachEnv(gymnasium.Env):
    """Steer a point to a goal in ``[-1, 1]^2``; see the module docstring for spaces and rules.

    Args:
        max_steps: steps before truncation (>= 1).
        distance_threshold: success radius, in position units (> 0).
        max_speed: distance moved per step at full action, in position units (> 0).
        terminate_on_success: terminate when the goal is reached (default: never terminate).
        render_mode: ``None`` or ``"rgb_array"``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        max_steps: int = 50,
        distance_threshold: float = DISTANCE_THRESHOLD,
        max_speed: float = 0.1,
        terminate_on_success: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps={max_steps} must be >= 1")
        check_point_args(distance_threshold, max_speed)
        _common.check_render_mode(render_mode)
        self.max_steps = max_steps
        self.distance_threshold = float(distance_threshold)
        self.max_speed = float(max_speed)
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        point = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = _common.goal_space(point, point)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = np.zeros(2, dtype=np.float32)
        self._goal = np.zeros(2, dtype=np.float32)
        self._steps = 0

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """Reward ``[..., 2] x [..., 2] -> float32 [...]`` with this env's threshold; ``info`` is unused."""
        return compute_reward(achieved_goal, desired_goal, info, self.distance_threshold)

    def compute_terminated(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any
    ) -> np.ndarray:
        """Termination flags ``bool [...]``: success when ``terminate_on_success``, else all ``False``."""
        reward = self.compute_reward(achieved_goal, desired_goal, info)
        return _common.success_terminated(reward, self.terminate_on_success)

    def _obs(self) -> dict[str, np.ndarray]:
        return _common.goal_obs(self._pos, self._pos, self._goal)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Draw a start and a goal farther apart than the threshold; ``seed`` reseeds ``self.np_random``."""
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)
        self._goal = self._pos
        while np.linalg.norm(self._goal - self._pos) <= self.distance_threshold:
            self._goal = self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)
        self._steps = 0
        return self._obs(), {"is_success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Move by ``max_speed * clip(action, -1, 1)``; reward and flags as in the module docstring."""
        velocity = np.asarray(action, dtype=np.float32).reshape(2)
        self._pos = move(self._pos, velocity, self.max_speed).astype(np.float32)
        self._steps += 1
        reward = float(self.compute_reward(self._pos, self._goal, None))
        success = reward == 0.0
        terminated, truncated = _common.end_flags(
            success, self._steps, self.max_steps, self.terminate_on_success
        )
        return self._obs(), reward, terminated, truncated, {"is_success": success}

    def render(self) -> np.ndarray | None:
        """``uint8 [128, 128, 3]`` picture of the square, or ``None`` without a render mode."""
        if self.render_mode is None:
            return None
        return render_square(
            self._goal[None], self._pos[None], self.distance_threshold, [GOAL_COLOUR], [POINT_COLOUR]
        )


# The env id ``envs.goal_reach``: ``env(**kwargs)`` builds a :class:`GoalReachEnv` (a Gymnasium env).
env = GoalReachEnv
