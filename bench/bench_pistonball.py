"""Pistonball (PettingZoo butterfly, pixels, parameter sharing): train PPO within a budget, compare
with a random policy, and report env frames/s.

Steps, for one config (default ``configs/pistonball_ppo.yaml``: 20 pistons, discrete actions,
grayscale, 42x42, 4 stacked frames, one shared CNN policy):

1. env throughput alone: one env copy with the config's preprocessing stepped with uniformly
   random actions (env frames/s, env steps/s, agent steps/s; no policy, no learning);
2. the random policy's return, measured by :func:`marl.evaluation.evaluate` with the same
   protocol as the trained policy (same eval seeds, so the same ball drops; ``eval.deterministic``
   of the config for the trained one);
3. training (``marl.trainer.train``) to ``--total-env-steps`` (default: the config's budget),
   reporting wall time, env frames/s and agent steps/s of the whole run (collection, updates
   and evaluations);
4. the trained policy evaluated like the random one (the run's final evaluation, or
   ``checkpoints/latest.pt`` evaluated again when ``--episodes`` differs from the config's); the
   difference of mean team returns with a 95% normal interval
   ``±1.96 sqrt(s_a^2/n_a + s_b^2/n_b)`` over episodes.

Team return = the sum over pistons (every piston gets the same reward, so it is 20x the
per-piston return with 20 pistons). Results go to ``OUT/results.json``.

Run from the repository root::

    .venv/bin/python -m bench.bench_pistonball                    # 20 pistons, the config's budget
    .venv/bin/python -m bench.bench_pistonball --config configs/pistonball_small_ppo.yaml
    .venv/bin/python -m bench.bench_pistonball --total-env-steps 2000 --episodes 4   # a quick look
    .venv/bin/python -m bench.bench_pistonball --out bench/out/pb_lr1e-3 algo.lr=1e-3   # a variant
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from marl.api import load_policy, train
from marl.config import Config, load_config
from marl.env.make import env_factory, vector_env
from marl.evaluation import evaluate, random_actions
from marl.types import ActOutput, EnvSpec, GroupObs


class RandomPolicy:
    """Uniformly random allowed actions, with the interface :func:`marl.evaluation.evaluate` calls."""

    def __init__(self, spec: EnvSpec, seed: int) -> None:
        self.spec = spec
        self.rng = np.random.default_rng(seed)

    def act(
        self,
        obs: Mapping[str, GroupObs],
        state: np.ndarray | None = None,
        deterministic: bool = False,
        update_stats: bool = False,
        with_value: bool = False,
    ) -> ActOutput:
        return ActOutput({}, random_actions(self.spec, obs, self.rng), {}, {}, {}, {})


def env_throughput(cfg: Config, steps: int, seed: int) -> dict[str, float]:
    """Env steps/s, frames/s and agent steps/s of one env copy with random actions (no policy)."""
    adapter = env_factory(cfg)()
    try:
        spec = adapter.spec
        rng = np.random.default_rng(seed)
        obs, _ = adapter.reset(seed=seed)
        agent_steps = 0
        start = time.perf_counter()
        for _ in range(steps):
            agent_steps += int(sum(o.alive.sum() for o in obs.values()))
            actions = random_actions(spec, {k: _batched(o) for k, o in obs.items()}, rng)
            out = adapter.step({k: a[0] for k, a in actions.items()})
            obs = out.obs
        elapsed = time.perf_counter() - start
    finally:
        adapter.close()
    repeat = cfg.env.action_repeat
    return {"env_steps_per_s": steps / elapsed, "env_frames_per_s": steps * repeat / elapsed,
            "agent_steps_per_s": agent_steps / elapsed, "steps": steps}


def _batched(obs: GroupObs) -> GroupObs:
    """One adapter's ``[A, ...]`` arrays as a batch of one env copy ``[1, A, ...]``."""
    mask = None if obs.action_mask is None else obs.action_mask[None]
    return GroupObs(obs.obs[None], obs.alive[None], mask)


