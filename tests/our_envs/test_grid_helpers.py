"""envs._grid helpers against naive oracles, and the package's independence from marl."""

from __future__ import annotations

import subprocess
import sys
from collections import deque

import numpy as np
import pytest

from envs import _grid


def bfs_connected(blocked: np.ndarray) -> bool:
    """Oracle: breadth-first search over the free cells."""
    free = np.argwhere(~blocked)
    if len(free) == 0:
        return True
    seen = {tuple(free[0])}
    queue = deque(seen)
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nxt = (r + dr, c + dc)
            if (
                0 <= nxt[0] < blocked.shape[0]
                and 0 <= nxt[1] < blocked.shape[1]
                and not blocked[nxt]
                and nxt not in seen
            ):
                seen.add(nxt)
                queue.append(nxt)
    return len(seen) == len(free)


def test_connectivity_matches_bfs_on_random_grids() -> None:
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(3000):
        height, width = rng.integers(1, 10, size=2)
        blocked = rng.random((height, width)) < rng.uniform(0.0, 0.6)
        expected = bfs_connected(blocked)
        assert _grid.free_cells_connected(blocked) == expected, blocked.astype(int)
        outcomes.add(expected)
    assert outcomes == {True, False}


def test_row_wrap_is_not_a_connection() -> None:
    blocked = np.array([[0, 0, 1], [1, 1, 1], [0, 0, 1]], dtype=bool)
    assert not _grid.free_cells_connected(blocked)
    # (0, 2) free and (1, 0) free: adjacent in flat order only
    blocked = np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)
    assert not _grid.free_cells_connected(blocked)


@pytest.mark.parametrize(("size", "n_blocked"), [(5, 0), (6, 12), (4, 15), (9, 40)])
def test_random_connected_blocks_exact_count_and_connected(size: int, n_blocked: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(20):
        blocked = _grid.random_connected_blocks(size, n_blocked, rng)
        assert blocked.sum() == n_blocked and bfs_connected(blocked)
    with pytest.raises(ValueError, match="n_blocked"):
        _grid.random_connected_blocks(size, size * size, rng)


def test_sample_cells_distinct_and_allowed() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((6, 6)) < 0.5
    cells = _grid.sample_cells(mask, int(mask.sum()), rng)
    assert len({tuple(c) for c in cells}) == mask.sum() and mask[cells[:, 0], cells[:, 1]].all()
    with pytest.raises(ValueError, match="free cells"):
        _grid.sample_cells(mask, int(mask.sum()) + 1, rng)


@pytest.mark.parametrize("turns", [-1, 0, 1, 2, 3, 5])
def test_rotate_offset_follows_rot90(turns: int) -> None:
    for r in range(5):
        for c in range(5):
            grid = np.zeros((5, 5), dtype=int)
            grid[r, c] = 1
            moved = np.argwhere(np.rot90(grid, turns))[0] - 2
            np.testing.assert_array_equal(_grid.rotate_offset(np.array([r - 2, c - 2]), turns), moved)


def test_window_equals_naive_window(window_oracle) -> None:
    rng = np.random.default_rng(0)
    grid = rng.random((7, 7)) < 0.4
    padded = _grid.pad(grid, 2, True)
    for cell in np.ndindex(7, 7):
        np.testing.assert_array_equal(
            _grid.window(padded, np.array(cell), 5), window_oracle(grid, cell, 5, 1.0)
        )


@pytest.mark.parametrize("counted", [False, True])
def test_others_in_view_equals_naive_count(counted: bool, window_oracle) -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 3, (6, 6))
    padded = _grid.pad(counts, 1, 0)
    for cell in np.ndindex(6, 6):
        expected = window_oracle(counts, cell, 3, 0.0)
        if counted:
            expected[1, 1] -= 1  # the observer is one of the agents on its own cell
        got = _grid.others_in_view(padded, np.array(cell), 3, counted=counted)
        assert got.dtype == bool
        np.testing.assert_array_equal(got, expected > 0)
    # the result is a new array: writing to it leaves the occupancy alone
    _grid.others_in_view(padded, np.array([0, 0]), 3, counted=True)[:] = True
    np.testing.assert_array_equal(padded, _grid.pad(counts, 1, 0))


def test_floor_colours_paint_walls_dark() -> None:
    walls = np.array([[1, 0, 0], [0, 0, 1]], dtype=bool)
    colours = _grid.floor_colours(walls)
    assert colours.dtype == np.uint8 and colours.shape == (2, 3, 3)
    for r, c in np.ndindex(2, 3):
        expected = (60, 60, 60) if walls[r, c] else (235, 235, 235)
        assert tuple(colours[r, c]) == expected


@pytest.mark.parametrize("view", [3, 5, 9])
def test_check_view_accepts_odd_windows(view: int) -> None:
    _grid.check_view(view)


@pytest.mark.parametrize("view", [-1, 1, 2, 4, 6])
def test_check_view_rejects_even_or_tiny_windows(view: int) -> None:
    with pytest.raises(ValueError, match=f"view={view} must be odd and >= 3"):
        _grid.check_view(view)


def test_check_wall_density_bounds() -> None:
    for density in (0.0, 0.25, 0.5):
        _grid.check_wall_density(density)
    for density in (-0.01, 0.51, 1.0):
        with pytest.raises(ValueError, match=r"wall_density=.* must be in \[0, 0.5\]"):
            _grid.check_wall_density(density)


def test_upscale_repeats_each_cell() -> None:
    colours = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    image = _grid.upscale(colours, 4)
    assert image.shape == (8, 12, 3)
    for r, c in np.ndindex(2, 3):
        assert (image[4 * r : 4 * r + 4, 4 * c : 4 * c + 4] == colours[r, c]).all()


def test_envs_package_never_imports_marl() -> None:
    code = (
        "import sys, envs, envs.grid_nav, envs.coop_gather, envs.bit_flip, envs.goal_reach, envs.multi_goal\n"
        "assert not any(m == 'marl' or m.startswith('marl.') for m in sys.modules), 'envs imported marl'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gymnasium_ids_are_registered() -> None:
    import gymnasium

    env = gymnasium.make("envs:BitFlip-v0", n_bits=5)
    assert env.unwrapped.n_bits == 5
    assert gymnasium.make("envs:GoalReach-v0").unwrapped.max_steps == 50
