"""Deterministic evaluation on fresh, separately seeded env copies.

Evaluation never touches the training envs: it builds its own vector env, seeds
its copies with :func:`marl.env.eval_seeds` (disjoint from the training seeds),
freezes the normalizer statistics, and takes the mode of the action distribution
(``deterministic=True``). Episodes are spread evenly over the env copies and each
copy contributes its first episodes only, so short episodes are not over-sampled.

Reported fields (``marl eval --json`` prints them):

* ``ep_return`` / ``ep_return_std``: episode return summed over agents (team return),
  mean and std over episodes;
* ``agent_ep_return``: the team return divided by the number of agents;
* ``per_agent``: agent -> mean return; ``per_group``: group -> mean per-agent return;
* ``ep_length``: env steps per episode; ``episodes``: how many were run;
* ``success_rate`` when the env reports ``is_success``; other numeric episode infos
  under their own name, mean over episodes (as ``rollout/<name>`` in training).

With ``opponent="random"`` (multi-agent envs, e.g. turn-based board games) the
policy controls one seat per episode, rotating over the agents (seat ``(copy +
episode) mod n_agents``), and every other agent takes uniformly random allowed
actions. Added fields: ``win_rate``, ``draw_rate``, ``loss_rate`` (the controlled
agent's episode return > 0, == 0, < 0, as in ±1 games) and ``learner_ep_return``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from marl.env.vector import VectorEnv
from marl.loop import EnvLoop, episode_ends, reset_hidden
from marl.seeding import eval_seeds
from marl.types import ActingPolicy, ActOutput, EnvSpec, EpisodeStats, GroupObs


def summarize(episodes: list[EpisodeStats], spec: EnvSpec) -> dict[str, Any]:
    """Aggregate finished episodes into the evaluation fields (see module doc)."""
    if not episodes:
        raise ValueError("no episode finished; raise eval.episodes or check the env's time limit")
    team = np.array([sum(e.returns.values()) for e in episodes], np.float64)
    per_agent = {a: float(np.mean([e.returns.get(a, 0.0) for e in episodes])) for a in spec.agents}
    per_group = {g.name: float(np.mean([per_agent[a] for a in g.agents])) for g in spec.groups}
    out: dict[str, Any] = {
        "ep_return": float(team.mean()),
        "ep_return_std": float(team.std()),
        "agent_ep_return": float(team.mean() / spec.n_agents),
        "per_agent": per_agent,
        "per_group": per_group,
        "ep_length": float(np.mean([e.length for e in episodes])),
        "episodes": len(episodes),
    }
    keys = sorted({k for e in episodes for k in e.info})
    for k in keys:
        vals = [e.info[k] for e in episodes if k in e.info]
        name = "success_rate" if k == "is_success" else (f"{k}_rate" if k in ("win", "draw", "loss") else k)
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


class RandomPolicy:
    """Uniformly random allowed actions (:func:`random_actions`): the baseline of ``marl eval --random``.

    Args:
        spec: the env.
        seed: seed of its generator (one draw per decision, reproducible).
    """

    def __init__(self, spec: EnvSpec, seed: int) -> None:
        self.spec = spec
        self.rng = np.random.default_rng([seed, 2])

    def act(self, obs: Mapping[str, GroupObs], state: np.ndarray | None = None, deterministic: bool = False,
            update_stats: bool = False, with_value: bool = True) -> ActOutput:
        return ActOutput({}, random_actions(self.spec, dict(obs), self.rng), {}, {}, {}, {})

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class EvaluationStopped(Exception):
    """An evaluation ended early because its ``should_stop`` said so (a stop signal during evaluation)."""


class EpisodeRun(NamedTuple):
    """What :func:`run_episodes` played.

    Attributes:
        episodes: the finished episodes counted (each copy's first ones, up to its quota), in finishing order.
        learner_returns: with ``opponent="random"``, the controlled seat's return in each counted episode.
    """

    episodes: list[EpisodeStats]
    learner_returns: list[float]


def run_episodes(
    policy: ActingPolicy,
    venv: VectorEnv,
    episodes: int,
    seeds: list[int],
    deterministic: bool = True,
    max_steps: int = 1_000_000,
    opponent: str = "none",
    should_stop: Callable[[], bool] | None = None,
) -> EpisodeRun:
    """Play ``episodes`` episodes of ``policy`` on ``venv`` (reset here with ``seeds[:E]``), through :class:`EnvLoop`.

    Episodes are spread evenly over the env copies and each copy contributes its first
    episodes only, so short episodes are not over-sampled. Sampled actions draw from a torch
    RNG seeded with ``seeds[E]`` inside a forked RNG state: a stochastic run is reproducible and
    leaves the caller's (training) RNG stream untouched; ``seeds[E]`` also seeds the random
    opponent. Normalizer statistics stay frozen.

    Recurrent policies (with ``initial_hidden``) carry their hidden state from step to step, zeroed
    for an agent after the step its episode or life ends.

    ``should_stop`` is asked before every vector step: a stop request (e.g. SIGTERM) ends the
    evaluation within one step instead of after its last episode.

    Raises:
        ValueError: an unknown ``opponent``, ``"random"`` on a one-agent env, or fewer than
            ``episodes`` episodes within ``max_steps`` vector steps.
        EvaluationStopped: ``should_stop()`` became true.
    """
    num_envs = venv.num_envs
    spec = venv.spec
    if opponent not in ("none", "random"):
        raise ValueError(f"opponent must be 'none' or 'random', got {opponent!r}")
    if opponent == "random" and spec.n_agents < 2:
        raise ValueError("opponent='random' needs a multi-agent env; this env has one agent")
    quota = [episodes // num_envs + (1 if i < episodes % num_envs else 0) for i in range(num_envs)]
    done_count = [0] * num_envs
    run = EpisodeRun([], [])
    seats = [(g.name, i, a) for g in spec.groups for i, a in enumerate(g.agents)]
    started = [0] * num_envs  # episodes started per copy (rotates the learner's seat)
    rng = np.random.default_rng(seeds[num_envs])

    # recurrent policies: hidden state per copy and agent, zeroed when an agent's episode or life ends
    initial_hidden = getattr(policy, "initial_hidden", None)
    hidden = None if initial_hidden is None else initial_hidden(num_envs)

    def act(obs: dict[str, GroupObs], state: np.ndarray | None) -> ActOutput:
        if hidden is None:
            out = policy.act(obs, state, deterministic=deterministic, update_stats=False, with_value=False)
        else:
            out = policy.act(obs, state, deterministic=deterministic, update_stats=False, with_value=False,
                             hidden=hidden)
        if opponent != "random":
            return out
        actions = random_actions(spec, obs, rng)
        for e in range(num_envs):
            group, i, _ = seats[(e + started[e]) % len(seats)]
            actions[group][e, i] = out.env_action[group][e, i]
        return out._replace(env_action=actions)

    loop = EnvLoop(venv)
    # duck-typed policies (e.g. a wrapped baseline) may have none
    device = torch.device(getattr(policy, "device", "cpu"))
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seeds[num_envs])
        loop.reset(seeds[:num_envs])
        for _ in range(max_steps):
            if should_stop is not None and should_stop():
                raise EvaluationStopped(f"stopped after {len(run.episodes)} of {episodes} episodes")
            _, out, step = loop.step(act)
            if hidden is not None:
                hidden = reset_hidden(out.hidden, episode_ends(step))
            for ep in step.episodes:
                e = ep.env_index
                if done_count[e] < quota[e]:
                    done_count[e] += 1
                    run.episodes.append(ep)
                    if opponent == "random":
                        run.learner_returns.append(ep.returns[seats[(e + started[e]) % len(seats)][2]])
                started[e] += 1
            if sum(done_count) >= episodes:
                return run
    raise ValueError(f"{episodes} episode(s) did not finish within {max_steps} vector steps; "
                     "check the env's time limit or raise max_steps")


def evaluate(
    policy: ActingPolicy,
    make_env: Callable[[int], Any],
    episodes: int,
    seed: int,
    deterministic: bool = True,
    num_envs: int = 1,
    max_steps: int = 1_000_000,
    opponent: str = "none",
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run ``episodes`` evaluation episodes on a fresh vector env; return :func:`summarize` of them.

    Args:
        policy: acts with frozen normalizer statistics.
        make_env: ``num_envs -> VectorEnv`` factory (a fresh vector env, closed here).
        episodes: episodes to run.
        seed: the experiment seed; env copies get ``eval_seeds(seed, ...)`` (disjoint from training).
        deterministic: take the distribution's mode.
        num_envs: eval env copies (at most ``episodes``).
        max_steps: safety bound on vector steps.
        opponent: ``"none"`` (the policy controls every agent) or ``"random"``
            (one seat per episode; see the module doc).
        should_stop: asked before every vector step; true ends the evaluation (:class:`EvaluationStopped`).
    """
    num_envs = max(1, min(num_envs, episodes))
    venv = make_env(num_envs)
    try:
        run = run_episodes(policy, venv, episodes, eval_seeds(seed, num_envs + 1), deterministic, max_steps, opponent,
                           should_stop)
        spec = venv.spec
    finally:
        venv.close()
    result = summarize(run.episodes, spec)
    if opponent == "random":
        r = np.array(run.learner_returns)
        result.update(win_rate=float((r > 0).mean()), draw_rate=float((r == 0).mean()),
                      loss_rate=float((r < 0).mean()), learner_ep_return=float(r.mean()), opponent="random")
    return result
