"""Train on your own PettingZoo env class, defined in this script, and act with the trained policy.

``MatchBits`` below is a two-agent ``ParallelEnv``: each agent sees a random bit (one-hot) and earns 1
for choosing it. It lives in ``__main__``, so no other process can import it: ``marl.train(env=MatchBits)``
still trains (the class is pickled by value for the worker processes of the subprocess backend) and
records ``env.id: unimportable:__main__:MatchBits``; ``config.yaml`` and ``summary.json`` say that the
class must be passed again (``env=MatchBits``) to resume or evaluate the run from another process. A
class in an importable module is recorded as ``module:MatchBits`` and needs nothing more.
::

    python examples/custom_env.py                 # 20k env steps
    python examples/custom_env.py --steps 400
"""

from __future__ import annotations

import argparse
from typing import ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

import marl


class MatchBits(ParallelEnv):
    """Each agent sees a random bit as a one-hot pair and earns 1 for choosing it; ``max_steps`` steps per episode."""

    metadata: ClassVar[dict] = {"name": "match_bits_v0"}

    def __init__(self, max_steps: int = 10, render_mode: str | None = None) -> None:
        self.possible_agents = ["bit_0", "bit_1"]
        self.agents: list[str] = []
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.np_random = np.random.default_rng()

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (2,), np.float32)

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(2)

    def _observe(self) -> dict[str, np.ndarray]:
        self.bits = self.np_random.integers(0, 2, len(self.possible_agents))
        return {a: np.eye(2, dtype=np.float32)[b] for a, b in zip(self.possible_agents, self.bits, strict=True)}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        self.agents, self.t = list(self.possible_agents), 0
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        rewards = {a: float(actions[a] == b) for a, b in zip(self.possible_agents, self.bits, strict=True)}
        self.t += 1
        done = self.t >= self.max_steps
        obs = self._observe()
        terms, truncs = dict.fromkeys(self.agents, False), dict.fromkeys(self.agents, done)
        infos = {a: {} for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="total_env_steps")
    parser.add_argument("--out", default="runs/examples/custom_env", help="run directory")
    args = parser.parse_args()
    config = {"algo": {"name": "ppo", "num_steps": 50, "num_minibatches": 2, "update_epochs": 4},
              "env": {"num_envs": 4, "backend": "subprocess", "num_workers": 2, "kwargs": {"max_steps": 10}},
              "eval": {"episodes": 5}}
    run = marl.train(config, env=MatchBits, total_env_steps=args.steps, run_dir=args.out)
    print(f"env.id recorded as {run.config.env.id!r}")
    print(f"note: {run.summary.get('env_note', '-')}")
    print(f"final eval team return {run.final_return:.2f} (the best possible is {2 * 10})")

    policy = marl.load(run.run_dir)  # same process: MatchBits is known; elsewhere pass env=MatchBits
    env = MatchBits(max_steps=10)
    obs, _ = env.reset(seed=0)
    total = 0.0
    while env.agents:
        obs, rewards, _, _, _ = env.step(policy.act(obs))
        total += sum(rewards.values())
    print(f"one episode with the loaded policy: team return {total:.0f}")


if __name__ == "__main__":  # the subprocess backend starts worker processes (forkserver)
    main()
