"""Env snapshots: what rebuilds an env copy's current state for an exact resume."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


def find_rng(env: Any) -> np.random.Generator | None:
    """The env's ``np_random`` generator, looking through wrappers (``unwrapped``, ``.env``)."""
    seen = set()
    node = env
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        for candidate in (getattr(node, "unwrapped", None), node):
            rng = getattr(candidate, "_np_random", None) or getattr(candidate, "np_random", None)
            if isinstance(rng, np.random.Generator):
                return rng
        node = getattr(node, "env", None) or getattr(node, "aec_env", None)
    return None


class EnvSnapshot(NamedTuple):
    """What rebuilds an env copy's current state: how its episode started plus the actions since.

    Attributes:
        seed: the reset seed of the current episode, or ``None`` (auto-reset).
        rng: the env's ``np_random`` bit-generator state right before that reset
            (as ``bit_generator.state`` gives it), or ``None`` when the env has no ``np_random``.
        actions: group -> ``[n, A, *action_shape]`` actions taken in the episode so far.

    Restoring resets with the same seed / RNG state and replays the actions, so an
    env whose randomness all comes from ``np_random`` (Gymnasium, PettingZoo, mpe2,
    our ``envs/``) ends in exactly the state it was in. Other sources of randomness
    (Python's ``random``, a global numpy RNG) are not captured.
    """

    seed: int | None
    rng: dict | None
    actions: dict[str, np.ndarray]
