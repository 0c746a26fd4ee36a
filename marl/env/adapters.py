"""Single-env adapters: PettingZoo (parallel, AEC) and Gymnasium envs as arrays with an agent axis.

The dict-per-agent APIs stop here. An adapter turns one env into per-group arrays
(``[A, ...]``, no env axis; see :mod:`marl.types` for the glossary) with an
``alive[A]`` mask, keeps ``terminated`` apart from ``truncated``, reports the real
final observation of every agent whose episode ends, and resets itself when the
episode is over (auto-reset).

Conventions shared by all adapters:

* Observations: ``uint8`` boxes (images ``[H, W, C]``) stay ``uint8``; every other
  box is cast to ``float32``. A ``Dict`` with keys ``observation`` + ``action_mask``
  (PettingZoo classic) gives ``obs = observation`` and the mask; a ``Dict`` with
  ``observation`` + ``achieved_goal`` + ``desired_goal`` (Gymnasium goal envs) gives
  ``obs = concat(observation, desired_goal)`` (float32) with
  ``GroupSpec.goal = (start, stop)`` locating the desired goal, and the achieved
  goals travel in ``AdapterStep.achieved_goal`` / ``final_achieved_goal``.
  A mask in ``infos[agent]["action_mask"]`` (found by one probe reset at
  construction) is used as well.
* Agents that are not alive have zero observations and an all-``True`` action
  mask row (so a masked distribution stays defined; they are masked out of losses).
* ``truncated`` is reported only where ``terminated`` is not: an agent that is both
  terminated and truncated at one step is terminated (no bootstrap).
* ``EpisodeStats.info`` holds ``is_success`` (mean over the agents whose final info
  has it) and ``truncated`` (1.0 when a time limit ended the episode, else 0.0).

The vector envs call ``reset_into`` / ``step_into``, which write into caller-owned
buffers (:class:`StepBuffers`, possibly views into shared memory): no output arrays are
allocated per step, the env's values are copied into them (the sync vector env copies them
once more into each result); ``reset`` / ``step`` are the allocating convenience forms. How observations
are decoded and the :class:`EnvSpec` built is in :mod:`marl.env.spec`; snapshots for
exact resume in :mod:`marl.env.snapshot`.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import gymnasium
import numpy as np
from pettingzoo import AECEnv, ParallelEnv

from marl.env.buffers import StepBuffers, allocate_buffers, buffer_fields
from marl.env.snapshot import EnvSnapshot, find_rng
from marl.env.spec import ObsFormat, decode_obs, pettingzoo_spec
from marl.env.wrappers import GymAsParallel
from marl.types import EnvSpec, EpisodeStats, GroupObs, GroupTransition

__all__ = ["AECAdapter", "Adapter", "AdapterStep", "EnvSnapshot", "GymAdapter", "ParallelAdapter"]


class AdapterStep(NamedTuple):
    """Result of one adapter step (arrays without the env axis).

    Attributes:
        obs: group -> observation after the step; after an episode end, the first
            observation of the new episode.
        transition: group -> reward / terminated / truncated ``[A]`` and
            ``final_obs [A, *obs_shape]`` of what happened at the step.
        state: ``[S]`` global state after the step (after auto-reset), or ``None``.
        final_state: ``[S]`` global state at the end of the episode when it ended
            at this step (zeros otherwise), or ``None``.
        episode: the episode that ended at this step (``env_index=0``), or ``None``.
        achieved_goal: goal envs only: group -> ``[A, G]`` achieved goal of ``obs``.
        final_achieved_goal: goal envs only: group -> ``[A, G]`` achieved goal of
            ``final_obs`` (zeros where the agent's episode did not end).
    """

    obs: dict[str, GroupObs]
    transition: dict[str, GroupTransition]
    state: np.ndarray | None
    final_state: np.ndarray | None
    episode: EpisodeStats | None
    achieved_goal: dict[str, np.ndarray] | None = None
    final_achieved_goal: dict[str, np.ndarray] | None = None


def buffers_to_step(bufs: StepBuffers, episode: EpisodeStats | None) -> AdapterStep:
    """Package filled buffers as an :class:`AdapterStep`."""
    goals = any(b.achieved_goal is not None for b in bufs.groups.values())
    obs, transition = bufs.split()
    return AdapterStep(
        obs=obs,
        transition=transition,
        state=bufs.state,
        final_state=bufs.final_state,
        episode=episode,
        achieved_goal={g: b.achieved_goal for g, b in bufs.groups.items()} if goals else None,
        final_achieved_goal={g: b.final_achieved_goal for g, b in bufs.groups.items()} if goals else None,
    )


class Adapter(Protocol):
    """One env as per-group arrays with an agent axis (see the module docstring)."""

    spec: EnvSpec

    def reset(self, seed: int | None = None) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        """Start an episode; returns group -> obs ``[A, ...]`` and the state ``[S]`` or ``None``."""

    def step(self, actions: dict[str, np.ndarray]) -> AdapterStep:
        """Apply ``actions[group]`` ``[A, *action_shape]``; auto-resets at episode end."""

    def reset_into(self, seed: int | None, out: StepBuffers) -> None:
        """``reset`` writing obs, alive, masks, achieved goals and state into ``out``."""

    def step_into(self, actions: Mapping[str, np.ndarray], out: StepBuffers) -> EpisodeStats | None:
        """``step`` writing every buffer of ``out``; returns the finished episode, if any."""

    def render(self) -> np.ndarray | None:
        """An RGB frame ``[H, W, 3]`` of the whole scene (``render_mode="rgb_array"``)."""

    def close(self) -> None: ...


class _Base:
    """Shared bookkeeping: the allocating API, slots, obs writing, episode statistics."""

    spec: EnvSpec
    _env: Any

    def _setup(self, formats: Mapping[str, ObsFormat], mask_from_info: Collection[str]) -> None:
        # (agent, group, row, format, mask comes from infos) in possible-agent order
        self._slots = [
            (a, g.name, k, formats[a], g.name in mask_from_info)
            for g in self.spec.groups
            for k, a in enumerate(g.agents)
        ]
        self._slot_index = {s[0]: i for i, s in enumerate(self._slots)}
        self._fields = buffer_fields(self.spec)
        self._agent_index = {a: i for i, a in enumerate(self.spec.agents)}
        self._returns = np.zeros(self.spec.n_agents, np.float64)
        self._length = 0
        self._success: dict[str, float] = {}
        self._needs_reset = True
        self._episode_seed: int | None = None
        self._episode_rng: dict | None = None
        self._actions: list[dict[str, np.ndarray]] = []

    def reset(self, seed: int | None = None) -> tuple[dict[str, GroupObs], np.ndarray | None]:
        out = allocate_buffers(self.spec, (), self._fields)
        self.reset_into(seed, out)
        return {g: GroupObs(b.obs, b.alive, b.action_mask) for g, b in out.groups.items()}, out.state

    def step(self, actions: dict[str, np.ndarray]) -> AdapterStep:
        out = allocate_buffers(self.spec, (), self._fields)
        episode = self.step_into(actions, out)
        return buffers_to_step(out, episode)

    def snapshot(self) -> EnvSnapshot:
        """The current episode as a replayable record (see :class:`EnvSnapshot`)."""
        actions = {}
        for g in self.spec.groups:
            rows = [a[g.name] for a in self._actions]
            shape = (0, g.n_agents, *g.action_shape)
            actions[g.name] = np.stack(rows) if rows else np.zeros(shape, g.action_dtype)
        return EnvSnapshot(self._episode_seed, self._episode_rng, actions)

    def restore_into(self, snapshot: EnvSnapshot, out: StepBuffers) -> None:
        """Rebuild the state of :meth:`snapshot`: same reset, same actions; obs written to ``out``."""
        if snapshot.seed is None and snapshot.rng is not None:
            rng = find_rng(self._env)
            if rng is None:
                raise RuntimeError("cannot restore the env's RNG: the env has no np_random generator")
            rng.bit_generator.state = snapshot.rng
        self.reset_into(snapshot.seed, out)
        n = len(next(iter(snapshot.actions.values()))) if snapshot.actions else 0
        for i in range(n):
            episode = self.step_into({g: np.asarray(a[i]) for g, a in snapshot.actions.items()}, out)
            if episode is not None:
                raise RuntimeError("replaying an env snapshot ended its episode early: the env is not deterministic")

    def _begin_episode(self, seed: int | None) -> None:
        """Remember how this episode starts (for :meth:`snapshot`); call right before the env's reset."""
        self._episode_seed = None if seed is None else int(seed)
        rng = None if seed is not None else find_rng(self._env)
        self._episode_rng = None if rng is None else copy.deepcopy(rng.bit_generator.state)
        self._actions = []

    def _record(self, actions: Mapping[str, np.ndarray]) -> None:
        self._actions.append({g: np.array(a, copy=True) for g, a in actions.items()})

    def reset_into(self, seed: int | None, out: StepBuffers) -> None:
        raise NotImplementedError

    def step_into(self, actions: Mapping[str, np.ndarray], out: StepBuffers) -> EpisodeStats | None:
        raise NotImplementedError

    def render(self) -> np.ndarray | None:
        frame = self._env.render()
        return frame if isinstance(frame, np.ndarray) else None

    def close(self) -> None:
        self._env.close()

    def _start_episode(self) -> None:
        self._returns[:] = 0.0
        self._length = 0
        self._success = {}
        self._needs_reset = False

    def _check_ready(self) -> None:
        if self._needs_reset:
            raise RuntimeError(
                f"{type(self).__name__}.step called before reset(seed); reset the adapter first"
            )

    def _write_obs(
        self,
        observe: Any,
        infos: Mapping[str, Any],
        alive: Collection[str],
        out: StepBuffers,
        masked: Collection[str] | None = None,
    ) -> None:
        """Rows of ``alive`` agents from ``observe(agent)``; zeros (mask all True) elsewhere.

        Masks found in ``infos`` are read for the agents in ``masked`` (default: ``alive``).
        """
        groups, masked = out.groups, alive if masked is None else masked
        for agent, g, k, fmt, mask_in_info in self._slots:
            b = groups[g]
            if agent in alive:
                b.alive[k] = True
                decode_obs(fmt, observe(agent), k, b.obs, b.action_mask, b.achieved_goal)
                if mask_in_info and agent in masked:
                    try:
                        b.action_mask[k] = infos[agent]["action_mask"]
                    except KeyError:
                        raise RuntimeError(
                            f"agent {agent!r} has no infos[agent]['action_mask'] at this step, but the "
                            "env gave masks at reset; an env that masks actions must give a mask to "
                            "every live agent at every step"
                        ) from None
            else:
                b.alive[k] = False
                b.obs[k] = 0
                if b.action_mask is not None:
                    b.action_mask[k] = True
                if b.achieved_goal is not None:
                    b.achieved_goal[k] = 0.0

    def _clear_transition(self, out: StepBuffers) -> None:
        for b in out.groups.values():
            b.reward.fill(0.0)
            b.terminated.fill(False)
            b.truncated.fill(False)
            b.final_obs.fill(0)
            if b.final_achieved_goal is not None:
                b.final_achieved_goal.fill(0.0)
            if b.final_action_mask is not None:
                b.final_action_mask.fill(True)
        if out.final_state is not None:
            out.final_state.fill(0.0)

    def _end_agent(
        self, agent: str, terminated: bool, raw_obs: Any, info: Mapping[str, Any] | None, out: StepBuffers
    ) -> None:
        """Flag an agent whose episode ended at this step and store its final observation (and the mask that came
        with it, in the observation or in ``info``; all ``True`` when none did)."""
        _, g, k, fmt, mask_in_info = self._slots[self._slot_index[agent]]
        b = out.groups[g]
        b.terminated[k] = terminated
        b.truncated[k] = not terminated
        if raw_obs is not None:
            decode_obs(fmt, raw_obs, k, b.final_obs, b.final_action_mask, b.final_achieved_goal)
        if mask_in_info and info and "action_mask" in info:
            b.final_action_mask[k] = info["action_mask"]
        if info and "is_success" in info:
            self._success[agent] = float(info["is_success"])

    def _episode(self, truncated: bool) -> EpisodeStats:
        info = {"truncated": float(truncated)}
        if self._success:
            info["is_success"] = float(np.mean(list(self._success.values())))
        returns = {a: float(self._returns[i]) for i, a in enumerate(self.spec.agents)}
        return EpisodeStats(0, returns, self._length, info)


def _to_env_actions(spec: EnvSpec, actions: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
    """group -> per-agent env actions: ints for Discrete, float32 rows clipped to the bounds for Box."""
    out: dict[str, list[Any]] = {}
    for g in spec.groups:
        try:
            a = np.asarray(actions[g.name])
        except KeyError:
            raise KeyError(
                f"no actions for group {g.name!r}; pass actions for groups {[x.name for x in spec.groups]}"
            ) from None
        expected = (g.n_agents, *g.action_shape)
        if a.shape != expected:
            raise ValueError(
                f"actions[{g.name!r}] has shape {a.shape}, expected [A, *action_shape] = {expected}"
            )
        if g.discrete:
            out[g.name] = a.tolist()
        else:
            box = g.action_space
            out[g.name] = list(np.clip(a, box.low, box.high).astype(np.float32))
    return out


class ParallelAdapter(_Base):
    """A PettingZoo ``ParallelEnv`` as per-group arrays.

    Args:
        env: the env; its ``possible_agents`` fix the agent order.
        groups: group name -> agent names; default: by name prefix (:func:`default_groups`).
        use_state: read ``env.state()`` each step when the env has one (set ``False``
            for envs whose state is costly, e.g. a full-screen render).

    An agent not in ``env.agents`` is not alive (zero obs, zero reward, flags
    ``False``); an acting agent that leaves ``env.agents`` without a flag is
    reported terminated. The episode ends when no agent is left alive; the adapter
    then records :class:`EpisodeStats` and resets the env with no seed (the env
    keeps its own seeded RNG). Construction resets the env once (unseeded) to find
    masks given in ``infos`` and the state shape; call ``reset(seed)`` before stepping.
    """

    def __init__(
        self, env: ParallelEnv, groups: Mapping[str, Sequence[str]] | None = None, use_state: bool = True
    ):
        self._env = env
        _, infos = env.reset()  # probe: action masks in infos, state()
        self.spec, formats, mask_from_info = pettingzoo_spec(env, groups, infos, use_state, turn_based=False)
        self._setup(formats, mask_from_info)

    def reset_into(self, seed: int | None, out: StepBuffers) -> None:
        self._begin_episode(seed)
        obs, infos = self._env.reset(seed=seed)
        self._start_episode()
        self._write_obs(obs.__getitem__, infos, set(self._env.agents), out)
        if out.state is not None:
            out.state[:] = self._env.state()

    def step_into(self, actions: Mapping[str, np.ndarray], out: StepBuffers) -> EpisodeStats | None:
        self._check_ready()
        self._record(actions)
        env = self._env
        acting = list(env.agents)
        per_group = _to_env_actions(self.spec, actions)
        slots, slot_of = self._slots, self._slot_index
        env_actions = {}
        for agent in acting:
            _, g, k, _, _ = slots[slot_of[agent]]
            env_actions[agent] = per_group[g][k]
        obs, rewards, terms, truncs, infos = env.step(env_actions)
        self._length += 1
        self._clear_transition(out)
        remaining = set(env.agents)
        ended, any_truncated = set(), False
        for agent in acting:
            _, g, k, _, _ = slots[slot_of[agent]]
            r = float(rewards.get(agent, 0.0))
            out.groups[g].reward[k] = r
            self._returns[self._agent_index[agent]] += r
            term, trunc = bool(terms.get(agent, False)), bool(truncs.get(agent, False))
            if not (term or trunc) and agent not in remaining:
                term = True  # left env.agents without a flag: gone for good
            if term or trunc:
                ended.add(agent)
                any_truncated |= not term
                self._end_agent(agent, term, obs.get(agent), infos.get(agent), out)
        alive = remaining - ended
        if alive:
            self._write_obs(obs.__getitem__, infos, alive, out)
            if out.state is not None:
                out.state[:] = env.state()
            return None
        if out.final_state is not None:
            out.final_state[:] = env.state()
        episode = self._episode(any_truncated)
        self.reset_into(None, out)
        return episode


class GymAdapter(ParallelAdapter):
    """A Gymnasium env as one agent ``agent_0`` in one group ``agent``.

    Same semantics as :class:`ParallelAdapter`: Box actions are clipped to the
    action space bounds, Discrete actions passed as ``int``, ``is_success`` read
    from the final step's info; no global state.
    """

    def __init__(self, env: gymnasium.Env):
        super().__init__(GymAsParallel(env), {"agent": ["agent_0"]}, use_state=False)
        self._gym = env
        group = self.spec.groups[0]
        self._box = None if group.discrete else group.action_space
        _, _, _, self._format, self._mask_in_info = self._slots[0]

    def step_into(self, actions: Mapping[str, np.ndarray], out: StepBuffers) -> EpisodeStats | None:
        """:meth:`ParallelAdapter.step_into` for the one agent, without the per-agent dictionaries
        (a single-agent step is a few microseconds of env code; the plumbing would double it)."""
        self._check_ready()
        self._record(actions)
        a = _to_env_actions(self.spec, actions)["agent"][0]
        obs, reward, terminated, truncated, info = self._gym.step(a)
        self._length += 1
        b = out.groups["agent"]
        r = float(reward)
        b.reward[0] = r
        self._returns[0] += r
        if terminated or truncated:
            self._env.agents = []
            b.terminated[0] = bool(terminated)
            b.truncated[0] = not terminated
            if b.final_action_mask is not None:
                b.final_action_mask[0] = info["action_mask"] if self._mask_in_info and "action_mask" in info else True
            decode_obs(self._format, obs, 0, b.final_obs, b.final_action_mask, b.final_achieved_goal)
            if info and "is_success" in info:
                self._success["agent_0"] = float(info["is_success"])
            episode = self._episode(not terminated)
            self.reset_into(None, out)
            return episode
        b.terminated[0] = False
        b.truncated[0] = False
        b.final_obs[0] = 0
        if b.final_achieved_goal is not None:
            b.final_achieved_goal[0] = 0.0
        if b.final_action_mask is not None:
            b.final_action_mask[0] = True
        b.alive[0] = True
        decode_obs(self._format, obs, 0, b.obs, b.action_mask, b.achieved_goal)
        if self._mask_in_info:
            try:
                b.action_mask[0] = info["action_mask"]
            except KeyError:
                raise RuntimeError(
                    "the env gave an action mask in info at reset but not at this step; an env that masks "
                    "actions must give info['action_mask'] at every step"
                ) from None
        return None


class AECAdapter(_Base):
    """A turn-based PettingZoo ``AECEnv`` as per-group arrays; ``spec.turn_based`` is ``True``.

    Args:
        env: the env; its ``possible_agents`` fix the agent order.
        groups: as for :class:`ParallelAdapter`.
        use_state: as for :class:`ParallelAdapter`.

    Each step exactly one agent is alive: the one whose turn it is
    (``env.agent_selection``). Observations are given for every agent still in the
    game (``env.observe``) so a waiting agent can be valued; agents that left the
    game see zeros. ``step`` applies the alive agent's action, then the ``None``
    steps the AEC API requires for terminated / truncated agents, until a live
    agent must act or the game is over.

    Unlike the parallel adapters, ``reward[a]`` is reported for every agent,
    acting or waiting: it is what ``a`` received during this step (the loser of a
    game gets -1 on the winner's move). ``terminated`` / ``truncated`` /
    ``final_obs`` are set for every agent whose episode ended during the step.
    ``EpisodeStats.length`` counts moves.
    """

    def __init__(
        self, env: AECEnv, groups: Mapping[str, Sequence[str]] | None = None, use_state: bool = True
    ):
        self._env = env
        env.reset()  # probe: action masks in infos, state()
        self.spec, formats, mask_from_info = pettingzoo_spec(
            env, groups, env.infos, use_state, turn_based=True
        )
        self._setup(formats, mask_from_info)
        self._ended: set[str] = set()

    def _write_turn(self, out: StepBuffers) -> None:
        """Obs of every agent in the game, alive = the agent to move, masks."""
        env = self._env
        in_game = [a for a in env.agents if a not in self._ended]
        mover = env.agent_selection
        self._write_obs(env.observe, env.infos, in_game, out, masked=(mover,))
        for agent, g, k, _, _ in self._slots:
            b = out.groups[g]
            b.alive[k] = agent == mover
            if b.action_mask is not None and agent != mover:
                b.action_mask[k] = True
        if out.state is not None:
            out.state[:] = env.state()

    def reset_into(self, seed: int | None, out: StepBuffers) -> None:
        self._begin_episode(seed)
        self._env.reset(seed=seed)
        self._start_episode()
        self._ended = set()
        self._write_turn(out)

    def _settle(self, out: StepBuffers) -> bool:
        """Collect this env step's rewards and endings, then step ``None`` for dead agents.

        Returns whether any ending was a truncation.
        """
        env, truncated = self._env, False
        while True:
            for agent, r in env.rewards.items():
                _, g, k, _, _ = self._slots[self._slot_index[agent]]
                out.groups[g].reward[k] += r
                self._returns[self._agent_index[agent]] += r
            for agent in env.agents:
                if agent not in self._ended and (env.terminations[agent] or env.truncations[agent]):
                    self._ended.add(agent)
                    term = bool(env.terminations[agent])
                    truncated |= not term
                    self._end_agent(agent, term, env.observe(agent), env.infos.get(agent), out)
            sel = env.agent_selection
            if not env.agents or not (env.terminations[sel] or env.truncations[sel]):
                return truncated
            env.step(None)

    def step_into(self, actions: Mapping[str, np.ndarray], out: StepBuffers) -> EpisodeStats | None:
        self._check_ready()
        self._record(actions)
        env = self._env
        mover = env.agent_selection
        _, g, k, _, _ = self._slots[self._slot_index[mover]]
        action = _to_env_actions(self.spec, actions)[g][k]
        self._clear_transition(out)
        env.step(action)
        self._length += 1
        truncated = self._settle(out)
        if env.agents:
            self._write_turn(out)
            return None
        if out.final_state is not None:
            out.final_state[:] = env.state()
        episode = self._episode(truncated)
        self.reset_into(None, out)
        return episode
