"""Joint (team) transitions for value decomposition (VDN, QMIX): replay, batches and the trainer.

A **team row** is one env step of one env copy holding every agent of every group: the rows of
the groups' replays (:func:`marl.off_policy.replay.replay_rows`, ``[A_g, ...]`` each) written in
lockstep, so the same flat index names the same env step in every group's replay. The first
group's replay also stores the global state ``state, next_state [S]`` (the env's ``state()``;
``next_state`` is the final state where the episode ended) when the mixer reads it, samples the
rows (uniform or prioritized) and keeps the PER priorities of the team's TD errors; the other
groups' rows are gathered at the same indices.

Several groups form **one team** (e.g. a speaker and a listener): their agents are mixed
together in group order. An n-step window (``algo.n_step``) is cut where an agent of any group
ends, so every group's n-step fields cover the same rows (:func:`team_nstep_targets`).

:class:`TeamTrainer` is :class:`marl.off_policy.OffPolicyTrainer` with team rows: acting,
exploration (per-agent epsilon-greedy over allowed actions), evaluation, checkpoints, resume
(with ``algo.save_replay``, the groups' replays) and logging are those of DQN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from marl.algos.value_decomposition import GroupRows, TeamBatch, ValueDecompositionLearner, build_mixer, team_agents
from marl.config import Config, ConfigError, QMIXConfig, VDNConfig
from marl.data import ReplayBuffer, ReplaySample, nstep_return, per_beta_at, replay_schema
from marl.multi_agent.groups import is_image
from marl.normalization import ObsNormalizer
from marl.off_policy.actor import build_actor
from marl.off_policy.replay import replay_buffer, replay_rows
from marl.off_policy.trainer import MetricWindow, OffPolicyTrainer
from marl.types import ActOutput, EnvSpec, EpisodeStats, GroupObs, GroupTransition, VecStep


def stores_state(spec: EnvSpec, algo: VDNConfig) -> bool:
    """Whether team rows carry the env's global state: QMIX on the env state, for an env that has one."""
    return isinstance(algo, QMIXConfig) and algo.state == "env" and spec.state_shape is not None


def mixer_state_dim(spec: EnvSpec, algo: VDNConfig) -> int:
    """Width ``S`` of the mixer's state: the env's state, or every agent's observation concatenated.

    Raises:
        ConfigError: QMIX without an env state on image observations (too wide to concatenate).
    """
    if stores_state(spec, algo):
        return int(np.prod(spec.state_shape))
    total = 0
    for g in spec.groups:
        if isinstance(algo, QMIXConfig) and is_image(g.obs_space.shape, g.obs_space.dtype):
            raise ConfigError(f"algo.state: QMIX needs a global state; this env has none and group {g.name!r} sees "
                              "images (too wide to concatenate). Use algo.name=vdn")
        total += g.n_agents * int(np.prod(g.obs_space.shape))
    return total


def build_team_replays(spec: EnvSpec, cfg: Config) -> dict[str, ReplayBuffer]:
    """One replay per group, written in lockstep; the first samples (uniform or PER, n-step) and holds the state."""
    algo: VDNConfig = cfg.algo
    n_envs = cfg.env.num_envs
    capacity = algo.buffer_size - algo.buffer_size % n_envs
    out: dict[str, ReplayBuffer] = {}
    for k, g in enumerate(spec.groups):
        if k > 0:
            out[g.name] = ReplayBuffer(replay_schema(g), capacity, n_envs, n_step=algo.n_step, gamma=algo.gamma)
            continue
        schema = replay_schema(g, tuple(spec.state_shape) if stores_state(spec, algo) else None)
        out[g.name] = replay_buffer(schema, capacity, n_envs, algo)
    return out


def episode_ended(before: Mapping[str, GroupObs], transition: Mapping[str, GroupTransition]) -> np.ndarray:
    """``[E]`` bool: the env copy's episode ended at this step (every agent that acted ended; others were gone)."""
    parts = [(tr.terminated | tr.truncated | ~before[g].alive).all(axis=-1) for g, tr in transition.items()]
    return np.logical_and.reduce(parts)


