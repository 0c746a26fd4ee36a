"""Grid helpers shared by the grid-world environments (argument checks, layouts, windows, drawing).

Coordinates are ``(row, col)`` with row 0 at the top; a grid is a ``[size, size]``
array. Headings are numbered clockwise from "up": 0 up, 1 right, 2 down, 3 left.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: ``[4, 2]`` unit step ``(d_row, d_col)`` of each heading (0 up, 1 right, 2 down, 3 left).
HEADING_STEPS = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], dtype=np.int64)
#: pixels per cell side in ``render()`` pictures of the grid worlds.
RENDER_CELL_PIXELS = 16
#: RGB of empty cells and of walls in ``render()`` pictures.
FLOOR_COLOUR = (235, 235, 235)
WALL_COLOUR = (60, 60, 60)


def check_view(view: int) -> None:
    """Raise unless the observation window side ``view`` is odd and >= 3 (the agent is its centre cell)."""
    if view < 3 or view % 2 == 0:
        raise ValueError(f"view={view} must be odd and >= 3 so the agent sits in the centre cell")


def check_wall_density(wall_density: float) -> None:
    """Raise unless ``wall_density`` (fraction of the grid's cells made walls) is in ``[0, 0.5]``."""
    if not 0.0 <= wall_density <= 0.5:
        raise ValueError(f"wall_density={wall_density} must be in [0, 0.5]")


@lru_cache(maxsize=32)
def _column_masks(height: int, width: int) -> tuple[int, int]:
    """Bitsets (bit ``r * width + c``) of the cells not in the first and not in the last column."""
    not_first = not_last = 0
    for r in range(height):
        for c in range(width):
            if c != 0:
                not_first |= 1 << (r * width + c)
            if c != width - 1:
                not_last |= 1 << (r * width + c)
    return not_first, not_last


def free_cells_connected(blocked: np.ndarray) -> bool:
    """Whether the free (``False``) cells of ``blocked`` form one 4-connected region.

    A flood fill on Python-int bitsets (bit ``r * W + c`` is cell ``(r, c)``): each pass
    grows the reached set by one cell in the four directions, so a check costs a few
    big-int operations per cell of path length instead of a per-cell Python loop.

    Args:
        blocked: ``[H, W]`` bool, ``True`` where a cell cannot be entered.

    Returns:
        ``True`` when every free cell can be reached from every other one
        (also when there are no free cells).
    """
    height, width = blocked.shape
    free = int.from_bytes(np.packbits(~blocked.ravel(), bitorder="little").tobytes(), "little")
    if free == 0:
        return True
    not_first, not_last = _column_masks(height, width)
    reached = free & -free  # the lowest free cell
    while True:
        grown = reached | ((reached << 1) & not_first) | ((reached >> 1) & not_last)
        grown = (grown | (reached << width) | (reached >> width)) & free
        if grown == reached:
            return reached == free
        reached = grown


def random_connected_blocks(size: int, n_blocked: int, rng: np.random.Generator) -> np.ndarray:
    """Block ``n_blocked`` random cells of a ``size`` x ``size`` grid, keeping the free cells connected.

    Cells are tried in random order; a cell whose blocking would split the free region
    is skipped (and may be tried again in a later pass). Some cell can always be
    blocked while two or more cells are free (a leaf of a spanning tree of the free
    region), so every ``n_blocked < size**2`` is reached.

    Args:
        size: side of the square grid, in cells.
        n_blocked: number of cells to block, in ``[0, size**2 - 1]``.
        rng: generator that fixes the layout.

    Returns:
        ``[size, size]`` bool, ``True`` on the ``n_blocked`` blocked cells.
    """
    if not 0 <= n_blocked < size * size:
        raise ValueError(f"n_blocked={n_blocked} must be in [0, {size * size - 1}] for a {size}x{size} grid")
    blocked = np.zeros((size, size), dtype=bool)
    placed = 0
    while placed < n_blocked:
        for flat in rng.permutation(size * size):
            r, c = divmod(int(flat), size)
            if blocked[r, c]:
                continue
            blocked[r, c] = True
            if free_cells_connected(blocked):
                placed += 1
                if placed == n_blocked:
                    break
            else:
                blocked[r, c] = False
    return blocked


def sample_cells(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``k`` distinct cells among the ``True`` cells of ``mask``.

    Args:
        mask: ``[H, W]`` bool, the allowed cells.
        k: number of cells to draw.
        rng: generator used for the draw.

    Returns:
        ``[k, 2]`` int64 ``(row, col)`` of the drawn cells, in draw order.

    Raises:
        ValueError: fewer than ``k`` allowed cells.
    """
    cells = np.argwhere(mask)
    if len(cells) < k:
        raise ValueError(
            f"need {k} distinct free cells but the layout has only {len(cells)}; "
            "use a larger grid, fewer agents/objects or a lower wall density"
        )
    return cells[rng.choice(len(cells), size=k, replace=False)].astype(np.int64)


def pad(grid: np.ndarray, width: int, fill: float | bool) -> np.ndarray:
    """Pad a ``[H, W]`` grid by ``width`` cells on every side with ``fill``."""
    return np.pad(grid, width, mode="constant", constant_values=fill)


def window(padded: np.ndarray, cell: np.ndarray, view: int) -> np.ndarray:
    """The ``view`` x ``view`` window centred on ``cell`` of a grid padded by ``view // 2``.

    Args:
        padded: ``[H + 2r, W + 2r, ...]`` grid padded with ``r = view // 2``.
        cell: ``(row, col)`` in unpadded coordinates.
        view: odd window side, in cells.

    Returns:
        ``[view, view, ...]`` view (not a copy) into ``padded``.
    """
    r, c = int(cell[0]), int(cell[1])
    return padded[r : r + view, c : c + view]


def others_in_view(padded_occupancy: np.ndarray, cell: np.ndarray, view: int, counted: bool) -> np.ndarray:
    """Cells of the window centred on ``cell`` that hold agents other than the one at ``cell``.

    Args:
        padded_occupancy: ``[H + 2r, W + 2r]`` int agent count per cell, padded with 0 by
            ``r = view // 2``.
        cell: ``(row, col)`` of the observing agent, in unpadded coordinates.
        view: odd window side, in cells.
        counted: whether the observing agent is itself in ``padded_occupancy``; its own
            cell then shows another agent only when the count there exceeds 1.

    Returns:
        ``[view, view]`` bool (a new array).
    """
    others = window(padded_occupancy, cell, view) > 0
    if counted:
        r = view // 2
        others[r, r] = padded_occupancy[cell[0] + r, cell[1] + r] > 1
    return others


def rotate_offset(offset: np.ndarray, quarter_turns: int) -> np.ndarray:
    """Rotate ``(d_row, d_col)`` offsets counter-clockwise by ``quarter_turns`` x 90 degrees.

    This is how a point moves when its grid is rotated with
    ``np.rot90(grid, quarter_turns)``: one turn maps ``(dr, dc)`` to ``(-dc, dr)``.

    Args:
        offset: ``[..., 2]`` offsets from the rotation centre.
        quarter_turns: number of counter-clockwise quarter turns (any int).

    Returns:
        ``[..., 2]`` rotated offsets (same dtype).
    """
    out = np.asarray(offset)
    for _ in range(quarter_turns % 4):
        out = np.stack([-out[..., 1], out[..., 0]], axis=-1)
    return out


def floor_colours(walls: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` per-cell colours of a ``[H, W]`` bool wall grid: floor, walls dark."""
    colours = np.full((*walls.shape, 3), FLOOR_COLOUR, dtype=np.uint8)
    colours[walls] = WALL_COLOUR
    return colours


def upscale(colours: np.ndarray, cell_pixels: int) -> np.ndarray:
    """Turn a ``[H, W, 3]`` per-cell colour grid into a ``[H*k, W*k, 3]`` picture (``k = cell_pixels``)."""
    if cell_pixels == 1:
        return np.ascontiguousarray(colours)
    return np.repeat(np.repeat(colours, cell_pixels, axis=0), cell_pixels, axis=1)


def paint_marker(
    image: np.ndarray, cell: np.ndarray, colour: tuple[int, int, int], cell_pixels: int, margin: int
) -> None:
    """Fill the square of ``cell`` in ``image`` with ``colour``, leaving ``margin`` pixels on each side."""
    top = int(cell[0]) * cell_pixels + margin
    left = int(cell[1]) * cell_pixels + margin
    bottom = (int(cell[0]) + 1) * cell_pixels - margin
    right = (int(cell[1]) + 1) * cell_pixels - margin
    image[top:bottom, left:right] = colour
