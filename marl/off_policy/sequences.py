"""Recurrent DQN, VDN and QMIX: the off-policy loop with hidden states carried while acting, and sequence replay.

:class:`RecurrentDQNTrainer` is :class:`marl.off_policy.OffPolicyTrainer` (``algo.name=dqn`` with
``model.recurrent: gru | lstm``) where

* acting carries one hidden state ``[E, A, S]`` per group, env copy and agent, zeroed after the
  step at which the agent's episode or life ends (:func:`marl.loop.episode_ends`), as evaluation does;
* each group's replay is a :class:`marl.data.sequences.SequenceReplay` (``algo.seq_len`` steps per
  sequence, ``algo.burn_in`` overlap), fed the state each step was acted on;
* a gradient step samples ``algo.batch_size`` sequences per group and trains
  :class:`marl.algos.r2d2.RecurrentDQNLearner` on them; with PER the sequence priorities go back.

:class:`RecurrentTeamTrainer` does the same for VDN and QMIX (:mod:`marl.off_policy.team`): one sequence
replay per group written in lockstep (the same slot holds the same env steps in every group; the
first group's also stores the global state, samples, and keeps the team priorities) and
:class:`marl.algos.r2d2.RecurrentValueDecompositionLearner`.

Training starts once ``learning_starts`` env steps were collected and every replay holds
``batch_size`` sequences. Checkpoints add the acting states (a resumed run continues its episodes
with their memory) and, with ``algo.save_replay``, the stored and pending sequences.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from marl.algos.r2d2 import RecurrentValueDecompositionLearner, SequenceBatch, TeamSequenceBatch
from marl.algos.value_decomposition import build_mixer, team_agents
from marl.config import Config, ConfigError, DQNConfig, VDNConfig
from marl.data import PrioritizedSampler, per_beta_at, replay_schema
from marl.data.sequences import SequenceReplay
from marl.loop import episode_ends, reset_hidden
from marl.normalization import ObsNormalizer
from marl.off_policy.actor import build_actor, build_learner
from marl.off_policy.replay import replay_rows
from marl.off_policy.team import TeamTrainer, mixer_state_dim, stores_state, team_reward_and_decisions, team_rows
from marl.off_policy.trainer import MetricWindow, OffPolicyTrainer
from marl.types import ActOutput, EnvSpec, GroupObs, VecStep


def build_sequence_replays(spec: EnvSpec, cfg: Config, state_sizes: dict[str, int],
                           env_state: tuple[int, ...] | None = None) -> dict[str, SequenceReplay]:
    """One :class:`SequenceReplay` per group of ``buffer_size // (seq_len - burn_in)`` sequences (about
    ``buffer_size`` env steps of new data); prioritized with ``algo.per`` (value decomposition: the first
    group's only, which samples for the team and also stores the global state of shape ``env_state``)."""
    algo: DQNConfig = cfg.algo
    team = isinstance(algo, VDNConfig)
    capacity = algo.buffer_size // (algo.seq_len - algo.burn_in)
    out = {}
    for k, g in enumerate(spec.groups):
        sampler = PrioritizedSampler(capacity, per_alpha=algo.per_alpha, per_eps=algo.per_eps,
                                     per_beta=algo.per_beta) if algo.per and not (team and k) else None
        schema = replay_schema(g, env_state if k == 0 else None)
        out[g.name] = SequenceReplay(schema, state_sizes[g.name], capacity, cfg.env.num_envs, algo.seq_len,
                                     algo.burn_in, sampler)
    return out


def to_sequence_batch(fields: dict[str, np.ndarray], weights: np.ndarray, norm: ObsNormalizer | None,
                      device: torch.device) -> SequenceBatch:
    """Sampled sequences (``[B, L or P, ...]`` fields) as a time-first :class:`SequenceBatch` on ``device``,
    observations normalized with frozen statistics."""

    def t(x: np.ndarray) -> Tensor:
        return torch.as_tensor(x, device=device)

    def time_first(x: np.ndarray) -> Tensor:
        return t(x).transpose(0, 1)

    obs = fields["obs"] if norm is None else norm.normalize(fields["obs"])
    mask = fields.get("action_mask")
    return SequenceBatch(time_first(obs), time_first(fields["action"]), time_first(fields["reward"]),
                         time_first(fields["terminated"]), time_first(fields["ended"]), time_first(fields["alive"]),
                         time_first(fields["valid"]), t(fields["burn_in"]), t(fields["hidden"]), t(weights),
                         None if mask is None else time_first(mask))


class CarriesHidden:
    """What recurrent off-policy trainers share (a mixin before :class:`OffPolicyTrainer` in the bases): acting
    with the carried states (:attr:`hidden`, group -> ``[E, A, S]``), states reset when a step is lost,
    readiness counted in sequences, the states in checkpoints. Uses the trainer's ``actor``, ``cfg``,
    ``replay`` and ``env_steps``."""

    hidden: dict[str, Tensor]

    def act_step(self, obs: dict[str, GroupObs], state: np.ndarray | None, epsilon: float) -> ActOutput:
        return self.actor.act(obs, state, deterministic=False, update_stats=True, with_value=False, epsilon=epsilon,
                              hidden=self.hidden)

    def next_hidden(self, out: ActOutput, step: VecStep) -> np.ndarray:
        """Move the acting states past ``step`` (zeroed where an agent's episode or life ended); return ``[E]``
        bool, the copies whose episode ended."""
        self.hidden = reset_hidden(out.hidden, episode_ends(step))
        done = np.zeros(self.env.num_envs, bool)
        done[[ep.env_index for ep in step.episodes]] = True
        return done

    def drop_in_flight(self) -> None:
        """A lost step cuts every copy's sequence in progress, so every copy's acting state restarts from zero too
        (a stored sequence starts from the state that acted; the copies whose worker survived lose their memory
        once, mid-episode)."""
        super().drop_in_flight()
        self.hidden = self.actor.initial_hidden(self.cfg.env.num_envs)

    def replay_ready(self) -> bool:
        """``learning_starts`` env steps collected and every replay holds ``batch_size`` sequences."""
        algo = self.cfg.algo
        return self.env_steps >= algo.learning_starts and all(len(b) >= algo.batch_size for b in self.replay.values())

    def start_metrics(self) -> dict[str, float]:
        return {"replay/bytes_per_sequence": float(sum(b.nbytes_per_sequence() for b in self.replay.values()))}

    def checkpoint_state(self, name: str) -> dict[str, Any]:
        """Adds the acting hidden states (group -> ``[E, A, S]``)."""
        state = super().checkpoint_state(name)
        state["hidden"] = {g: h.detach().cpu() for g, h in self.hidden.items()}
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        if "hidden" in state:
            self.hidden = {g: h.to(self.device) for g, h in state["hidden"].items()}


class RecurrentDQNTrainer(CarriesHidden, OffPolicyTrainer):
    """Trains recurrent DQN (R2D2 shape); see the module docstring. Single process (no torchrun)."""

    supports_distributed = False  # each rank would need its own pending sequences; not built yet

    turns = None  # turn-based games are refused in build

    def build(self) -> None:
        cfg = self.cfg
        if self.spec.turn_based:
            raise ConfigError("model.recurrent: turn-based (AEC) games are not supported by recurrent dqn; "
                              "set model.recurrent=none")
        self.actor = build_actor(self.spec, cfg, self.device)
        self.learner = build_learner(self.actor, cfg)
        self.goal_env = None  # HER is refused with recurrent models (marl.config)
        sizes = {g: self.actor.net[g].state_size for g in self.actor.groups}
        self.replay = build_sequence_replays(self.spec, cfg, sizes)
        self.hidden = self.actor.initial_hidden(cfg.env.num_envs)
        self.rng = np.random.default_rng(cfg.seed)
        self.since_train = 0
        self.window = MetricWindow()

    def store(self, obs: dict[str, GroupObs], out: ActOutput, step: VecStep, state: np.ndarray | None) -> int:
        """Each group's rows go into its pending sequences with the state they were acted on; the acting states
        move on."""
        del state
        fed = self.hidden
        done = self.next_hidden(out, step)
        agent_steps = 0
        for g, buf in self.replay.items():
            o, tr = obs[g], step.transition[g]
            rows = replay_rows(o, out.action[g].cpu().numpy(), tr, step.obs[g], None, None)
            buf.add(rows, fed[g].cpu().numpy(), done)
            self.health.note_rewards(g, tr.reward)
            agent_steps += int(o.alive.sum())
        return agent_steps

    def train_step(self) -> dict[str, float]:
        """One gradient step on ``batch_size`` sequences per group; PER priorities fed back."""
        algo = self.cfg.algo
        beta = per_beta_at(self.env_steps / self.cfg.total_env_steps, algo.per_beta)
        samples = {g: buf.sample(algo.batch_size, self.rng, beta) for g, buf in self.replay.items()}
        batches = {g: to_sequence_batch(fields, weights, self.actor.obs_norm.get(g), self.device)
                   for g, (_, weights, fields) in samples.items()}
        out = self.learner.update(batches)
        if algo.per:
            if not all(math.isfinite(v) for v in out.metrics.values()):
                self._raise_nonfinite(out.metrics, self.learner.grad_steps)
            for g, buf in self.replay.items():
                buf.update_priorities(samples[g][0], out.td_error[g])
            out.metrics["per_beta"] = beta
        return out.metrics


class RecurrentTeamTrainer(CarriesHidden, TeamTrainer):
    """VDN / QMIX with recurrent agents (as EPyMARL's GRU agents): team sequences, one
    :class:`SequenceReplay` per group written in lockstep (the first samples and holds the global state),
    :class:`marl.algos.r2d2.RecurrentValueDecompositionLearner`. One-step team targets."""

    def build(self) -> None:
        cfg, spec = self.cfg, self.spec
        team_agents(spec, cfg.algo)  # Box groups refused before any network is built
        self.actor = build_actor(spec, cfg, self.device)
        mixer = build_mixer(spec, cfg.algo, mixer_state_dim(spec, cfg.algo)).to(self.device)
        self.learner = RecurrentValueDecompositionLearner(self.actor.net, mixer, cfg.algo)
        self.goal_env = None
        self.with_state = stores_state(spec, cfg.algo)
        sizes = {g: self.actor.net[g].state_size for g in self.actor.groups}
        self.replay = build_sequence_replays(spec, cfg, sizes, tuple(spec.state_shape) if self.with_state else None)
        self.hidden = self.actor.initial_hidden(cfg.env.num_envs)
        self.rng = np.random.default_rng(cfg.seed)
        self.since_train = 0
        self.window = MetricWindow()

    def store(self, obs: dict[str, GroupObs], out: ActOutput, step: VecStep, state: np.ndarray | None) -> int:
        """Every group's rows into its pending sequences (the state and next state with the first group's), with
        the states they were acted on; returns the agent decisions taken."""
        rows = team_rows(list(self.replay), obs, out, step, state, self.with_state)
        fed = self.hidden
        done = self.next_hidden(out, step)
        for g, buf in self.replay.items():
            buf.add(rows[g], fed[g].cpu().numpy(), done)
        team_reward, agent_steps = team_reward_and_decisions({g: obs[g] for g in self.replay}, step)
        self.health.note_rewards("team", team_reward)
        return agent_steps

    def train_step(self) -> dict[str, float]:
        """One gradient step on ``batch_size`` team sequences; their priorities go to the first group's replay."""
        algo = self.cfg.algo
        beta = per_beta_at(self.env_steps / self.cfg.total_env_steps, algo.per_beta)
        names = list(self.replay)
        indices, weights, fields = self.replay[names[0]].sample(algo.batch_size, self.rng, beta)
        parts = {names[0]: fields, **{g: self.replay[g].gather(indices) for g in names[1:]}}
        groups = {g: to_sequence_batch(f, weights, self.actor.obs_norm.get(g), self.device) for g, f in parts.items()}
        state = fields.get("state")
        out = self.learner.update(TeamSequenceBatch(
            groups, None if state is None else torch.as_tensor(state, device=self.device).transpose(0, 1)))
        if algo.per:
            if not all(math.isfinite(v) for v in out.metrics.values()):
                self._raise_nonfinite(out.metrics, self.learner.grad_steps)
            self.replay[names[0]].update_priorities(indices, out.td_error[names[0]])
            out.metrics["per_beta"] = beta
        return out.metrics
