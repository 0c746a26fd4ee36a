"""An mpe2 simple_spread whose steps take ``delay_s`` longer on torchrun rank 1: a deterministic straggler for
the preemption test (env id ``tests.slow_rank_env:make``)."""

from __future__ import annotations

import os
import time

from mpe2 import simple_spread_v3
from pettingzoo.utils.wrappers import BaseParallelWrapper


class _Slow(BaseParallelWrapper):
    def __init__(self, env, delay_s: float) -> None:
        super().__init__(env)
        self.delay_s = delay_s

    def step(self, actions):
        time.sleep(self.delay_s)
        return super().step(actions)


def make(delay_s: float = 0.01, **kwargs):
    env = simple_spread_v3.parallel_env(**kwargs)
    return _Slow(env, delay_s) if os.environ.get("RANK") == "1" else env
