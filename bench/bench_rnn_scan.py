"""Cost of the recurrent time loop (forward + BPTT backward) at the shapes of the shipped recurrent configs.

Times :func:`marl.nets.recurrent.scan_together` (input gates of all steps in one matmul, then the
loop) with the loop as plain autograd operations (``plain``, :func:`marl.nets.recurrent.scan_rows`)
and as one fused node (``fused``, :func:`marl.nets.fused_rnn.fused_scan`), plus, as a reference
without the carry masks, torch's own RNN kernel (``torch``: ``torch._VF.gru`` / ``lstm`` with the
weights passed in, one call per parameter set and core). Variants are interleaved in every repeat,
one torch thread; the median CPU time per call is printed with the ratio to ``plain``.

Cases (minibatch shapes of one update):

* ``spread_ppo``: simple_spread with ``model.recurrent=gru``: actor and critic cores (64 wide, shared
  with 3 one-hot ids) in one loop, 8 chunks of 25 steps x 3 agents; the reset at the chunk's last step
  only (episodes of 25 steps end there).
* ``memory_ppo``: ``configs/memory_gru_ppo.yaml``: actor and critic, 4 chunks of 20 steps x 2 agents,
  a reset every 5 steps (episode ends).
* ``memory_dqn``: ``configs/memory_gru_dqn.yaml``: one Q core, 32 sequences of 6 positions x 2 agents.

``--training``: whole short trainings of the shipped configs (collection + updates, one torch
thread), the GRU with the fused loop, the GRU with the plain loop (``fused_scan`` swapped for
``scan_rows`` in :mod:`marl.nets.recurrent`) and the feed-forward model, interleaved ``--rounds``
times in one process; prints env steps/s (wall) and CPU seconds per run and the GRU/feed-forward
ratios (CPU seconds are the steadier figure on a loaded machine), after one untimed warm-up run per config.

Run from the repository root::

    .venv/bin/python -m bench.bench_rnn_scan --repeats 200
    .venv/bin/python -m bench.bench_rnn_scan --training --rounds 3 --steps 6000
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

import marl
from marl.nets import recurrent
from marl.nets.recurrent import StackedRNN, scan_together

CASES = {
    # name: (cores, in_dim, hidden, agents, chunks, steps, a reset every k steps (0 = none))
    "spread_ppo": (2, 67, 64, 3, 8, 25, 25),
    "memory_ppo": (2, 66, 64, 2, 4, 20, 5),
    "memory_dqn": (1, 66, 64, 2, 32, 6, 0),
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _torch_rnn(rnns: list[StackedRNN], xs: list[torch.Tensor], states: list[torch.Tensor]) -> list[torch.Tensor]:
    """Reference: torch's RNN kernel per core (shared sets only), no carry masks."""
    outs = []
    for rnn, x, st in zip(rnns, xs, states):
        n_steps, n, a = x.shape[:3]
        rows = x.reshape(n_steps, n * a, -1)
        params = [rnn.weight_ih[0].T, rnn.weight_hh[0].T, rnn.bias_ih[0], rnn.bias_hh[0]]
        h0 = st.reshape(1, n * a, -1)
        if rnn.cell == "gru":
            out, _ = torch._VF.gru(rows, h0, params, True, 1, 0.0, True, False, False)
        else:
            hh, cc = h0.chunk(2, -1)
            out, _, _ = torch._VF.lstm(rows, (hh.contiguous(), cc.contiguous()), params, True, 1, 0.0, True, False,
                                       False)
        outs.append(out)
    return outs


