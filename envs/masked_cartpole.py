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
episode ends are CartPole's own; only the observation is cut down.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

#: indices of ``CartPole-v1``'s observation that are kept: cart position and pole angle.
KEPT = (0, 2)


class MaskedCartPole(gymnasium.ObservationWrapper):
    """A ``CartPole`` env whose observation keeps only the entries :data:`KEPT` (the positions)."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gymnasium.spaces.Box) or space.shape != (4,):
            raise ValueError(f"expected CartPole's Box observation of shape (4,), got {space}")
        keep = list(KEPT)
        self.observation_space = gymnasium.spaces.Box(space.low[keep], space.high[keep], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)[list(KEPT)]


def env(max_episode_steps: int = 500, render_mode: str | None = None) -> gymnasium.Env:
    """``CartPole-v1`` with velocities removed (see the module docstring).

    Args:
        max_episode_steps: steps before truncation (``CartPole-v1``'s own limit is 500).
        render_mode: ``None`` or ``"rgb_array"``.
    """
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps={max_episode_steps} must be >= 1")
    base: Any = gymnasium.make("CartPole-v1", max_episode_steps=max_episode_steps, render_mode=render_mode)
    return MaskedCartPole(base)
