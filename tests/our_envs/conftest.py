"""Shared fixtures of the env tests: seeded rollouts, Gymnasium's checker as an error on warnings."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence
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


def _gym_rollout(make_env: Callable[[], gymnasium.Env], seed: int, n_steps: int) -> list[Any]:
    """Seed the action space and reset with ``seed``, then take ``n_steps`` sampled actions.

    Returns the reset output followed by every step output (no reset at an episode's end).
    """
    env = make_env()
    env.action_space.seed(seed)
    out: list[Any] = [env.reset(seed=seed)]
    for _ in range(n_steps):
        out.append(env.step(env.action_space.sample()))
    return out


def _check_same_episodes(
    rollout: Callable[[Any, int, int], list[Any]], make_env: Any, seed: int, n_steps: int
) -> None:
    """Two rollouts seeded alike are equal; a rollout with ``seed + 1`` starts differently."""
    first = rollout(make_env, seed, n_steps)
    assert data_equivalence(first, rollout(make_env, seed, n_steps), exact=True)
    assert not data_equivalence(first[0], rollout(make_env, seed + 1, n_steps)[0])


@pytest.fixture
def assert_same_episodes() -> Callable[[Callable[[], ParallelEnv], int, int], None]:
    """Check that two envs from ``make_env`` seeded alike roll out equally, and another seed differs."""

    def check(make_env: Callable[[], ParallelEnv], seed: int, n_steps: int = 60) -> None:
        _check_same_episodes(_rollout, make_env, seed, n_steps)

    return check


@pytest.fixture
def assert_same_gym_episodes() -> Callable[[Callable[[], gymnasium.Env], int, int], None]:
    """:func:`assert_same_episodes` for Gymnasium envs."""

    def check(make_env: Callable[[], gymnasium.Env], seed: int, n_steps: int) -> None:
        _check_same_episodes(_gym_rollout, make_env, seed, n_steps)

    return check


@pytest.fixture
def check_env_without_warnings() -> Callable[[gymnasium.Env], None]:
    """Gymnasium's ``check_env`` on an env, failing on any warning it raises."""

    def check(env: gymnasium.Env) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env)

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