def team_nstep_targets(replays: Mapping[str, ReplayBuffer], indices: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Every group's n-step fields (``reward_n, discount_n, <next field>_n``) of rows ``indices [B]`` over one window
    per row: ``n'`` rows, cut at the first row where an agent of *any* group is terminated or truncated
    (:func:`marl.data.nstep_lengths` of the groups' ends or-ed together)."""
    windows = {g: buf.nstep_window(indices) for g, buf in replays.items()}
    ends = np.logical_or.reduce([w[2] for w in windows.values()])
    lengths = next(iter(replays.values())).nstep_lengths(indices, ends)
    return {g: buf.nstep_target(indices, lengths) for g, buf in replays.items()}


def team_samples(replays: Mapping[str, ReplayBuffer], batch_size: int, rng: np.random.Generator,
                 beta: float | None) -> tuple[ReplaySample, dict[str, dict[str, np.ndarray]]]:
    """Sample B team rows: the first group's :class:`ReplaySample` and every group's fields at those rows.

    With several groups and n-step targets, every group's window is cut at the first row where an agent of any
    group ends
    (:func:`team_nstep_targets`), the first group's sample included.

    Returns:
        ``(first, rows)``: ``rows[g]`` maps ``obs, action, reward_n, next_obs_n, terminated_n, alive,
        next_alive_n`` (and the masks when stored) to ``[B, A_g, ...]`` arrays.
    """
    names = list(replays)
    first = replays[names[0]].sample(batch_size, rng, beta)
    nstep = len(names) > 1 and replays[names[0]].n_step > 1
    targets = team_nstep_targets(replays, first.indices) if nstep else {}
    if nstep:
        first = first._replace(**targets[names[0]])
    rows = {names[0]: {k: getattr(first, k) for k in GroupRows._fields}}
    for g in names[1:]:
        d = replays[g].storage.gather_all(first.indices)
        d.update(targets.get(g) or {"reward_n": d["reward"], "next_obs_n": d["next_obs"],
                                     "terminated_n": d["terminated"], "next_alive_n": d["next_alive"],
                                     "next_action_mask_n": d.get("next_action_mask")})
        rows[g] = {"obs": d["obs"], "action": d["action"], "reward_n": d["reward_n"], "next_obs_n": d["next_obs_n"],
                   "terminated_n": d["terminated_n"], "alive": d["alive"], "next_alive_n": d["next_alive_n"],
                   "action_mask": d.get("action_mask"), "next_action_mask_n": d.get("next_action_mask_n")}
    return first, rows


def team_episode_returns(replays: Mapping[str, ReplayBuffer], indices: np.ndarray, horizon: int, gamma: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Monte-Carlo discounted team return from each sampled row to the end of its episode.

    For row ``t`` of a lane, with ``r_tot[k] = sum over groups and agents of alive * reward`` of row ``t + k``::

        G = sum_{k <= K} gamma**k * r_tot[k],   K = the first k at which the team's episode ends

    where the episode ends at a row in which every agent that acted is terminated or truncated (a time limit,
    or a lane cut by :meth:`marl.data.ReplayBuffer.cut`, ends it too: G is then the return up to that row).
    Only rows already written count: a row whose episode has not ended within ``horizon`` written rows
    (or not ended yet) is not ``complete`` and its ``G`` is partial.

    Args:
        replays: the team's replays (written in lockstep; the same flat index in each).
        indices: ``[B]`` flat row indices (``ReplaySample.indices``).
        horizon: rows looked ahead, the row itself included (``>= 1``).
        gamma: discount factor.

    Returns:
        ``(G [B] float32, steps [B] int64, complete [B] bool)``: ``steps = K + 1`` rows summed.
    """
    storage = next(iter(replays.values())).storage
    slots, lanes = storage.unravel(np.asarray(indices, dtype=np.int64))
    ahead = np.arange(horizon)[:, None]  # [H, 1]
    window = ((slots[None, :] + ahead) % storage.lane_length) * storage.n_envs + lanes[None, :]  # [H, B]
    flat = window.reshape(-1)
    reward: Any = 0.0
    ended = np.ones(window.shape, dtype=bool)
    for buf in replays.values():
        d = buf.storage.gather_fields(("reward", "alive", "terminated", "truncated"), flat)
        alive = d["alive"].astype(bool).reshape(*window.shape, -1)
        reward = reward + (d["reward"].reshape(*window.shape, -1) * alive).sum(axis=-1)
        done = (d["terminated"] | d["truncated"]).astype(bool).reshape(*window.shape, -1)
        ended &= (done | ~alive).all(axis=-1)
    written = ahead <= storage.steps_ahead(slots, lanes)[None, :]  # [H, B]
    ends = ended & written
    complete = ends.any(axis=0)
    last = np.where(complete, ends.argmax(axis=0), np.minimum(horizon - 1, storage.steps_ahead(slots, lanes)))
    steps = (last + 1).astype(np.int64)
    returns, _ = nstep_return(reward, steps, gamma)  # the discounted sum over each row's window
    return returns, steps, complete


def team_rows(names: Sequence[str], obs: Mapping[str, GroupObs], out: ActOutput, step: VecStep,
              state: np.ndarray | None, with_state: bool) -> dict[str, dict[str, np.ndarray]]:
    """One vector step's rows of every group (``replay_rows``); with ``with_state`` the first group's also carry
    the state acted on and the next state (the final state where the episode ended)."""
    episode_end = episode_ended(obs, step.transition)
    rows = {g: replay_rows(obs[g], out.action[g].cpu().numpy(), step.transition[g], step.obs[g], None, None,
                           episode_end) for g in names}
    if with_state:
        first = rows[names[0]]
        first["state"], first["next_state"] = state, np.where(episode_end[:, None], step.final_state, step.state)
    return rows


def team_reward_and_decisions(obs: Mapping[str, GroupObs], step: VecStep) -> tuple[np.ndarray, int]:
    """``[E]`` team reward of the step (alive agents of every group) and the number of agent decisions taken."""
    reward: Any = 0.0
    decisions = 0
    for g, o in obs.items():
        reward = reward + (step.transition[g].reward * o.alive).sum(axis=-1)
        decisions += int(o.alive.sum())
    return reward, decisions


def to_team_batch(first: ReplaySample, rows: Mapping[str, Mapping[str, np.ndarray | None]],
                  norms: Mapping[str, ObsNormalizer], device: torch.device,
                  returns: tuple[np.ndarray, np.ndarray] | None = None) -> TeamBatch:
    """Team rows as tensors on ``device``, observations normalized with the groups' frozen statistics;
    ``returns``: ``(G [B], complete [B])`` of :func:`team_episode_returns` (``algo.return_reg``,
    ``algo.return_stats=returns``)."""

    def t(x: np.ndarray | None) -> Tensor | None:
        return None if x is None else torch.as_tensor(x, device=device)

    groups = {}
    for g, d in rows.items():
        norm = norms.get(g)
        obs = {k: d[k] if norm is None else norm.normalize(d[k]) for k in ("obs", "next_obs_n")}
        groups[g] = GroupRows(**{k: t(obs[k]) if k in obs else t(d[k]) for k in GroupRows._fields})
    episode_return, complete = (None, None) if returns is None else returns
    return TeamBatch(groups, t(first.discount_n), t(first.weights), t(first.state), t(first.next_state_n),
                     t(episode_return), t(complete))


def warn_if_beyond_horizon(episodes: Sequence[EpisodeStats], horizon: int) -> bool:
    """Warn (once: returns whether it did) when an episode ran longer than ``algo.return_horizon`` env steps: its rows
    more than ``horizon`` steps before the end get no Monte-Carlo return, so ``algo.return_reg`` and
    ``algo.return_stats=returns`` see only episode tails."""
    longest = max(e.length for e in episodes)
    if longest <= horizon:
        return False
    warnings.warn(f"an episode ran {longest} env steps, more than algo.return_horizon={horizon}: the rows of its "
                  f"first {longest - horizon} steps get no Monte-Carlo return, so algo.return_reg / "
                  f"algo.return_stats=returns see only episode tails; set algo.return_horizon to the episode limit",
                  stacklevel=2)
    return True


class TeamTrainer(OffPolicyTrainer):
    """Trains VDN or QMIX: per-agent Q networks (the acting policy, greedy per agent), a mixer, team rows.

    The loop, counters, checkpoints and reports are :class:`OffPolicyTrainer`'s; what differs is
    what is stored (team rows with the global state, :func:`build_team_replays`), what is sampled
    (the same rows of every group, :func:`team_samples`) and the learner
    (:class:`marl.algos.value_decomposition.ValueDecompositionLearner`). The health monitor bounds
    ``train/q_mean`` (here the team value) by the largest team reward seen (key ``team``).
    """

    supports_distributed = False  # the team replays and the mixer's all-reduce are not built for torchrun yet
    turns = None  # turn-based games are refused (value decomposition is for cooperative teams)

    def __init__(self, cfg: Config) -> None:
        if not isinstance(cfg.algo, VDNConfig):
            raise ValueError(f"TeamTrainer runs vdn or qmix, not {cfg.algo.name!r}")
        super().__init__(cfg)

    def build(self) -> None:
        cfg = self.cfg
        team_agents(self.spec, cfg.algo)  # Box groups refused before any network is built
        self.actor = build_actor(self.spec, cfg, self.device)
        mixer = build_mixer(self.spec, cfg.algo, mixer_state_dim(self.spec, cfg.algo)).to(self.device)
        self.learner = ValueDecompositionLearner(self.actor.net, mixer, cfg.algo)
        self.goal_env = None
        self.replay = build_team_replays(self.spec, cfg)
        self.with_state = stores_state(self.spec, cfg.algo)
        self.rng = np.random.default_rng(cfg.seed)
        self.since_train = 0
        self.window = MetricWindow()
        uses_g = cfg.algo.return_reg > 0 or (cfg.algo.standardize_returns and cfg.algo.return_stats == "returns")
        self.horizon_checked = not uses_g

    horizon_checked = True
    """Whether episodes longer than ``algo.return_horizon`` need no more looking for (looked for once, by feed-forward
    runs that use G; recurrent ones take G inside their sequences)."""

    def collect(self, epsilon: float) -> list[EpisodeStats]:
        finished = super().collect(epsilon)
        if not self.horizon_checked and finished:
            self.horizon_checked = warn_if_beyond_horizon(finished, self.cfg.algo.return_horizon)
        return finished

    def store(self, obs: dict[str, GroupObs], out: ActOutput, step: VecStep, state: np.ndarray | None) -> int:
        """One team row per env copy (every group's rows at the same index; the state and the next state, final
        where the episode ended, with the first group's); returns the agent decisions taken."""
        rows = team_rows(list(self.replay), obs, out, step, state, self.with_state)
        for g, buf in self.replay.items():
            buf.add(rows[g])
        team_reward, agent_steps = team_reward_and_decisions({g: obs[g] for g in self.replay}, step)
        self.health.note_rewards("team", team_reward)
        return agent_steps

    def train_step(self) -> dict[str, float]:
        """One gradient step on B team rows; the team TD errors become the sampling replay's priorities."""
        algo = self.cfg.algo
        beta = per_beta_at(self.env_steps / self.cfg.total_env_steps, algo.per_beta)
        first, rows = team_samples(self.replay, algo.batch_size, self.rng, beta)
        returns = None
        if algo.return_reg > 0 or (algo.standardize_returns and algo.return_stats == "returns"):
            g, _, complete = team_episode_returns(self.replay, first.indices, algo.return_horizon, algo.gamma)
            returns = (g, complete)
        out = self.learner.update(to_team_batch(first, rows, self.actor.obs_norm, self.device, returns))
        if algo.per:
            if not all(math.isfinite(v) for v in out.metrics.values()):
                self._raise_nonfinite(out.metrics, self.learner.grad_steps)
            name = next(iter(self.replay))
            self.replay[name].update_priorities(first.indices, out.td_error[name])
            out.metrics["per_beta"] = beta
        return out.metrics
