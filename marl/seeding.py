"""Seeding: the process-wide RNGs of a run.

Each env copy's seed comes from :func:`marl.env.vector.seeds_for` (training) and
:func:`marl.env.vector.eval_seeds` (evaluation, disjoint from training); a trainer's own
generators (minibatch shuffling, replay sampling, exploration) are seeded from ``cfg.seed``
where they are built and saved in every checkpoint.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's legacy global and torch's RNGs (libraries that use them stay reproducible)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