def eval_policy(policy: Any, cfg: Config, episodes: int) -> dict[str, Any]:
    """The evaluation protocol of training (eval seeds from ``cfg.seed``), with ``episodes`` episodes."""
    make = functools.partial(vector_env, cfg, backend="sync")
    return evaluate(policy, make, episodes, cfg.seed, deterministic=cfg.eval.deterministic,
                    num_envs=cfg.eval.num_envs)


def describe(name: str, result: Mapping[str, Any]) -> str:
    return (f"{name:>8}: team return {result['ep_return']:8.1f} ± {result['ep_return_std']:6.1f} "
            f"(per piston {result['agent_ep_return']:6.2f}), mean length {result['ep_length']:.0f} "
            f"steps, {result['episodes']} episodes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/pistonball_ppo.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. algo.lr=1e-3)")
    parser.add_argument("--total-env-steps", type=int, default=0,
                        help="training budget (0 = the config's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=0,
                        help="evaluation episodes (0 = the config's eval.episodes)")
    parser.add_argument("--throughput-steps", type=int, default=100, help="env steps of the throughput probe")
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/<config name>")
    parser.add_argument("--reuse", action="store_true", help="reuse a finished run in OUT/run")
    args = parser.parse_args()
    out = args.out or Path("bench/out") / Path(args.config).stem
    run_dir = out / "run"
    overrides = [*args.overrides, f"seed={args.seed}", f"run_dir={run_dir}", "log.progress=false"]
    if args.total_env_steps:
        overrides.append(f"total_env_steps={args.total_env_steps}")
    cfg = load_config(args.config, overrides)
    episodes = args.episodes or cfg.eval.episodes
    kwargs = cfg.env.kwargs
    print(f"{cfg.env.id} {kwargs}; frame_stack {cfg.env.frame_stack}, grayscale {cfg.env.grayscale}, "
          f"resize {cfg.env.resize}, action_repeat {cfg.env.action_repeat}; "
          f"budget {cfg.total_env_steps:,} env steps", flush=True)

    speed = env_throughput(cfg, args.throughput_steps, args.seed)
    print(f"env alone (random actions, 1 copy): {speed['env_frames_per_s']:.1f} env frames/s, "
          f"{speed['env_steps_per_s']:.1f} env steps/s, {speed['agent_steps_per_s']:.0f} agent steps/s",
          flush=True)

    probe = vector_env(cfg, 1, backend="sync")
    spec = probe.spec
    probe.close()
    random_result = eval_policy(RandomPolicy(spec, args.seed), cfg, episodes)
    print(describe("random", random_result), flush=True)

    if not (args.reuse and (run_dir / "summary.json").is_file()):
        if run_dir.exists():
            shutil.rmtree(run_dir)
        train(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    wall = summary["wall_time_s"]
    print(f"training: {summary['env_steps']:,} env steps ({summary['env_frames']:,} env frames, "
          f"{summary['agent_steps']:,} agent steps) in {wall:.0f} s = {wall / 60:.1f} min: "
          f"{summary['env_frames'] / wall:.1f} env frames/s, {summary['agent_sps']:.0f} agent steps/s",
          flush=True)

    if episodes == cfg.eval.episodes:  # the run's final evaluation used this very protocol
        trained_result = summary["final_eval"]
    else:
        policy, _, _ = load_policy(run_dir / "checkpoints" / "latest.pt")
        trained_result = eval_policy(policy, cfg, episodes)
    print(describe("trained", trained_result))
    diff = trained_result["ep_return"] - random_result["ep_return"]
    half = 1.96 * math.sqrt(trained_result["ep_return_std"] ** 2 / trained_result["episodes"]
                            + random_result["ep_return_std"] ** 2 / random_result["episodes"])
    print(f"trained - random: {diff:+.1f} team return "
          f"(95% interval {diff - half:+.1f} .. {diff + half:+.1f})")
    out.mkdir(parents=True, exist_ok=True)
    training_keys = ("env_steps", "env_frames", "agent_steps", "wall_time_s", "sps", "agent_sps",
                     "iterations", "grad_steps", "eval_history")
    result = {"config": args.config, "overrides": overrides, "env_throughput": speed, "random": random_result,
              "trained": trained_result,
              "difference": {"mean": diff, "low": diff - half, "high": diff + half},
              "training": {k: summary[k] for k in training_keys}}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
