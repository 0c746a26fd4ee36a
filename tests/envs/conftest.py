"""Shared fixtures of the env tests: seeded rollouts of PettingZoo parallel envs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo import ParallelEnv


def _rollout(make_env: Callable[[], ParallelEnv], seed: int, n_steps: int) -> list[Any]:
    """Reset with ``seed`` then step ``n_steps`` times with actions drawn from spaces seeded by ``seed``.

    Returns the reset output followed by every step output (resetting, unseeded, when
    the episode ends), so equal lists mean equal episodes.
    """
    env = make_env()
    out: list[Any] = [env.reset(seed=seed)]
    for k, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(seed + k)
    for _ in range(n_steps):
        if not env.agents:
            out.append(env.reset())
            continue
        actions = {a: env.action_space(a).sample() for a in env.agents}
        out.append((actions, env.step(actions)))
    return out


@pytest.fixture
def assert_same_episodes() -> Callable[[Callable[[], ParallelEnv], int, int], None]:
    """Check that two envs from ``make_env`` seeded alike roll out equally, and another seed differs."""

    def check(make_env: Callable[[], ParallelEnv], seed: int, n_steps: int = 60) -> None:
        first = _rollout(make_env, seed, n_steps)
        second = _rollout(make_env, seed, n_steps)
        assert data_equivalence(first, second, exact=True)
        other = _rollout(make_env, seed + 1, n_steps)
        assert not data_equivalence(first[0], other[0])

    return check


def naive_window(grid: np.ndarray, centre: tuple[int, int], view: int, outside: float) -> np.ndarray:
    """``[view, view]`` window of ``grid`` centred on ``centre``, cell by cell; ``outside`` off the grid."""
    r = view // 2
    out = np.full((view, view), outside, dtype=np.float64)
    for i in range(view):
        for j in range(view):
            row, col = centre[0] - r + i, centre[1] - r + j
            if 0 <= row < grid.shape[0] and 0 <= col < grid.shape[1]:
                out[i, j] = grid[row, col]
    return out


@pytest.fixture
def window_oracle() -> Callable[[np.ndarray, tuple[int, int], int, float], np.ndarray]:
    return naive_window
