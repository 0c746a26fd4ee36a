"""marl PPO vs Stable-Baselines3 PPO on the same env with the same hyperparameters.

Prints, per env: env steps/s (and agent steps/s) of each library, the ratio, and the
final deterministic eval return of each, measured by the SAME evaluation function
(``marl.evaluation.evaluate``: fresh env copies with seeds disjoint from training,
deterministic actions, team return summed over agents).

* CartPole-v1: rl-zoo3's tuned PPO hyperparameters (``configs/cartpole_ppo.yaml``), no normalization.
* simple_spread_v3 (N=3, local_ratio=0.5, max_cycles=25, discrete): SB3 sees each agent as one env of a
  SuperSuit vec env (``pettingzoo_env_to_vec_env_v1`` + ``concat_vec_envs_v1``), i.e. 16 env copies x 3
  agents = 48 SB3 envs, one shared network with no agent id; marl runs ``configs/simple_spread_ppo.yaml``
  with the same PPO numbers (SB3's value loss (V-R)^2 x 0.5 is marl's 0.5 (V-R)^2 x 1.0). "equal" = marl
  with SB3's settings (no normalization, no agent id, no bootstrap on truncation — SuperSuit drops
  truncation, so SB3 treats the time limit as terminal);
  "best" = marl's own config.

SuperSuit 3.11's SB3 adapter has no ``seed()`` method, which SB3 2.9 calls when a seed is passed to
``PPO(...)``; the bench seeds SB3 through ``set_random_seed`` and the vec env's ``reset(seed=...)`` instead.

Usage::

    python bench/bench_vs_sb3.py --env cartpole --seeds 0 1 2
    python bench/bench_vs_sb3.py --env spread --agent-steps 2000000 --seeds 0
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch

from marl.config import load_config
from marl.env.make import vector_env
from marl.evaluation import evaluate
from marl.on_policy.trainer import OnPolicyTrainer
from marl.types import ActOutput

SPREAD_KW = {"N": 3, "local_ratio": 0.5, "max_cycles": 25, "continuous_actions": False}


class SB3Policy:
    """Wraps an SB3 model so marl's evaluator can run it (one group, deterministic predict)."""

    def __init__(self, model, group: str) -> None:
        self.model = model
        self.group = group

    def act(self, obs, state=None, deterministic=True, update_stats=False, with_value=False) -> ActOutput:
        o = obs[self.group].obs
        flat = o.reshape(-1, *o.shape[2:])
        action, _ = self.model.predict(flat, deterministic=deterministic)
        return ActOutput({}, {self.group: np.asarray(action).reshape(o.shape[:2])}, {}, {}, {}, {})


def linear(start: float):
    return lambda progress_remaining: progress_remaining * start


