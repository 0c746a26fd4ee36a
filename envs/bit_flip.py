"""Bit flipping, the goal-conditioned toy task of the Hindsight Experience Replay paper.

State: ``n_bits`` bits (default 10); goal: another ``n_bits`` bits. Both are drawn uniformly
at reset, the goal redrawn until it differs from the state (every episode needs a flip).

Spaces:

* observation ``Dict(observation, achieved_goal, desired_goal)``, each
  ``Box(0, 1, (n_bits,), float32)`` holding 0.0/1.0; ``observation`` and ``achieved_goal``
  are the current bits, ``desired_goal`` the goal bits.
* action ``Discrete(n_bits)``: flip bit ``i``.

Reward after each step: ``0`` when the bits equal the goal, else ``-1`` (the paper's
convention), from :meth:`BitFlipEnv.compute_reward`, which also takes batches.

Termination: none by default (the paper's fixed horizon); with
``terminate_on_success=True`` the episode terminates on the step that reaches the goal.
Truncation: after ``max_steps`` steps (default ``n_bits``). Infos: ``{"is_success": bool}``.

``render()`` (``render_mode="rgb_array"``) returns ``uint8 [2 * 16, n_bits * 16, 3]``: the
bits on the top row, the goal below, 1 white and 0 black, framed green when they match
and red otherwise.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np

from . import _common, _grid

RENDER_CELL_PIXELS = _grid.RENDER_CELL_PIXELS


def compute_reward(achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any = None) -> np.ndarray:
    """Sparse reward ``0`` where all bits match, ``-1`` elsewhere.

    Args:
        achieved_goal: ``[..., n_bits]`` bits (0/1, any numeric dtype).
        desired_goal: ``[..., n_bits]`` bits, broadcastable with ``achieved_goal``.
        info: unused; there for the Gymnasium goal-env signature.

    Returns:
        ``float32 [...]`` rewards (a 0-d array for single goals).
    """
    mismatch = np.any(np.asarray(achieved_goal) != np.asarray(desired_goal), axis=-1)
    return -mismatch.astype(np.float32)


class BitFlipEnv(gymnasium.Env):
    """Flip bits until they equal the goal; see the module docstring for spaces and rules.

    Args:
        n_bits: number of bits (>= 1).
        max_steps: steps before truncation; ``None`` means ``n_bits``.
        terminate_on_success: terminate when the goal is reached (default: never terminate).
        render_mode: ``None`` or ``"rgb_array"``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        n_bits: int = 10,
        max_steps: int | None = None,
        terminate_on_success: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if n_bits < 1:
            raise ValueError(f"n_bits={n_bits} must be >= 1")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps={max_steps} must be >= 1 (or None for n_bits)")
        _common.check_render_mode(render_mode)
        self.n_bits = n_bits
        self.max_steps = n_bits if max_steps is None else max_steps
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        bits = gymnasium.spaces.Box(0.0, 1.0, (n_bits,), np.float32)
        self.observation_space = _common.goal_space(bits, bits)
        self.action_space = gymnasium.spaces.Discrete(n_bits)
        self._bits = np.zeros(n_bits, dtype=np.float32)
        self._goal = np.zeros(n_bits, dtype=np.float32)
        self._steps = 0

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """Reward of ``achieved_goal`` when aiming at ``desired_goal`` (``[..., n_bits]`` -> ``[...]``).

        ``info`` is accepted for the Gymnasium goal-env signature and not used.
        """
        return compute_reward(achieved_goal, desired_goal)

    def compute_terminated(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any
    ) -> np.ndarray:
        """Termination flags ``bool [...]``: success when ``terminate_on_success``, else all ``False``."""
        return _common.success_terminated(
            compute_reward(achieved_goal, desired_goal), self.terminate_on_success
        )

    def _obs(self) -> dict[str, np.ndarray]:
        return _common.goal_obs(self._bits, self._bits, self._goal)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Draw new bits and a different goal; ``seed`` reseeds ``self.np_random``."""
        super().reset(seed=seed)
        self._bits = self.np_random.integers(0, 2, self.n_bits).astype(np.float32)
        self._goal = self._bits
        while np.array_equal(self._goal, self._bits):
            self._goal = self.np_random.integers(0, 2, self.n_bits).astype(np.float32)
        self._steps = 0
        return self._obs(), {"is_success": False}

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Flip bit ``action``; reward, termination and truncation as in the module docstring."""
        action = int(action)
        if not 0 <= action < self.n_bits:
            raise ValueError(f"action {action} is outside Discrete({self.n_bits})")
        self._bits[action] = 1.0 - self._bits[action]
        self._steps += 1
        reward = float(compute_reward(self._bits, self._goal))
        success = reward == 0.0
        terminated, truncated = _common.end_flags(
            success, self._steps, self.max_steps, self.terminate_on_success
        )
        return self._obs(), reward, terminated, truncated, {"is_success": success}

    def render(self) -> np.ndarray | None:
        """``uint8 [32, n_bits * 16, 3]`` picture of bits (top) and goal (bottom), or ``None``."""
        if self.render_mode is None:
            return None
        k = RENDER_CELL_PIXELS
        rows = np.stack([self._bits, self._goal]).astype(np.uint8) * np.uint8(255)
        image = _grid.upscale(np.repeat(rows[..., None], 3, axis=2), k)
        frame = (40, 170, 60) if np.array_equal(self._bits, self._goal) else (200, 40, 40)
        image[:, ::k] = frame
        image[::k, :] = frame
        image[-1, :] = frame
        image[:, -1] = frame
        return image


# The env id ``envs.bit_flip``: ``env(**kwargs)`` builds a :class:`BitFlipEnv` (a Gymnasium env).
env = BitFlipEnv
