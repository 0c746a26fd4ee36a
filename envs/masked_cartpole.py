"""CartPole with the velocities removed: a partially observed task where frame stacking matters.

Gymnasium's ``CartPole-v1`` observes ``[cart position, cart velocity, pole angle, pole angular
velocity]``. This env keeps only the positions, so a single observation says where the cart and
the pole are but not where they are going; a policy must infer the velocities from a short
history (stacked frames or a recurrent network) to balance the pole for long.

* Observation: ``Box(float32, (2,))`` = ``[cart position (m), pole angle (rad)]``, bounds
  ``[-4.8, 4.8] x [-0.419, 0.419]`` (those of ``CartPole-v1``).
* Actions: ``Discrete(2)``: 0 push the cart left, 1 push it right.
* Reward: ``+1`` per step, as in ``CartPole-v1``.
* Termination: the pole leans more than 12 degrees or the cart leaves ``[-2.4, 2.4]``.
* Truncation: after ``max_episode_steps`` steps (default 500).
* ``render()`` (``render_mode="rgb_array"``): CartPole's ``uint8 [400, 600, 3]`` picture.

The env id ``envs.masked_cartpole`` resolves to :func:`env`. Dynamics, seeding, rewards and
termination are those of Gymnasium's ``CartPoleEnv``, and the time limit counts steps as
``gymnasium.wrappers.TimeLimit`` does, so an episode equals the ``CartPole-v1`` episode of the
same seed and actions; only the observation is cut down.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from . import _common

#: indices of ``CartPole-v1``'s observation that are kept: cart position and pole angle.
KEPT = (0, 2)


class MaskedCartPoleEnv(gymnasium.Env):
    """CartPole observed through its positions only (see the module docstring).

    Args:
        max_episode_steps: steps before truncation (``CartPole-v1``'s own limit is 500).
        render_mode: ``None`` or ``"rgb_array"``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, max_episode_steps: int = 500, render_mode: str | None = None) -> None:
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={max_episode_steps} must be >= 1")
        _common.check_render_mode(render_mode)
        self.cartpole = CartPoleEnv(render_mode=render_mode)
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        full = self.cartpole.observation_space
        keep = list(KEPT)
        self.observation_space = gymnasium.spaces.Box(full.low[keep], full.high[keep], dtype=np.float32)
        self.action_space = self.cartpole.action_space
        self._steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.cartpole.reset(seed=seed, options=options)
        self._steps = 0
        return self._mask(obs), info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, _, info = self.cartpole.step(action)
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps and not terminated
        return self._mask(obs), float(reward), bool(terminated), truncated, info

    def render(self) -> np.ndarray | None:
        return self.cartpole.render()

    def close(self) -> None:
        self.cartpole.close()

    @staticmethod
    def _mask(obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32)[list(KEPT)]


def env(max_episode_steps: int = 500, render_mode: str | None = None) -> MaskedCartPoleEnv:
    """The env id ``envs.masked_cartpole``: a :class:`MaskedCartPoleEnv`."""
    return MaskedCartPoleEnv(max_episode_steps, render_mode)
