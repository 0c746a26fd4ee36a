"""MAPPO, VDN or QMIX on level-based foraging 8x8-2p-2f-coop: the normalized return within a stated budget, per seed.

LBF normalizes its rewards so that the team return of an episode is the fraction of the food levels
collected: 1.0 means every food was loaded within the 50 steps. That sum is the "normalized return"
of the EPyMARL benchmark (Papoudakis et al. 2021), which reports about 1.0 for MAPPO (after 20M env
steps), VDN and QMIX (after 2M) on this task. This script trains ``configs/lbf_8x8_2p_2f_coop_<algo>.yaml``
(``--algo mappo|vdn|qmix``, or ``--config``) for ``--total-env-steps`` per seed, then evaluates the final
policy (``checkpoints/latest.pt``) on ``--episodes`` episodes with marl's evaluator (the eval seeds of
training), both sampling from the policy (VDN/QMIX: epsilon-greedy with ``algo.epsilon_final``) and
greedily (the mode of each action distribution, or the argmax of Q, as EPyMARL's test runs do), beside a
uniformly random policy on the same episodes. The evaluations during training (``eval.interval``) give
EPyMARL's two summaries per seed: the maximum and the mean over evaluation points.

A budget other than the config's keeps VDN's and QMIX's epsilon decay at the same number of env steps
(EPyMARL: 50k), by rescaling ``algo.exploration_fraction``.

Seeds run in ``--jobs`` worker processes at once (one torch thread each). Results go to
``OUT/results.json`` and a table is printed. Run from the repository root::

    python -m bench.bench_lbf                                         # seed 0, the config's budget
    python -m bench.bench_lbf --total-env-steps 1000000 --seeds 0 1 2 --jobs 3
    python -m bench.bench_lbf --total-env-steps 20000 --episodes 10   # a quick look
    python -m bench.bench_lbf --algo qmix --total-env-steps 500000 --seeds 0
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import multiprocessing
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from marl.api import load_policy, train
from marl.config import Config, load_config
from marl.env.make import vector_env
from marl.evaluation import evaluate, random_actions
from marl.types import ActOutput


class RandomPolicy:
    """Uniformly random actions, with the interface :func:`marl.evaluation.evaluate` calls."""

    def __init__(self, spec: Any, seed: int) -> None:
        import numpy as np

        self.spec, self.rng = spec, np.random.default_rng(seed)

    def act(self, obs: Any, state: Any = None, deterministic: bool = False, update_stats: bool = False,
            with_value: bool = False) -> ActOutput:
        return ActOutput({}, random_actions(self.spec, obs, self.rng), {}, {}, {}, {})


def evaluate_policy(policy: Any, cfg: Config, episodes: int, deterministic: bool) -> dict[str, Any]:
    """marl's evaluation protocol (eval seeds from ``cfg.seed``) with ``episodes`` episodes."""
    make = functools.partial(vector_env, cfg, backend="sync")
    return evaluate(policy, make, episodes, cfg.seed, deterministic=deterministic, num_envs=cfg.eval.num_envs)


