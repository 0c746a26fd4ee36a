"""Deterministic evaluation on fresh, separately seeded env copies.

Evaluation never touches the training envs: it builds its own vector env, seeds
its copies with :func:`marl.env.eval_seeds` (disjoint from the training seeds),
freezes the normalizer statistics, and takes the mode of the action distribution
(``deterministic=True``). Episodes are spread evenly over the env copies and each
copy contributes its first episodes only, so short episodes are not over-sampled.

Reported fields (``marl eval --json`` prints them):

* ``mean_return`` / ``std_return``: episode return summed over agents (team return),
  mean and std over episodes;
* ``mean_agent_return``: the team return divided by the number of agents;
* ``per_agent``: agent -> mean return; ``per_group``: group -> mean per-agent return;
* ``mean_length``: env steps per episode; ``episodes``: how many were run;
* ``success_rate`` when the env reports ``is_success``; other numeric episode infos
  (e.g. ``win``) as ``<name>_rate``/means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from marl.multi_agent.policy import Policy
from marl.types import EnvSpec, EpisodeStats


def summarize(episodes: list[EpisodeStats], spec: EnvSpec) -> dict[str, Any]:
    """Aggregate finished episodes into the evaluation fields (see module doc)."""
    if not episodes:
        raise ValueError("no episode finished; raise eval.episodes or check the env's time limit")
    team = np.array([sum(e.returns.values()) for e in episodes], np.float64)
    per_agent = {a: float(np.mean([e.returns.get(a, 0.0) for e in episodes])) for a in spec.agents}
    per_group = {g.name: float(np.mean([per_agent[a] for a in g.agents])) for g in spec.groups}
    out: dict[str, Any] = {
        "mean_return": float(team.mean()),
        "std_return": float(team.std()),
        "mean_agent_return": float(team.mean() / spec.n_agents),
        "per_agent": per_agent,
        "per_group": per_group,
        "mean_length": float(np.mean([e.length for e in episodes])),
        "episodes": len(episodes),
    }
    keys = sorted({k for e in episodes for k in e.info})
    for k in keys:
        vals = [e.info[k] for e in episodes if k in e.info]
        name = "success_rate" if k == "is_success" else (f"{k}_rate" if k in ("win", "draw", "loss") else f"mean_{k}")
        out[name] = float(np.mean(vals))
    return out


def evaluate(
    policy: Policy,
    make_env: Callable[[int], Any],
    episodes: int,
    seed: int,
    deterministic: bool = True,
    num_envs: int = 1,
    max_steps: int = 1_000_000,
) -> dict[str, Any]:
    """Run ``episodes`` evaluation episodes; return :func:`summarize` of them.

    Args:
        policy: acts with frozen normalizer statistics.
        make_env: ``num_envs -> VectorEnv`` factory (a fresh vector env).
        episodes: episodes to run.
        seed: the experiment seed; env copies get ``eval_seeds(seed, ...)``.
        deterministic: take the distribution's mode.
        num_envs: eval env copies (at most ``episodes``).
        max_steps: safety bound on vector steps.
    """
    from marl.env.vector import eval_seeds

    num_envs = max(1, min(num_envs, episodes))
    quota = [episodes // num_envs + (1 if i < episodes % num_envs else 0) for i in range(num_envs)]
    done_count = [0] * num_envs
    finished: list[EpisodeStats] = []
    venv = make_env(num_envs)
    try:
        obs, state = venv.reset(int(eval_seeds(seed, 1)[0]))
        for _ in range(max_steps):
            out = policy.act(obs, state, deterministic=deterministic, update_stats=False, with_value=False)
            step = venv.step(out.env_action)
            for ep in step.episodes:
                if done_count[ep.env_index] < quota[ep.env_index]:
                    done_count[ep.env_index] += 1
                    finished.append(ep)
            obs, state = step.obs, step.state
            if sum(done_count) >= episodes:
                break
    finally:
        venv.close()
    return summarize(finished, venv.spec)
