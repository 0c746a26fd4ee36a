"""Where PPO's time goes on a batched env, and what each speed trick of the update gains.

Builds the PPO trainer of ``configs/simple_spread_ppo.yaml`` on ``env.backend=batched`` (``--copies``
copies of ``envs.batched_mpe``, ``algo.num_steps=25``) and times, per iteration, the three phases
of the trainer: collection (inference, env step, rollout writes), GAE, and the update (``update_epochs``
x ``num_minibatches`` gradient steps). The update is then timed with each trick of the stacked MLP
(:mod:`marl.nets.fused`) switched off and on, alternating ``--repeats`` times on the same rollout
(the machine is shared: compare the ratios within one run, not the milliseconds across runs):

* ``plain``: every layer as ``baddbmm(b, x, w)`` on the input as given (broadcast over the towers),
  minibatch rows taken by advanced indexing;
* ``+layout``: :func:`~marl.nets.fused.stacked_linear` / :func:`~marl.nets.fused.stacked_weight_grad`
  (narrow output layers as the transposed product) and :func:`~marl.nets.fused.dense_input`;
* ``+tanh``: and :func:`~marl.nets.fused.linear_tanh` (tanh's ``2x`` folded into the matmul);
* ``+rows``: and :func:`~marl.data.rollout.take_rows` (minibatch rows by ``index_select``);
* ``+agentnet``: and :class:`~marl.nets.AgentNet` with one parameter set (the separate actor and
  critic of ``model.critic=central``) through :func:`~marl.nets.fused.stacked_mlp` instead of autograd
  per layer: all of them, the shipped code.

::

    python bench/bench_batched_ppo_parts.py                              # 1,024 copies, shipped 10 x 4 update
    python bench/bench_batched_ppo_parts.py algo.update_epochs=4 algo.num_minibatches=1 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marl.config import load_config  # noqa: E402
from marl.data import rollout  # noqa: E402
from marl.nets import ensemble, fused  # noqa: E402
from marl.nets.layers import activate  # noqa: E402
from marl.on_policy.trainer import OnPolicyTrainer  # noqa: E402

COMMON = ["eval.interval=0", "checkpoint.interval=0", "log.tensorboard=false", "log.progress=false",
          "env.backend=batched", "algo.num_steps=25"]


VARIANTS = ("plain", "+layout", "+tanh", "+rows", "+agentnet")
"""Cumulative: each variant adds one trick to the previous one."""


def _autograd_layers(z: torch.Tensor, weights, biases, activation: str) -> torch.Tensor:
    """AgentNet's layers before :func:`~marl.nets.fused.stacked_mlp`: one ``baddbmm`` and activation each."""
    for i, (w, b) in enumerate(zip(weights, biases)):
        z = torch.baddbmm(b.unsqueeze(1), z, w)
        if i < len(weights) - 1:
            z = activate(z, activation)
    return z


def _advanced_indexing(x: torch.Tensor, rows: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return x[rows] if dim == 0 else x[:, rows]


@contextlib.contextmanager
def variant(name: str):
    """The update with the tricks up to ``name`` in :data:`VARIANTS` (module globals restored after)."""
    saved = (fused.NARROW_OUT, fused.dense_input, fused.TANH_IN_MATMUL, rollout.take_rows, ensemble.stacked_mlp)
    level = VARIANTS.index(name)
    if level < 1:
        fused.NARROW_OUT, fused.dense_input = 0, (lambda x: x)
    if level < 2:
        fused.TANH_IN_MATMUL = False
    if level < 3:
        rollout.take_rows = _advanced_indexing
    if level < 4:
        ensemble.stacked_mlp = _autograd_layers
    try:
        yield
    finally:
        fused.NARROW_OUT, fused.dense_input, fused.TANH_IN_MATMUL, rollout.take_rows, ensemble.stacked_mlp = saved


VMAS = ["env.id=vmas:simple_spread", "env.kwargs={n_agents: 3, max_steps: 25, continuous_actions: false}"]


def collection_paths(cfg, repeats: int) -> None:
    """Collection of one rollout on VMAS through torch end to end vs through numpy (best of ``repeats``)."""
    import marl.on_policy.trainer as trainer_module

    native = trainer_module.torch_native
    trainers = {}
    for name in ("torch", "numpy"):
        trainer_module.torch_native = native if name == "torch" else (lambda *args, **kwargs: False)
        try:
            trainers[name] = OnPolicyTrainer(cfg)
        finally:
            trainer_module.torch_native = native
        trainers[name].collector.collect()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(repeats):  # alternating: the same load for both
        for name, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.collector.collect()
            times[name].append(time.perf_counter() - t0)
    for trainer in trainers.values():
        trainer.close()
    best = {name: min(t) for name, t in times.items()}
    steps = cfg.env.num_envs * cfg.algo.num_steps
    print(f"VMAS collection of {steps:,} env steps: torch path {best['torch'] * 1e3:.0f} ms, numpy path "
          f"{best['numpy'] * 1e3:.0f} ms (x{best['numpy'] / best['torch']:.2f})", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--copies", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--vmas", action="store_true", help="VMAS's simple_spread instead of the batched mpe2 simulation; "
                   "collection timed on the torch path and on the numpy path")
    p.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    a = p.parse_args()
    env = VMAS if a.vmas else []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs/simple_spread_ppo.yaml",
                          [*COMMON, *env, f"env.num_envs={a.copies}", *a.overrides, f"run_dir={tmp}/run"])
        if a.vmas:
            collection_paths(cfg, a.repeats)
        trainer = OnPolicyTrainer(cfg)
        algo = cfg.algo
        print(f"load {os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()} (update: "
              f"{trainer.update_threads}); {a.copies} copies x {algo.num_steps} steps; update {algo.update_epochs} "
              f"epochs x {algo.num_minibatches} minibatches", flush=True)

        def rollout():
            t0 = time.perf_counter()
            r = trainer.collector.collect()
            t1 = time.perf_counter()
            for name, buf in r.groups.items():
                buf.finish(r.last_value[name], algo.gamma, algo.gae_lambda, algo.bootstrap_on_truncation, steps=r.steps)
            batches = {n: b.flat(r.steps) for n, b in r.groups.items()}
            return batches, r.env_steps, t1 - t0, time.perf_counter() - t1

        def update(batches) -> float:
            t0 = time.perf_counter()
            trainer.learner.update(batches, num_minibatches=algo.num_minibatches, norm_advantage=cfg.norm.advantage,
                                   generator=trainer.generator)
            return time.perf_counter() - t0

        batches, steps, t_collect, t_gae = rollout()
        update(batches)  # warm-up
        times: dict[str, list[float]] = {v: [] for v in a.variants}
        for _ in range(a.repeats):
            for v in a.variants:
                with variant(v):
                    times[v].append(update(batches))
        _, steps, t_collect, t_gae = rollout()
        base = min(times[a.variants[0]])
        print(f"per iteration of {steps:,} env steps: collection {t_collect * 1e3:.0f} ms, GAE {t_gae * 1e3:.1f} ms")
        for v in a.variants:
            best = min(times[v])
            print(f"update [{v:12s}] {best * 1e3:7.0f} ms (best of {a.repeats})  x{base / best:.2f} vs "
                  f"{a.variants[0]}; end-to-end {steps / (best + t_collect + t_gae):,.0f} env steps/s")
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