def run_case(name: str, cell: str, repeats: int) -> dict[str, float]:
    cores, in_dim, hidden, agents, chunks, steps, every = CASES[name]
    torch.manual_seed(0)
    rnns = [StackedRNN(cell, in_dim, hidden, (0,) * agents) for _ in range(cores)]
    xs = [torch.randn(steps, chunks, agents, in_dim, requires_grad=True) for _ in rnns]
    states = [torch.zeros(chunks, agents, r.state_size) for r in rnns]
    reset = torch.zeros(steps, chunks, agents, dtype=torch.bool)
    if every:
        reset[every - 1::every] = True
    alive = torch.ones(steps, chunks, agents, dtype=torch.bool)

    def plain() -> None:
        outs = scan_together(rnns, xs, states, alive, reset, fused=False)
        sum(o.sum() for o, _ in outs).backward()

    def fused() -> None:
        outs = scan_together(rnns, xs, states, alive, reset, fused=True)
        sum(o.sum() for o, _ in outs).backward()

    def native() -> None:
        sum(o.sum() for o in _torch_rnn(rnns, xs, states)).backward()

    variants = {"plain": plain, "fused": fused, "torch (no masks)": native}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        fn()
    for _ in range(repeats):
        for key, fn in variants.items():
            start = _cpu()
            fn()
            times[key].append(_cpu() - start)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


TRAININGS = {
    # name: (config, overrides of the recurrent arm); budget and quiet settings are added
    "spread_ppo": ("configs/simple_spread_ppo.yaml", ["env.backend=sync", "env.num_envs=8", "algo.bptt_len=25"]),
    "memory_ppo": ("configs/memory_gru_ppo.yaml", []),
    "memory_dqn": ("configs/memory_gru_dqn.yaml", []),
}
QUIET = ["log.tensorboard=false", "log.progress=false", "checkpoint.interval=0", "torch_threads=1",
         "eval.interval=0", "eval.episodes=1", "eval.num_envs=1"]


def training(name: str, steps: int, rounds: int, root: Path) -> None:
    """Interleaved whole trainings: GRU fused, GRU plain, feed-forward; medians of env steps/s and CPU s."""
    config, extra = TRAININGS[name]
    arms = {"gru fused": ("gru", True), "gru plain": ("gru", False), "feed-forward": ("none", True)}
    sps: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, list[float]] = {k: [] for k in arms}
    fused = recurrent.fused_scan
    # one untimed run first: the imports and one-off setup of the env and the config
    marl.train(config, overrides=[*QUIET, *extra, "model.recurrent=gru", "total_env_steps=800",
                                  f"run_dir={root / f'{name}-warmup'}"])
    for r in range(rounds):
        for arm, (model, use_fused) in arms.items():
            recurrent.fused_scan = fused if use_fused else recurrent.scan_rows
            try:
                start = _cpu()
                run_dir = root / f"{name}-{arm}-{r}"
                run = marl.train(config, overrides=[*QUIET, *extra, f"model.recurrent={model}",
                                                    f"total_env_steps={steps}", f"run_dir={run_dir}"])
                cpu[arm].append(_cpu() - start)
            finally:
                recurrent.fused_scan = fused
            sps[arm].append(float(run.summary["sps"]))
    med = {k: (statistics.median(sps[k]), statistics.median(cpu[k])) for k in arms}
    ff_sps, ff_cpu = med["feed-forward"]
    cells = "; ".join(f"{k} {v[0]:.0f} env steps/s, {v[1]:.1f} CPU s" for k, v in med.items())
    ratios = ", ".join(f"{k} {med[k][0] / ff_sps:.2f} (CPU {ff_cpu / med[k][1]:.2f})"
                       for k in ("gru fused", "gru plain"))
    print(f"{name}: {cells}\n  ratio to feed-forward, env steps/s (CPU): {ratios}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--cells", nargs="+", choices=["gru", "lstm"], default=["gru", "lstm"])
    parser.add_argument("--training", action="store_true", help="whole trainings instead of the loop alone")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --training")
    parser.add_argument("--steps", type=int, default=4000, help="env steps per --training run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"load average at start: {' '.join(load)}")
    if args.training:
        with tempfile.TemporaryDirectory() as tmp:
            for case in args.cases:
                training(case, args.steps, args.rounds, Path(tmp))
        with open("/proc/loadavg") as f:
            print(f"load average at the end: {' '.join(f.read().split()[:3])} ({time.time() - start:.0f} s)")
        return
    for case in args.cases:
        for cell in args.cells:
            ms = run_case(case, cell, args.repeats)
            base = ms["plain"]
            cells = ", ".join(f"{k} {v:.2f} ms ({base / v:.2f}x)" for k, v in ms.items())
            print(f"{case:11s} {cell:4s}: {cells}", flush=True)
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
