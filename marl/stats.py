"""Statistics over runs, reusable by any command that compares or reports seeds.

* :func:`bootstrap_interval`: stratified percentile bootstrap of an aggregate (rliable's scheme,
  with an explicit ``np.random.Generator`` so reports are reproducible and the global numpy
  RNG is left alone).
* :func:`mean_and_iqm`: rliable's mean and interquartile mean.
* :func:`bootstrap_difference`: difference of means of two sets of runs, with an interval.
* :func:`common_grid` / :func:`interpolate_curves`: learning curves of unequal x-values on one grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_interval(
    scores: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    reps: int = 10_000,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified percentile bootstrap (rliable's scheme, with an explicit generator).

    Args:
        scores: ``[R, K]`` scores of ``R`` runs on ``K`` tasks (or grid points); runs are
            resampled with replacement independently within each column.
        statistic: ``[R, K] -> [M]`` aggregate, e.g. mean and IQM.
        rng: source of the resampling indices.
        reps: bootstrap replications.
        confidence: interval coverage in (0, 1).

    Returns:
        ``(point [M], low [M], high [M])``: the statistic of ``scores`` and the
        ``(1-confidence)/2`` and ``(1+confidence)/2`` quantiles of its bootstrap distribution.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores must be [runs, tasks] with at least one run, got shape {scores.shape}")
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    samples = scores[idx, np.arange(tasks)]  # [reps, R, K]
    stats = np.stack([np.atleast_1d(statistic(s)) for s in samples])
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(stats, [alpha, 100.0 - alpha], axis=0)
    return np.atleast_1d(statistic(scores)).astype(np.float64), low, high


def mean_and_iqm(scores: np.ndarray) -> np.ndarray:
    """``[R, K] -> [2]``: rliable's mean and interquartile mean (25% trimmed) of the scores."""
    from rliable import metrics

    return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores)])


def bootstrap_difference(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, reps: int = 10_000, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` with a percentile interval; the runs ``[R]`` of ``a`` and ``b`` are resampled
    independently."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    resampled_a = a[rng.integers(0, a.size, (reps, a.size))].mean(1)
    diffs = resampled_a - b[rng.integers(0, b.size, (reps, b.size))].mean(1)
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(diffs, [alpha, 100.0 - alpha])
    return float(a.mean() - b.mean()), float(low), float(high)


def common_grid(xs: Sequence[np.ndarray], num: int = 100) -> np.ndarray:
    """``num`` evenly spaced points over the x-range every curve covers (empty if they do not overlap)."""
    lo, hi = max(float(np.min(x)) for x in xs), min(float(np.max(x)) for x in xs)
    if lo > hi:
        return np.zeros(0)
    return np.array([lo]) if lo == hi else np.linspace(lo, hi, num)


def interpolate_curves(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of each curve ``(x [n_i], y [n_i])`` onto ``grid [G]`` -> ``[R, G]``."""
    rows = []
    for x, y in zip(xs, ys, strict=True):
        order = np.argsort(x, kind="stable")
        rows.append(np.interp(grid, np.asarray(x, np.float64)[order], np.asarray(y, np.float64)[order]))
    return np.stack(rows) if rows else np.zeros((0, grid.size))
