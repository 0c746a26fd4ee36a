"""Seeding, in one room: the process-wide RNGs of a run and the seeds of its env copies.

* :func:`seed_everything`: Python's, numpy's legacy global and torch's RNGs.
* :func:`seeds_for` (training copies: even ints below ``2**31``) and :func:`eval_seeds` (evaluation
  copies: odd, so disjoint from training), both prefixes of a fixed stream derived from
  ``np.random.SeedSequence``; :func:`copy_seeds` resolves a ``reset(seed)`` argument.

A trainer's own generators (minibatch shuffling, replay sampling, exploration) are seeded
from ``cfg.seed`` where they are built and saved in every checkpoint. Only numpy is imported
at module level (env worker processes import this module).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's legacy global and torch's RNGs (libraries that use them stay reproducible)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import torch  # here: env workers import this module without torch

    torch.manual_seed(seed)


SEED_BITS = 31
"""Env copy seeds are below ``2**31``: every backend takes them (open_spiel's hanabi refuses ``>= 2**31``)."""


def _distinct_words(entropy: int | list[int], n: int, parity: int) -> list[int]:
    """First ``n`` distinct :data:`SEED_BITS`-bit words of a SeedSequence stream, lowest bit forced to ``parity``."""
    if n < 0:
        raise ValueError(f"need a non-negative number of seeds, got {n}")
    seq = np.random.SeedSequence(entropy)
    words: dict[int, None] = {}
    draw = n
    while len(words) < n:
        words = dict.fromkeys(int(w) >> (32 - SEED_BITS) & ~1 | parity for w in seq.generate_state(draw, np.uint32))
        draw += max(8, n // 8)
    return list(words)[:n]


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def seeds_for(seed: int, n: int) -> list[int]:
    """Training seeds of env copies ``0..n-1``: distinct, reproducible, even ints below ``2**31``.

    A prefix of a fixed stream, so copy ``i`` gets the same seed for any ``n > i``.
    Derived from ``np.random.SeedSequence(seed)``; ``seed = 0`` is valid.
    """
    return _distinct_words(_check_seed(seed), n, parity=0)


def eval_seeds(seed: int, n: int) -> list[int]:
    """Evaluation seeds: distinct odd ints below ``2**31`` from ``SeedSequence([seed, 1])``.

    Odd, so disjoint from every :func:`seeds_for` seed (those are even).
    """
    return _distinct_words([_check_seed(seed), 1], n, parity=1)


def copy_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """Per-copy reset seeds: ``seeds_for(seed, n)`` for one int, or an explicit list of ``n`` seeds."""
    if isinstance(seed, (int, np.integer)):
        return seeds_for(int(seed), n)
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"reset got {len(seeds)} seeds for {n} env copies")
    return seeds
