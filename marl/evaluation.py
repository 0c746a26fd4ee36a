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
  as ``mean_<name>``.

With ``opponent="random"`` (multi-agent envs, e.g. turn-based board games) the
policy controls one seat per episode, rotating over the agents (seat ``(copy +
episode) mod n_agents``), and every other agent takes uniformly random allowed
actions. Added fields: ``win_rate``, ``draw_rate``, ``loss_rate`` (the controlled
agent's episode return > 0, == 0, < 0, as in ±1 games) and ``mean_learner_return``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import torch

from marl.multi_agent.policy import ActOutput
from marl.types import EnvSpec, EpisodeStats, GroupObs


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


def random_actions(spec: EnvSpec, obs: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Uniformly random allowed actions ``[E, A, ...]`` for every group."""
    out = {}
    for g in spec.groups:
        o = obs[g.name]
        lead = o.alive.shape
        if g.discrete:
            n = int(g.action_space.n)
            allowed = np.ones((*lead, n), bool) if o.action_mask is None else o.action_mask.astype(bool)
            allowed = allowed | ~allowed.any(-1, keepdims=True)  # no allowed action: any (agent is not acting)
            scores = rng.random((*lead, n)) * allowed
            out[g.name] = scores.argmax(-1).astype(np.int64)
        else:
            low, high = g.action_space.low, g.action_space.high
            out[g.name] = rng.uniform(low, high, size=(*lead, *low.shape)).astype(np.float32)
    return out


class ActingPolicy(Protocol):
    """What :func:`evaluate` needs of a policy: :meth:`marl.multi_agent.policy.Policy.act`'s signature
    (``Policy``, the off-policy actor, and wrapped baselines in ``bench/`` all provide it). A ``device``
    attribute is optional (default: CPU)."""

    def act(
        self,
        obs: Mapping[str, GroupObs],
        state: np.ndarray | None = None,
        deterministic: bool = False,
        update_stats: bool = False,
        with_value: bool = True,
    ) -> ActOutput: ...


def evaluate(
    policy: ActingPolicy,
    make_env: Callable[[int], Any],
    episodes: int,
    seed: int,
    deterministic: bool = True,
    num_envs: int = 1,
    max_steps: int = 1_000_000,
    opponent: str = "none",
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
        opponent: ``"none"`` (the policy controls every agent) or ``"random"``
            (one seat per episode; see the module doc).
    """
    from marl.env.vector import eval_seeds

    num_envs = max(1, min(num_envs, episodes))
    quota = [episodes // num_envs + (1 if i < episodes % num_envs else 0) for i in range(num_envs)]
    done_count = [0] * num_envs
    finished: list[EpisodeStats] = []
    learner_returns: list[float] = []
    venv = make_env(num_envs)
    try:
        spec = venv.spec
        if opponent not in ("none", "random"):
            raise ValueError(f"opponent must be 'none' or 'random', got {opponent!r}")
        if opponent == "random" and spec.n_agents < 2:
            raise ValueError("opponent='random' needs a multi-agent env; this env has one agent")
        seats = [(g.name, i, a) for g in spec.groups for i, a in enumerate(g.agents)]
        started = [0] * num_envs  # episodes started per copy (rotates the learner's seat)
        seeds = eval_seeds(seed, num_envs + 1)  # disjoint from the training copies' seeds
        rng = np.random.default_rng(seeds[-1])
        obs, state = venv.reset(seeds[:num_envs])
        # Sampled actions draw from a torch RNG seeded here: a stochastic evaluation is reproducible
        # and leaves the caller's (training) RNG stream untouched.
        device = torch.device(getattr(policy, "device", "cpu"))  # duck-typed policies (e.g. a wrapped baseline) may have none
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seeds[-1])
            for _ in range(max_steps):
                out = policy.act(obs, state, deterministic=deterministic, update_stats=False, with_value=False)
                actions = out.env_action
                if opponent == "random":
                    actions = random_actions(spec, obs, rng)
                    for e in range(num_envs):
                        group, i, _ = seats[(e + started[e]) % len(seats)]
                        actions[group][e, i] = out.env_action[group][e, i]
                step = venv.step(actions)
                for ep in step.episodes:
                    e = ep.env_index
                    if done_count[e] < quota[e]:
                        done_count[e] += 1
                        finished.append(ep)
                        if opponent == "random":
                            learner_returns.append(ep.returns[seats[(e + started[e]) % len(seats)][2]])
                    started[e] += 1
                obs, state = step.obs, step.state
                if sum(done_count) >= episodes:
                    break
    finally:
        venv.close()
    result = summarize(finished, spec)
    if opponent == "random":
        r = np.array(learner_returns)
        result.update(win_rate=float((r > 0).mean()), draw_rate=float((r == 0).mean()),
                      loss_rate=float((r < 0).mean()), mean_learner_return=float(r.mean()), opponent="random")
    return result
