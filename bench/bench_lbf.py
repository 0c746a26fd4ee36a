"""MAPPO, VDN or QMIX on level-based foraging (8x8-2p-2f-coop, or ``--task``): the normalized return within a stated
budget, per seed.

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
    python -m bench.bench_lbf --algo vdn --task 15x15-4p-3f                # another task of the paper

``--task`` names a task of the paper (``TASKS``: its env id here, lbforaging v3; the paper used v1, whose
food levels and spawning rules differ) and prints the paper's maximum-return cell beside ours (``PUBLISHED``).
``env.kwargs.action_masks=true`` masks each player's invalid actions (the paper did not; the printed cell says so):
on the 15x15 tasks the feed-forward VDN and QMIX agents learn only with it (bench/README.md)::

    python -m bench.bench_lbf --algo vdn --task 15x15-3p-5f env.kwargs.action_masks=true
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from marl.api import load_policy, train
from marl.config import Config, load_config
from marl.env.make import vector_env
from marl.evaluation import evaluate, random_actions
from marl.run import SupervisedPool
from marl.types import ActOutput

# The EPyMARL paper's LBF tasks -> (env id, env.kwargs overrides). lbforaging registers at most 4 foods: 5 foods
# are the 4-food id with max_num_food=5. "-2s": sight 2 (partially observed); "-c": cooperative (force_coop).
TASKS = {
    "8x8-2p-2f-c": ("lbforaging:Foraging-8x8-2p-2f-coop-v3", []),
    "8x8-2p-2f-2s-c": ("lbforaging:Foraging-2s-8x8-2p-2f-coop-v3", []),
    "10x10-3p-3f": ("lbforaging:Foraging-10x10-3p-3f-v3", []),
    "10x10-3p-3f-2s": ("lbforaging:Foraging-2s-10x10-3p-3f-v3", []),
    "15x15-3p-5f": ("lbforaging:Foraging-15x15-3p-4f-v3", ["env.kwargs.max_num_food=5"]),
    "15x15-4p-3f": ("lbforaging:Foraging-15x15-4p-3f-v3", []),
    "15x15-4p-5f": ("lbforaging:Foraging-15x15-4p-4f-v3", ["env.kwargs.max_num_food=5"]),
}

# (task, algo) -> (maximum return, 95% CI half width over 5 seeds): EPyMARL paper Table 3 (parameter sharing,
# arXiv 2006.07869v4); 20M env steps for MAPPO, 2M for VDN and QMIX; evaluations every 50k env steps, maximum of the
# seed-mean curve.
PUBLISHED = {
    ("8x8-2p-2f-c", "mappo"): (1.00, 0.00), ("8x8-2p-2f-c", "vdn"): (1.00, 0.00), ("8x8-2p-2f-c", "qmix"): (0.96, 0.07),
    ("8x8-2p-2f-2s-c", "mappo"): (0.85, 0.06), ("8x8-2p-2f-2s-c", "vdn"): (1.00, 0.00),
    ("8x8-2p-2f-2s-c", "qmix"): (1.00, 0.00),
    ("10x10-3p-3f", "mappo"): (0.99, 0.01), ("10x10-3p-3f", "vdn"): (0.84, 0.08), ("10x10-3p-3f", "qmix"): (0.84, 0.08),
    ("10x10-3p-3f-2s", "mappo"): (0.72, 0.03), ("10x10-3p-3f-2s", "vdn"): (0.90, 0.03),
    ("10x10-3p-3f-2s", "qmix"): (0.90, 0.01),
    ("15x15-3p-5f", "mappo"): (0.77, 0.02), ("15x15-3p-5f", "vdn"): (0.15, 0.02), ("15x15-3p-5f", "qmix"): (0.09, 0.04),
    ("15x15-4p-3f", "mappo"): (0.96, 0.02), ("15x15-4p-3f", "vdn"): (0.38, 0.13), ("15x15-4p-3f", "qmix"): (0.15, 0.06),
    ("15x15-4p-5f", "mappo"): (0.70, 0.25), ("15x15-4p-5f", "vdn"): (0.30, 0.04), ("15x15-4p-5f", "qmix"): (0.25, 0.09),
}


def task_of(env_id: str, kwargs: dict[str, Any]) -> str | None:
    """The paper's task an env id (with its kwargs) is, or ``None``."""
    for name, (task_id, overrides) in TASKS.items():
        food = [o.split("=")[1] for o in overrides if o.startswith("env.kwargs.max_num_food=")]
        if task_id == env_id and str(kwargs.get("max_num_food", "")) == (food[0] if food else ""):
            return name
    return None


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
    parser.add_argument("--task", choices=sorted(TASKS), default=None,
                        help="the paper's LBF task: its env id and kwargs override the config's (default: the config's "
                             "env)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. algo.lr=3e-4)")
    parser.add_argument("--total-env-steps", type=int, default=0, help="budget per seed (0 = the config's own)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once, one process each")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy")
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/lbf (mappo), bench/out/lbf_<algo>")
    args = parser.parse_args()
    args.config = args.config or f"configs/lbf_8x8_2p_2f_coop_{args.algo}.yaml"
    suffix = f"_{args.task}" if args.task else ""
    args.out = args.out or Path(("bench/out/lbf" if args.algo == "mappo" else f"bench/out/lbf_{args.algo}") + suffix)

    task_env = [f"env.id={TASKS[args.task][0]}", *TASKS[args.task][1]] if args.task else []
    base = [*task_env, *args.overrides, "log.progress=false", "log.tensorboard=false"]
    if args.total_env_steps:
        base = [*epsilon_overrides(load_config(args.config), args.total_env_steps), *base,
                f"total_env_steps={args.total_env_steps}"]
    cfg = load_config(args.config, base)
    task = args.task or task_of(cfg.env.id, dict(cfg.env.kwargs))
    published = PUBLISHED.get((task, cfg.algo.name)) if task else None
    paper = f"EPyMARL {task} max {published[0]:.2f} ± {published[1]:.2f}" if published else "no published cell"
    if published and cfg.env.kwargs.get("action_masks"):
        paper += " (without action masks; this run masks invalid actions)"
    print(f"{cfg.env.id} {dict(cfg.env.kwargs)}; budget {cfg.total_env_steps:,} env steps per seed, "
          f"seeds {args.seeds}, {args.jobs} at once; {args.episodes} eval episodes", flush=True)
    probe = vector_env(cfg, 1, backend="sync")
    spec = probe.spec
    probe.close()
    rand = evaluate_policy(RandomPolicy(spec, 0), cfg, args.episodes, deterministic=False)
    print(f"random policy: normalized return {rand['ep_return']:.3f} ± {rand['ep_return_std']:.3f}", flush=True)

    jobs = {seed: [*base, f"seed={seed}", f"run_dir={args.out / f'seed{seed}'}"] for seed in args.seeds}
    results = []
    with SupervisedPool(args.jobs) as pool:  # this process killed alone: the runs stop, checkpointed
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
              f"(random {rand['ep_return']:.3f}; {paper})")
    for key in ("eval_max", "eval_mean"):
        values = [r[key] for r in results]
        means[key] = {"mean": statistics.fmean(values), "std_over_seeds": statistics.stdev(values) if len(values) > 1
                      else 0.0}
        print(f"{key:>9}: {means[key]['mean']:.3f} ± {means[key]['std_over_seeds']:.3f} over {len(values)} seeds")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"config": args.config, "task": task, "published_max": published, "overrides": base,
               "episodes": args.episodes, "random": rand,
               "seeds": results, "mean": means}
    (args.out / "results.json").write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