def timed(fn):
    """``(wall seconds, CPU seconds of this process, result)`` of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run_sb3_cartpole(seed: int, steps: int) -> tuple[float, float, object]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2), seed=seed, device="cpu")
    wall, cpu, _ = timed(lambda: model.learn(steps))
    return wall, cpu, model


def run_sb3_spread(seed: int, steps: int, num_envs: int, num_cpus: int) -> tuple[float, object]:
    import supersuit as ss
    from mpe2 import simple_spread_v3
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import set_random_seed

    env = simple_spread_v3.parallel_env(**SPREAD_KW)
    vec = ss.pettingzoo_env_to_vec_env_v1(env)
    vec = ss.concat_vec_envs_v1(vec, num_envs, num_cpus=num_cpus, base_class="stable_baselines3")
    # PPO(seed=...) and vec.reset(seed=...) both call vec.seed(), which SuperSuit's ConcatVecEnv lacks:
    # seed torch/numpy/random only (the SuperSuit copies then seed themselves, identically -- its known bug).
    set_random_seed(seed)
    n_sb3_envs = num_envs * 3
    model = PPO("MlpPolicy", vec, n_steps=100, batch_size=n_sb3_envs * 100 // 4, n_epochs=10, learning_rate=7e-4,
                gamma=0.99, gae_lambda=0.95, ent_coef=0.01, clip_range=0.2, vf_coef=0.5, max_grad_norm=0.5,
                device="cpu")
    t = time.perf_counter()
    model.learn(steps * 3)  # SB3 counts agent steps (each agent is an env)
    return time.perf_counter() - t, model


def run_marl(config: str, overrides: list[str]) -> tuple[float, float, dict, OnPolicyTrainer]:
    """Train; the time excludes the final evaluation and checkpoint (SB3's ``learn`` does neither)."""
    cfg = load_config(config, overrides)
    trainer = OnPolicyTrainer(cfg)
    wall, cpu, summary = timed(trainer.train)
    eval_wall = sum(h.get("eval_time_s", 0.0) for h in summary.get("eval_history", []))
    return wall - eval_wall, cpu - eval_wall, summary, trainer


def eval_both(cfg_path: str, overrides: list[str], policy, episodes: int, seed: int) -> dict:
    cfg = load_config(cfg_path, overrides)
    make = functools.partial(vector_env, cfg, backend="sync")
    return evaluate(policy, make, episodes, seed, deterministic=True, num_envs=min(episodes, 10))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=["cartpole", "spread"], required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--env-steps", type=int, default=0, help="env steps (cartpole default 100k)")
    p.add_argument("--agent-steps", type=int, default=2_000_000, help="spread budget in agent steps")
    p.add_argument("--episodes", type=int, default=50, help="eval episodes for both")
    p.add_argument("--backend", default="subprocess", help="marl env backend for spread")
    p.add_argument("--sb3-cpus", type=int, default=1, help="SuperSuit concat_vec_envs num_cpus")
    p.add_argument("--out", default="bench/out")
    p.add_argument("--only", choices=["all", "sb3", "marl"], default="all", help="spread: run only one side")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    cpu_rows = []  # cartpole: (seed, marl env steps per CPU second, sb3 env steps per CPU second)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        if args.env == "cartpole":
            steps = args.env_steps or 100_000
            cfg_path = "configs/cartpole_ppo.yaml"
            common = [f"seed={seed}", f"total_env_steps={steps}", "eval.interval=0", "log.progress=false",
                      "log.tensorboard=false", f"run_dir={out_dir / f'cartpole_marl_{seed}'}"]
            t_m, c_m, s_m, tr = run_marl(cfg_path, common)
            t_s, c_s, sb3 = run_sb3_cartpole(seed, steps)
            ev_m = eval_both(cfg_path, common, tr.policy, args.episodes, seed)
            ev_s = eval_both(cfg_path, common, SB3Policy(sb3, "agent"), args.episodes, seed)
            rows.append(("cartpole", seed, "marl", steps / t_m, ev_m["ep_return"]))
            rows.append(("cartpole", seed, "sb3", steps / t_s, ev_s["ep_return"]))
            cpu_rows.append((seed, steps / c_m, steps / c_s))
        else:
            steps = args.agent_steps // 3
            cfg_path = "configs/simple_spread_ppo.yaml"
            base = [f"seed={seed}", f"total_env_steps={steps}", "eval.interval=0", "log.progress=false",
                    "log.tensorboard=false", f"env.backend={args.backend}"]
            equal = base + ["norm.obs=false", "norm.reward=false", "model.agent_id=false", "algo.vf_coef=1.0",
                            f"run_dir={out_dir / f'spread_marl_equal_{seed}'}"]
            best = base + [f"run_dir={out_dir / f'spread_marl_best_{seed}'}"]
            if args.only in ("all", "marl"):
                t_e, _, _, tr_e = run_marl(cfg_path, equal)
                ev_e = eval_both(cfg_path, equal, tr_e.policy, args.episodes, seed)
                t_b, _, _, tr_b = run_marl(cfg_path, best)
                ev_b = eval_both(cfg_path, best, tr_b.policy, args.episodes, seed)
                rows.append(("spread", seed, "marl-equal", steps / t_e, ev_e["ep_return"]))
                rows.append(("spread", seed, "marl-best", steps / t_b, ev_b["ep_return"]))
            if args.only in ("all", "sb3"):
                t_s, sb3 = run_sb3_spread(seed, steps, 16, args.sb3_cpus)
                ev_s = eval_both(cfg_path, equal, SB3Policy(sb3, "agent"), args.episodes, seed)
                rows.append(("spread", seed, "sb3", steps / t_s, ev_s["ep_return"]))
    agents = 1 if args.env == "cartpole" else 3
    print(f"\n{'env':<9} {'seed':>4} {'library':<11} {'env steps/s':>12} {'agent steps/s':>14} {'eval return':>12}")
    for env, seed, lib, sps, ret in rows:
        print(f"{env:<9} {seed:>4} {lib:<11} {sps:>12.0f} {sps * agents:>14.0f} {ret:>12.2f}")
    by = {}
    for _env, _seed, lib, sps, ret in rows:
        by.setdefault(lib, []).append((sps, ret))
    print()
    sb3_sps = np.mean([s for s, _ in by["sb3"]]) if "sb3" in by else float("nan")
    for lib, vals in by.items():
        sps = np.mean([s for s, _ in vals])
        print(f"{lib:<11} mean env steps/s {sps:8.0f}  ratio to sb3 {sps / sb3_sps:5.2f}x  "
              f"mean eval return {np.mean([r for _, r in vals]):8.2f}  per seed {[round(r, 2) for _, r in vals]}")
    if cpu_rows:
        # Both run in this one process on one thread: CPU time is not inflated by other jobs on the machine.
        m, s = np.mean([r[1] for r in cpu_rows]), np.mean([r[2] for r in cpu_rows])
        print(f"per CPU second (this process): marl {m:.0f}  sb3 {s:.0f}  ratio {m / s:.2f}x  "
              f"per seed {[round(r[1] / r[2], 2) for r in cpu_rows]}")
    (out_dir / f"vs_sb3_{args.env}.json").write_text(json.dumps({"rows": rows, "cpu_rows": cpu_rows}))


if __name__ == "__main__":
    main()
