"""Single-agent Gymnasium: PPO on CartPole-v1 (a one-agent, one-group multi-agent env to marl).

Shows ``marl.train`` with a dict config (nested as YAML would give it) and the env as a Gymnasium id,
then a plain Gymnasium loop with the loaded policy: ``policy.act(obs)`` takes the Gymnasium observation
and returns the action::

    python examples/gymnasium_single_agent.py              # 50k env steps
    python examples/gymnasium_single_agent.py --steps 512
"""

from __future__ import annotations

import argparse

import gymnasium

import marl

CONFIG = {  # configs/cartpole_ppo.yaml, written in Python
    "env": {"num_envs": 8},
    "algo": {"name": "ppo", "lr": 1e-3, "num_steps": 32, "num_minibatches": 1, "update_epochs": 20,
             "gamma": 0.98, "gae_lambda": 0.8, "anneal_clip": True, "ent_coef": 0.0, "vf_coef": 1.0},
    "norm": {"obs": False, "reward": False},
    "eval": {"interval": 10_000, "episodes": 10},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50_000, help="total_env_steps")
    parser.add_argument("--out", default="runs/examples/cartpole", help="run directory")
    args = parser.parse_args()
    run = marl.train(CONFIG, env="CartPole-v1", total_env_steps=args.steps, run_dir=args.out)
    print(f"final eval return {run.final_return:.1f}, best {run.summary['best_eval']['ep_return']:.1f}")

    policy = marl.load(run.run_dir)
    env = gymnasium.make("CartPole-v1")
    obs, _ = env.reset(seed=123)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
        total += float(reward)
        done = terminated or truncated
    print(f"one episode in a plain Gymnasium loop: return {total:.0f}")


if __name__ == "__main__":
    main()
