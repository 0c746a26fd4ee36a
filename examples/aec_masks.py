"""A turn-based (AEC) game with action masks: tic-tac-toe in self-play, then played against a random opponent.

Training uses ``configs/tictactoe_ppo.yaml``: one shared network for both seats (one-hot seat id), illegal
moves masked out of the action distribution. The game is then played in a plain PettingZoo AEC loop: the
policy gets one agent's observation (``{"observation", "action_mask"}``, as ``env.last()`` returns it) with
``agent=`` the seat to move, and never returns a masked move::

    python examples/aec_masks.py                # 200k env steps
    python examples/aec_masks.py --steps 2000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pettingzoo.classic import tictactoe_v3

import marl

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tictactoe_ppo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200_000, help="total_env_steps")
    parser.add_argument("--out", default="runs/examples/tictactoe", help="run directory")
    parser.add_argument("--games", type=int, default=50)
    args = parser.parse_args()
    run = marl.train(CONFIG, total_env_steps=args.steps, run_dir=args.out, eval__episodes=20)
    print(f"win rate against a random player in training's evaluation: {run.summary['final_eval']['win_rate']:.2f}")

    policy = marl.load(run.run_dir)
    env = tictactoe_v3.env()
    rng = np.random.default_rng(0)
    wins = draws = 0
    for game in range(args.games):
        env.reset(seed=game)
        learner = env.possible_agents[game % 2]  # alternate who moves first
        for agent in env.agent_iter():
            obs, reward, terminated, truncated, _ = env.last()
            if terminated or truncated:
                if agent == learner:
                    wins += reward > 0
                    draws += reward == 0
                action = None
            elif agent == learner:
                action = policy.act(obs, agent=agent)
                assert obs["action_mask"][action], "a masked move"
            else:
                action = int(rng.choice(np.flatnonzero(obs["action_mask"])))
            env.step(action)
    print(f"{args.games} games against a random player: {wins} wins, {draws} draws, "
          f"{args.games - wins - draws} losses; no illegal move")


if __name__ == "__main__":
    main()
