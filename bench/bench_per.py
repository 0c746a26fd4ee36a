"""Prioritized replay throughput on a full 1,000,000-row buffer, one core.

Measures iterations per second of ``sample(256)`` (stratified sum-tree draw,
importance weights, gathering the rows' 8 fields: one ``take`` of the packed
records, see :mod:`marl.data.storage`) followed by ``update_priorities(256)``,
and, in the same run, of the naive alternative ``rng.choice(C, 256, p=p)`` over
the whole normalized priority array (sampling only: no data, no weights, no
update, ``p`` computed once). Prints both, per wall-clock second and per CPU
second, their ratio, where the CPU time of one iteration goes (sampling with
the gather of the rows, priority update), and for reference uniform
``sample(256)`` from the same rows.

    .venv/bin/python bench/bench_per.py [--capacity 1000000] [--seconds 6] [--n-step 1] [--pack-limit 1024]
"""

from __future__ import annotations

import os

# One core: set before numpy / torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from marl.data.prioritized import PrioritizedReplayBuffer
from marl.data.replay import ReplayBuffer
from marl.data.storage import PACK_LIMIT_BYTES

BATCH = 256
OBS_DIM = 8


def bench_schema() -> dict[str, tuple[tuple[int, ...], type]]:
    """One-agent rows: obs 8 float32 (80 bytes per packed row)."""
    return {
        "obs": ((1, OBS_DIM), np.float32),
        "next_obs": ((1, OBS_DIM), np.float32),
        "action": ((1,), np.int64),
        "reward": ((1,), np.float32),
        "terminated": ((1,), np.bool_),
        "truncated": ((1,), np.bool_),
        "alive": ((1,), np.bool_),
        "next_alive": ((1,), np.bool_),
    }


def fill_buffer(
    capacity: int, n_envs: int, rng: np.random.Generator, n_step: int = 1, pack_limit: int = PACK_LIMIT_BYTES
) -> PrioritizedReplayBuffer:
    """A full buffer of :func:`bench_schema` rows (1% terminated), with random priorities."""
    buffer = PrioritizedReplayBuffer(bench_schema(), capacity, n_envs, n_step=n_step, pack_limit=pack_limit)
    for _ in range(capacity // n_envs):
        batch = {
            "obs": rng.standard_normal((n_envs, 1, OBS_DIM), dtype=np.float32),
            "next_obs": rng.standard_normal((n_envs, 1, OBS_DIM), dtype=np.float32),
            "action": rng.integers(0, 4, size=(n_envs, 1)),
            "reward": rng.standard_normal((n_envs, 1), dtype=np.float32),
            "terminated": rng.random((n_envs, 1)) < 0.01,
            "truncated": np.zeros((n_envs, 1), dtype=bool),
            "alive": np.ones((n_envs, 1), dtype=bool),
            "next_alive": np.ones((n_envs, 1), dtype=bool),
        }
        buffer.add(batch)
    all_rows = np.arange(capacity)
    buffer.update_priorities(all_rows, rng.exponential(1.0, size=capacity))
    return buffer


def rate(step: Callable[[], None], seconds: float, repeats: int = 3) -> tuple[float, float]:
    """Calls of ``step()`` per second: ``(per wall-clock second, per CPU second)``.

    Best of ``repeats`` runs of about ``seconds / repeats`` each, after a warm-up.
    CPU time (``time.process_time``) leaves out time the process spent
    descheduled, which matters on a shared machine.
    """
    for _ in range(20):
        step()
    best_wall = best_cpu = 0.0
    for _ in range(repeats):
        calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - wall0 < seconds / repeats:
            for _ in range(10):
                step()
            calls += 10
        best_wall = max(best_wall, calls / (time.perf_counter() - wall0))
        best_cpu = max(best_cpu, calls / max(time.process_time() - cpu0, 1e-9))
    return best_wall, best_cpu


def split_cpu_us(
    buffer: PrioritizedReplayBuffer, rng: np.random.Generator, iterations: int = 3000
) -> tuple[float, float]:
    """CPU µs per iteration spent in ``sample`` and in ``update_priorities`` (best of 3 runs)."""
    best_sample = best_update = float("inf")
    for _ in range(3):
        in_sample = in_update = 0.0
        for _ in range(iterations):
            t0 = time.process_time()
            sample = buffer.sample(BATCH, rng, beta=0.5)
            t1 = time.process_time()
            buffer.update_priorities(sample.indices, rng.standard_normal(BATCH))
            in_sample, in_update = in_sample + t1 - t0, in_update + time.process_time() - t1
        best_sample = min(best_sample, in_sample / iterations * 1e6)
        best_update = min(best_update, in_update / iterations * 1e6)
    return best_sample, best_update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="rows C in the buffer")
    parser.add_argument("--n-envs", type=int, default=100, help="lanes (env copies); only sets the fill speed")
    parser.add_argument("--seconds", type=float, default=6.0, help="time per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-step", type=int, default=1, help="n-step targets (1: one-step)")
    parser.add_argument("--pack-limit", type=int, default=PACK_LIMIT_BYTES,
                        help="largest field row (bytes) packed into the record; 0 = one array per field")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    buffer = fill_buffer(args.capacity, args.n_envs, rng, args.n_step, args.pack_limit)
    print(f"filled {len(buffer):,} rows in {time.perf_counter() - t0:.1f} s")

    def per_step() -> None:
        sample = buffer.sample(BATCH, rng, beta=0.5)
        td = rng.standard_normal(BATCH)  # stands in for the learner's TD errors
        buffer.update_priorities(sample.indices, td)

    priorities = buffer.priorities(np.arange(args.capacity))
    p = priorities / priorities.sum()

    def choice_step() -> None:
        rng.choice(args.capacity, BATCH, p=p)

    per_wall, per_cpu = rate(per_step, args.seconds)
    base_wall, base_cpu = rate(choice_step, args.seconds)
    print(f"{'':52s} {'wall-clock':>12s} {'CPU time':>12s}")
    print(f"{'sum tree sample(256) + update_priorities(256), it/s':52s} {per_wall:12,.0f} {per_cpu:12,.0f}")
    print(f"{'Generator.choice(C, 256, p=p), it/s':52s} {base_wall:12,.1f} {base_cpu:12,.1f}")
    print(f"{'ratio':52s} {per_wall / base_wall:11.1f}x {per_cpu / base_cpu:11.1f}x")
    in_sample, in_update = split_cpu_us(buffer, rng)
    print(f"CPU per iteration: sample {in_sample:.0f} us (tree draw, weights, gather of 8 fields), "
          f"update_priorities {in_update:.0f} us")
    uniform = ReplayBuffer(bench_schema(), args.capacity, args.n_envs, n_step=args.n_step, pack_limit=args.pack_limit)
    uniform.load_state_dict(buffer.state_dict())  # the same rows
    uniform_wall, uniform_cpu = rate(lambda: uniform.sample(BATCH, rng), args.seconds)
    print(f"{'uniform sample(256), it/s':52s} {uniform_wall:12,.0f} {uniform_cpu:12,.0f}")


if __name__ == "__main__":
    main()
