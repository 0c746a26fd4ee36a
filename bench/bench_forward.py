"""Forward-pass speed of per-agent networks: shared vs independent (batched, fork, loop).

Sizes: every agent has an MLP ``18 -> 64 -> 64 -> 5`` (tanh); a call sees
``8`` rows per agent (acting in 8 env copies) or ``128`` rows per agent (a
training minibatch), input ``[rows, A, 18]``. Variants:

* ``shared``: one parameter set for all agents, one-hot agent id appended;
* ``batched``: one set per agent, stacked weights, one ``baddbmm`` per layer;
* ``fork``: one set per agent, ``torch.jit.fork`` per set in TorchScript;
* ``loop``: one set per agent, a Python loop over the sets.

Two modes: ``infer`` (forward under ``torch.no_grad``) and ``train`` (forward,
``sum(out^2)``, backward). Each cell is the median over repeated calls, in
milliseconds; the tables are printed with ``torch.set_num_threads(1)`` and with
torch's default thread count. Targets: at 20 agents in ``train`` mode,
``batched <= 1.5 x shared`` and ``loop >= 3 x batched``. The second holds only
while per-op overhead dominates (small batches): at 128 rows per agent the
matmuls themselves dominate and no strategy can save more than the overhead.

Run from the repository root: ``.venv/bin/python -m bench.bench_forward`` (about 30 s on 2 idle CPU cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from marl.nets import AgentNet

OBS_DIM = 18
HIDDEN = (64, 64)
OUT_DIM = 5
VARIANTS = ("shared", "batched", "fork", "loop")
MODES = ("infer", "train")


def build(variant: str, n_agents: int) -> AgentNet:
    """The network of one variant for ``n_agents`` agents."""
    shared = variant == "shared"
    return AgentNet(
        (OBS_DIM,),
        OUT_DIM,
        n_agents,
        hidden=HIDDEN,
        param_sets=None if shared else list(range(n_agents)),
        strategy="batched" if shared else variant,
    )


def time_call(net: AgentNet, x: torch.Tensor, train: bool, budget_s: float, min_reps: int = 5) -> float:
    """Median milliseconds of one call, repeated for about ``budget_s`` seconds after 3 warm-up calls."""

    def call() -> None:
        if train:
            net.zero_grad(set_to_none=True)
            net(x).square().sum().backward()
        else:
            with torch.no_grad():
                net(x)

    for _ in range(3):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def measure(
    variants: list[str], agent_counts: list[int], batches: list[int], budget_s: float, seed: int
) -> dict:
    """``{variant: {"A,batch,mode": ms}}`` over every agent count, batch size and mode."""
    gen = torch.Generator().manual_seed(seed)
    result: dict[str, dict[str, float]] = {v: {} for v in variants}
    for n_agents in agent_counts:
        nets = {v: build(v, n_agents) for v in variants}
        for batch in batches:
            x = torch.randn(batch, n_agents, OBS_DIM, generator=gen)
            for mode in MODES:
                for v in variants:
                    result[v][f"{n_agents},{batch},{mode}"] = time_call(nets[v], x, mode == "train", budget_s)
    return result


def run_worker(variants: list[str], threads: int, args: argparse.Namespace) -> dict:
    """Time ``variants`` in a fresh interpreter.

    ``fork`` gets a process of its own: after ``torch.jit.fork`` has run, its
    inter-op worker threads keep spinning and slow every later op of the same
    process when there are few cores, which would bias the variants timed after it.
    """
    cmd = [sys.executable, "-m", "bench.bench_forward", "--worker", *variants, "--threads", str(threads),
           "--budget", str(args.budget), "--seed", str(args.seed),
           "--agents", *map(str, args.agents), "--batch", *map(str, args.batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(ms: dict[str, dict], agent_counts: list[int], batch: int) -> str:
    """Rows = (agents, mode); columns = ms per call, ratio to ``shared``, and ``loop / batched``."""
    head = f"{'A':>3} {'mode':>5} | " + " ".join(f"{v + ' ms':>10}" for v in VARIANTS)
    head += " | " + " ".join(f"{v + '/sh':>10}" for v in VARIANTS[1:]) + f" | {'loop/bat':>8}"
    lines = [head, "-" * len(head)]
    for n_agents in agent_counts:
        for mode in MODES:
            key = f"{n_agents},{batch},{mode}"
            cell = {v: ms[v][key] for v in VARIANTS}
            row = f"{n_agents:>3} {mode:>5} | " + " ".join(f"{cell[v]:>10.3f}" for v in VARIANTS)
            row += " | " + " ".join(f"{cell[v] / cell['shared']:>10.2f}" for v in VARIANTS[1:])
            row += f" | {cell['loop'] / cell['batched']:>8.2f}"
            lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 8, 20, 64], help="agent counts")
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 128], help="rows per agent per call")
    parser.add_argument("--budget", type=float, default=0.1, help="seconds of timing per cell")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs and the weights")
    parser.add_argument("--worker", nargs="+", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.worker:
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.worker, args.agents, args.batch, args.budget, args.seed)))
        return
    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}; MLP {OBS_DIM}->{'->'.join(map(str, HIDDEN))}->{OUT_DIM}; "
          "median ms per call; fork timed in a process of its own")
    for threads in dict.fromkeys((1, default_threads)):
        ms = run_worker(["shared", "batched", "loop"], threads, args)
        ms.update(run_worker(["fork"], threads, args))
        for batch in args.batch:
            print(f"\ntorch.set_num_threads({threads}), {batch} rows per agent")
            print(table(ms, args.agents, batch))


if __name__ == "__main__":
    main()
