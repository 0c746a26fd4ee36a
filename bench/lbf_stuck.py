"""How a trained LBF policy acts: the share of each action and of episodes where the players stop moving.

A value-based LBF agent can learn a Q function whose greedy action far from any food is LOAD (or a move into a
wall): in LBF an invalid action is a no-op, so a deterministic feed-forward policy in the same state repeats it
until the 50-step limit. This script plays a run's policy on fresh episodes of its own task and prints, per
action, how often it was taken, and how many episodes ended "stuck": the players' joint position took at most
``--still`` distinct values over the last 20 steps. With ``--epsilon`` a uniformly random valid action replaces
the policy's with that probability (EPyMARL evaluates LBF Q policies at 0.05). Masked runs
(``env.kwargs.action_masks=true``) are played with their masks.

    python bench/lbf_stuck.py RUN_DIR                  # greedy, 20 episodes
    python bench/lbf_stuck.py RUN_DIR --epsilon 0.05 --episodes 100
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

import numpy as np

import marl
from marl.env.make import make_raw_env

ACTIONS = ("NONE", "NORTH", "SOUTH", "WEST", "EAST", "LOAD")  # lbforaging.foraging.environment.Action
WINDOW = 20
"""The last steps of an episode looked at for movement."""


def play(policy: Any, env: Any, seed: int, epsilon: float, rng: np.random.Generator) -> tuple[float, list[int], int]:
    """One episode: ``(team return, actions taken, distinct joint positions over its last WINDOW steps)``."""
    obs, infos = env.reset(seed=seed)
    hidden = policy.initial_hidden()
    total, actions, positions = 0.0, [], []
    while env.agents:
        masks = {a: i["action_mask"] for a, i in infos.items()} if "action_mask" in infos[env.agents[0]] else None
        kwargs = {"action_masks": masks} if masks is not None else {}
        if hidden is None:
            chosen = policy.act(obs, **kwargs)
        else:
            chosen, hidden = policy.act(obs, hidden=hidden, **kwargs)
        step = {}
        for agent, action in chosen.items():
            allowed = np.flatnonzero(masks[agent]) if masks is not None else np.arange(len(ACTIONS))
            step[agent] = int(rng.choice(allowed)) if rng.random() < epsilon else int(action)
        actions += step.values()
        obs, rewards, _, _, infos = env.step(step)
        total += sum(rewards.values())
        positions.append(tuple(tuple(int(x) for x in p.position) for p in env.env.unwrapped.players))
    return total, actions, len(set(positions[-WINDOW:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory (or checkpoint) of an LBF training")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--epsilon", type=float, default=0.0, help="random valid action with this probability")
    parser.add_argument("--still", type=int, default=2, help="at most this many joint positions = stuck")
    parser.add_argument("--seed", type=int, default=100, help="first episode seed (episode k: seed + k)")
    args = parser.parse_args()
    policy = marl.load(args.run)
    cfg = policy.config
    env = make_raw_env(cfg.env.id, dict(cfg.env.kwargs))
    rng = np.random.default_rng(args.seed)
    counts: collections.Counter[int] = collections.Counter()
    returns, stuck = [], 0
    for k in range(args.episodes):
        total, actions, distinct = play(policy, env, args.seed + k, args.epsilon, rng)
        returns.append(total)
        counts.update(actions)
        stuck += distinct <= args.still
    n = sum(counts.values())
    print(f"{cfg.env.id} {dict(cfg.env.kwargs)}; {args.run}; epsilon {args.epsilon}, {args.episodes} episodes")
    print(f"team return {np.mean(returns):.3f}; stuck episodes {stuck}/{args.episodes} (at most {args.still} joint "
          f"positions over the last {WINDOW} steps)")
    print("actions: " + ", ".join(f"{name} {counts[i] / n:.0%}" for i, name in enumerate(ACTIONS)))


if __name__ == "__main__":
    main()
