"""Load a trained policy and run it in a plain PettingZoo loop: no marl vector envs, no marl adapters.

``marl.load(run_dir)`` gives a policy whose ``act`` takes the dict of per-agent observations of a
PettingZoo parallel env and returns the dict of actions, with the run's grouping, agent order and
observation normalization (frozen statistics) applied. Agents missing from the dict count as not alive.
::

    python examples/deploy_policy.py --run runs/simple_spread_v3-ppo-seed0-...   # a finished run
    python examples/deploy_policy.py --steps 3200                                # train a small one first
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mpe2 import simple_spread_v3

import marl

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "simple_spread_ppo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="", help="a run directory or checkpoint (default: train one)")
    parser.add_argument("--steps", type=int, default=50_000, help="total_env_steps when training one here")
    parser.add_argument("--out", default="runs/examples/deploy", help="run directory when training one here")
    parser.add_argument("--episodes", type=int, default=3)
    args = parser.parse_args()
    run_dir = args.run or marl.train(CONFIG, total_env_steps=args.steps, run_dir=args.out, env__backend="sync").run_dir

    policy = marl.load(run_dir, device="cpu")
    print(policy)
    env = simple_spread_v3.parallel_env(N=3, local_ratio=0.5, max_cycles=25, continuous_actions=False)
    for episode in range(args.episodes):
        observations, _ = env.reset(seed=1000 + episode)
        team_return = 0.0
        while env.agents:
            actions = policy.act(observations)  # {agent: action}; deterministic=False samples instead
            observations, rewards, _, _, _ = env.step(actions)
            team_return += sum(rewards.values())
        print(f"episode {episode}: team return {team_return:.2f}")
    env.close()
    # policy.make_env() builds the run's own env (id, kwargs and preprocessing) as a plain PettingZoo env


if __name__ == "__main__":
    main()