def run_seed(config: str, overrides: list[str], episodes: int) -> dict[str, Any]:
    """Train one seed, then evaluate its final policy sampling and greedily."""
    import torch

    torch.set_num_threads(1)
    cfg = load_config(config, overrides)
    run_dir = Path(cfg.run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    train(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    policy, _, _ = load_policy(run_dir / "checkpoints" / "latest.pt")
    sampled = evaluate_policy(policy, cfg, episodes, deterministic=False)
    greedy = evaluate_policy(policy, cfg, episodes, deterministic=True)
    history = summary.get("eval_history") or []
    returns = [e["ep_return"] for e in history]
    return {"seed": cfg.seed, "env_steps": summary["env_steps"], "wall_time_s": time.perf_counter() - start,
            "train_sps": summary["sps"], "sampled": sampled, "greedy": greedy, "eval_history": history,
            "eval_max": max(returns, default=float("nan")),
            "eval_mean": statistics.fmean(returns) if returns else float("nan")}


def epsilon_overrides(cfg: Config, total_env_steps: int) -> list[str]:
    """``algo.exploration_fraction`` that keeps a Q method's epsilon decay at the config's env steps when the
    budget changes to ``total_env_steps`` (``[]`` for an algorithm without epsilon)."""
    fraction = getattr(cfg.algo, "exploration_fraction", None)
    if fraction is None or total_env_steps == cfg.total_env_steps:
        return []
    return [f"algo.exploration_fraction={min(1.0, fraction * cfg.total_env_steps / total_env_steps):.6g}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=("mappo", "vdn", "qmix"), default="mappo",
                        help="trains configs/lbf_8x8_2p_2f_coop_<algo>.yaml")
    parser.add_argument("--config", default="", help="a config to train instead of --algo's")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. algo.lr=3e-4)")
    parser.add_argument("--total-env-steps", type=int, default=0, help="budget per seed (0 = the config's own)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once, one process each")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy")
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/lbf (mappo), bench/out/lbf_<algo>")
    args = parser.parse_args()
    args.config = args.config or f"configs/lbf_8x8_2p_2f_coop_{args.algo}.yaml"
    args.out = args.out or Path("bench/out/lbf" if args.algo == "mappo" else f"bench/out/lbf_{args.algo}")

    base = [*args.overrides, "log.progress=false", "log.tensorboard=false"]
    if args.total_env_steps:
        base = [*epsilon_overrides(load_config(args.config), args.total_env_steps), *base,
                f"total_env_steps={args.total_env_steps}"]
    cfg = load_config(args.config, base)
    print(f"{cfg.env.id} {dict(cfg.env.kwargs)}; budget {cfg.total_env_steps:,} env steps per seed, "
          f"seeds {args.seeds}, {args.jobs} at once; {args.episodes} eval episodes", flush=True)
    probe = vector_env(cfg, 1, backend="sync")
    spec = probe.spec
    probe.close()
    rand = evaluate_policy(RandomPolicy(spec, 0), cfg, args.episodes, deterministic=False)
    print(f"random policy: normalized return {rand['ep_return']:.3f} ± {rand['ep_return_std']:.3f}", flush=True)

    jobs = {seed: [*base, f"seed={seed}", f"run_dir={args.out / f'seed{seed}'}"] for seed in args.seeds}
    results = []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = [pool.submit(run_seed, args.config, o, args.episodes) for o in jobs.values()]
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            results.append(r)
            print(f"seed {r['seed']}: {r['env_steps']:,} env steps in {r['wall_time_s']:.0f} s "
                  f"({r['train_sps']:.0f} env steps/s); normalized return sampled {r['sampled']['ep_return']:.3f}, "
                  f"greedy {r['greedy']['ep_return']:.3f}; evaluations during training: max {r['eval_max']:.3f}, "
                  f"mean {r['eval_mean']:.3f}", flush=True)
    results.sort(key=lambda r: r["seed"])
    means = {}
    for mode in ("sampled", "greedy"):
        values = [r[mode]["ep_return"] for r in results]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        means[mode] = {"mean": statistics.fmean(values), "std_over_seeds": spread}
        print(f"{mode:>8}: normalized return {means[mode]['mean']:.3f} ± {spread:.3f} over {len(values)} seeds "
              f"(random {rand['ep_return']:.3f}; EPyMARL about 1.0)")
    for key in ("eval_max", "eval_mean"):
        values = [r[key] for r in results]
        means[key] = {"mean": statistics.fmean(values), "std_over_seeds": statistics.stdev(values) if len(values) > 1
                      else 0.0}
        print(f"{key:>9}: {means[key]['mean']:.3f} ± {means[key]['std_over_seeds']:.3f} over {len(values)} seeds")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"config": args.config, "overrides": base, "episodes": args.episodes, "random": rand,
               "seeds": results, "mean": means}
    (args.out / "results.json").write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
