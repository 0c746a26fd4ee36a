"""What every batched MPE scenario shares: the world layout, physics, action decoding, batching,
per-copy seeding, auto-reset and loading a live mpe2 env's state.

Shapes: ``E`` env copies, ``A`` agents, ``L`` landmarks, ``N = A + L`` entities (agents first,
as in mpe2's ``world.entities``), ``G`` goal indices per copy, ``dim_c`` communication channels.
The world is simulated in float64, as mpe2 does; observations leave as float32 (mpe2 casts
them too), rewards as float32 (mpe2 returns Python floats).

Layout: the public arrays are ``[E, A, ...]``; inside, every per-copy array keeps the copy
axis last (positions ``[N, 2, E]``, velocities ``[A, 2, E]``, rewards ``[A, E]``...), so that
numpy's inner loops run over the ``E`` copies rather than over 2 coordinates or 3 agents.
Measured on simple_spread with ``E = 1024`` (``bench/bench_batched_mpe.py``, one core): a min
over 3 agents takes 250 us with ``E`` first and 5 us with ``E`` last, and a whole step went
from about 1.8 ms (``[E, N, 2]`` layout) to 0.9 ms.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import gymnasium
import numpy as np

# Physics constants of mpe2's ``World`` and ``SimpleEnv._set_action`` (mpe2 1.1, ``_mpe_utils``).
DT = 0.1  # seconds per step
DAMPING = 0.25  # fraction of velocity lost per step
CONTACT_FORCE = 1e2  # stiffness of the contact force
CONTACT_MARGIN = 1e-3  # width of the softplus penetration, in position units
DEFAULT_SENSITIVITY = 5.0  # force per unit action when an agent has no ``accel``
#: ``[5, 2]`` direction of each discrete movement action: no-op, -x, +x, -y, +y.
MOVE_DIRECTIONS = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
N_MOVES = len(MOVE_DIRECTIONS)
#: episodes of random numbers each copy draws from its generator at once (fewer Python calls).
RESET_POOL_EPISODES = 16


@dataclass(frozen=True)
class WorldLayout:
    """The fixed description of a scenario's world (what mpe2's ``make_world`` sets).

    Args:
        agents: agent names, in mpe2's order.
        movable, silent, collide: ``bool [A]`` agent flags.
        size: ``[A]`` agent radii.
        accel: ``[A]`` force per unit action (mpe2's ``accel``, else 5).
        max_speed: ``[A]`` speed limits; ``inf`` for none.
        landmark_collide: ``bool [L]``; landmarks never move.
        landmark_size: ``[L]`` landmark radii.
        dim_c: communication channels.
        spawn_low, spawn_high: ``[A + L]`` bounds of the uniform start coordinates of each entity.
        n_goals: goal indices (each in ``[0, L)``) drawn per copy at reset.
    """

    agents: tuple[str, ...]
    movable: np.ndarray
    silent: np.ndarray
    collide: np.ndarray
    size: np.ndarray
    accel: np.ndarray
    max_speed: np.ndarray
    landmark_collide: np.ndarray
    landmark_size: np.ndarray
    dim_c: int
    spawn_low: np.ndarray
    spawn_high: np.ndarray
    n_goals: int = 0


class BatchedStep(NamedTuple):
    """What :meth:`BatchedMPE.step` returns; every dict is keyed by group.

    ``obs``: ``float32 [E, A_g, obs_dim]`` after the auto-reset of the copies that ended.
    ``reward``: ``float32 [E, A_g]``. ``terminated``, ``truncated``: ``bool [E, A_g]`` (MPE ends
    every agent of a copy together; truncation only at ``max_cycles``). ``final_obs``: the
    observation reached by this step, before any reset (the arrays of ``obs`` themselves when
    no copy ended). ``done_envs``: ``bool [E]``, the copies that ended and were reset.
    """

    obs: dict[str, np.ndarray]
    reward: dict[str, np.ndarray]
    terminated: dict[str, np.ndarray]
    truncated: dict[str, np.ndarray]
    final_obs: dict[str, np.ndarray]
    done_envs: np.ndarray


def group_by_prefix(agents: Sequence[str]) -> dict[str, list[str]]:
    """Agents grouped by name prefix (``adversary_0`` -> ``adversary``), groups in order of first agent."""
    groups: dict[str, list[str]] = {}
    for name in agents:
        groups.setdefault(name.rsplit("_", 1)[0], []).append(name)
    return groups


def copy_generators(seed: int | Sequence[int] | None, num_envs: int) -> list[np.random.Generator]:
    """One generator per copy: ``default_rng`` of each seed of a list, or children of ``SeedSequence(seed)``.

    Copy ``i`` of an int ``seed`` gets spawn key ``(i,)``, so its stream does not depend on ``num_envs``.
    """
    if seed is None or isinstance(seed, (int, np.integer)):
        return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"got {len(seeds)} seeds for {num_envs} env copies; pass one per copy or an int")
    return [np.random.default_rng(int(s)) for s in seeds]


def distance(delta: np.ndarray) -> np.ndarray:
    """Euclidean norms ``[..., E]`` of ``delta [..., 2, E]`` (coordinates on axis -2), as mpe2 sums them."""
    return np.sqrt(np.square(delta[..., 0, :]) + np.square(delta[..., 1, :]))


def nearest(rel: np.ndarray, n: int) -> np.ndarray:
    """``[A, min(n, K), E]``: indices of the entries of ``rel [A, K, 2, E]`` nearest the origin, in order.

    mpe2's partial observability (``nearest_entities``) sorts by distance the same way.
    """
    return np.argsort(distance(rel), axis=1, kind="stable")[:, :n]


def take_padded(values: np.ndarray, order: np.ndarray, n: int) -> np.ndarray:
    """``values [A, K, d, E]`` at ``order [A, m, E]`` along ``K``, zero-padded to ``[A, n, d, E]``."""
    out = np.zeros((values.shape[0], n) + values.shape[2:], dtype=values.dtype)
    out[:, : order.shape[1]] = np.take_along_axis(values, order[:, :, None], axis=1)
    return out


def others_index(n: int) -> np.ndarray:
    """``int [n, n - 1]``: row ``i`` lists ``0..n-1`` without ``i`` (each agent's "others", in order)."""
    return np.array([[j for j in range(n) if j != i] for i in range(n)], dtype=np.int64).reshape(n, n - 1)


def flat(*parts: np.ndarray) -> np.ndarray:
    """``float32 [E, A_g, D]``: parts ``[A_g, ..., E]``, each flattened between its first and last axis,
    concatenated in order (the float64 -> float32 cast rounds as ``astype`` does)."""
    shaped = [p.reshape(p.shape[0], -1, p.shape[-1]) for p in parts]
    n_agents, n_envs = shaped[0].shape[0], shaped[0].shape[-1]
    out = np.empty((n_envs, n_agents, sum(p.shape[1] for p in shaped)), dtype=np.float32)
    view, start = out.transpose(1, 2, 0), 0  # [A_g, D, E]
    for p in shaped:
        view[:, start : start + p.shape[1]] = p
        start += p.shape[1]
    return out


class BatchedMPE:
    """E copies of one MPE scenario stepped as arrays; see :mod:`envs.batched_mpe` for the interface.

    Subclasses (one per scenario) give the :class:`WorldLayout` and implement
    :meth:`_observe_groups`, :meth:`_reward`, and where needed :meth:`_terminal`,
    :meth:`_goals_from_world`, :meth:`_mpe2_settings`, :meth:`_after_reset` and
    :meth:`_load_extra`.
    """

    #: mpe2 module name of the scenario (``simple_spread_v3``, ...).
    mpe2_name: ClassVar[str]

    def __init__(self, layout: WorldLayout, num_envs: int, continuous_actions: bool, max_cycles: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        if max_cycles < 1:
            raise ValueError(f"max_cycles={max_cycles} must be >= 1")
        self.num_envs = num_envs
        self.continuous_actions = bool(continuous_actions)
        self.max_cycles = max_cycles
        self.agents = list(layout.agents)
        self.groups = group_by_prefix(self.agents)
        self._layout = layout
        self._group_index = {
            g: np.array([self.agents.index(a) for a in names], dtype=np.int64)
            for g, names in self.groups.items()
        }
        n_agents, n_landmarks = len(self.agents), len(layout.landmark_size)
        self._n_agents, self._n_landmarks, self._dim_c = n_agents, n_landmarks, layout.dim_c

        # per-copy state, copy axis last
        E = num_envs
        self._pos = np.zeros((n_agents + n_landmarks, 2, E))  # agents then landmarks
        self._vel = np.zeros((n_agents, 2, E))
        self._comm = np.zeros((n_agents, layout.dim_c, E))
        self._goals = np.zeros((layout.n_goals, E), dtype=np.int64)
        self._steps = np.zeros(E, dtype=np.int64)
        self._copy_range = np.arange(E)
        self._accel = np.repeat(np.asarray(layout.accel, dtype=np.float64)[:, None], E, axis=1)  # [A, E]
        self._max_speed = np.repeat(np.asarray(layout.max_speed, dtype=np.float64)[:, None], E, axis=1)
        self._has_max_speed = bool(np.isfinite(layout.max_speed).any())
        self._started = False

        # contact pairs: each movable colliding agent against every other colliding entity, in entity order
        entity_collide = np.concatenate([layout.collide, layout.landmark_collide])
        self._entity_size = np.concatenate([layout.size, layout.landmark_size]).astype(np.float64)
        colliders = np.flatnonzero(entity_collide)
        receivers = np.flatnonzero(layout.movable & layout.collide)
        self._receivers = receivers
        self._partners = np.array([[j for j in colliders if j != i] for i in receivers], dtype=np.int64)
        self._partners = self._partners.reshape(len(receivers), max(len(colliders) - 1, 0))
        pair_size = self._entity_size[receivers, None] + self._entity_size[self._partners]
        self._contact_dist = pair_size[..., None]  # [R, K, 1]: distance at which contact starts

        # random numbers per reset: goals, then x, y of each entity
        self._draws_per_reset = layout.n_goals + 2 * (n_agents + n_landmarks)
        self._spawn_low = np.asarray(layout.spawn_low, dtype=np.float64)[:, None, None]
        self._spawn_high = np.asarray(layout.spawn_high, dtype=np.float64)[:, None, None]
        self._rngs = copy_generators(None, E)
        self._pool = np.zeros((E, RESET_POOL_EPISODES, self._draws_per_reset))
        self._pool_next = np.full(E, RESET_POOL_EPISODES, dtype=np.int64)

        self._action_spaces = {a: self._make_action_space(i) for i, a in enumerate(self.agents)}
        obs_dims = {g: o.shape[-1] for g, o in self._observe_groups().items()}
        self._obs_spaces = {
            a: gymnasium.spaces.Box(-np.float32(np.inf), np.float32(np.inf), (obs_dims[g],), np.float32)
            for g, names in self.groups.items()
            for a in names
        }
        state_dim = sum(self._obs_spaces[a].shape[0] for a in self.agents)
        self.state_space = gymnasium.spaces.Box(
            -np.float32(np.inf), np.float32(np.inf), (state_dim,), np.float32
        )
        for g, idx in self._group_index.items():  # decoding works per group
            flags = {(bool(layout.movable[i]), bool(layout.silent[i])) for i in idx}
            if len(flags) != 1:
                raise ValueError(f"agents of group {g!r} differ in movable/silent flags")

    # ------------------------------------------------------------------ spaces
    def _make_action_space(self, i: int) -> gymnasium.spaces.Space:
        """mpe2's action space of agent ``i``: ``Discrete(5 * dim_c)``, ``Box(0, 1, (5 + dim_c,))``, ..."""
        movable, silent = bool(self._layout.movable[i]), bool(self._layout.silent[i])
        if self.continuous_actions:
            dim = (N_MOVES if movable else 0) + (0 if silent else self._dim_c)
            return gymnasium.spaces.Box(low=0, high=1, shape=(dim,))
        return gymnasium.spaces.Discrete((N_MOVES if movable else 1) * (1 if silent else self._dim_c))

    def observation_space(self, agent: str) -> gymnasium.spaces.Space:
        """mpe2's observation space of ``agent``: ``Box(-inf, inf, (obs_dim,), float32)``."""
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.spaces.Space:
        """mpe2's action space of ``agent`` (``Discrete`` or ``Box(0, 1)`` per ``continuous_actions``)."""
        return self._action_spaces[agent]

    # ------------------------------------------------------------------ episodes
    def reset(self, seed: int | Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Reset every copy; returns ``obs[group]`` ``float32 [E, A_g, obs_dim]``.

        Args:
            seed: an int (copy ``i`` seeded by child ``i`` of ``SeedSequence(seed)``), one int per
                copy, or ``None`` to go on with the copies' current generators.
        """
        if seed is not None:
            self._rngs = copy_generators(seed, self.num_envs)
            self._pool_next[:] = RESET_POOL_EPISODES
        self._reset_copies(np.arange(self.num_envs))
        self._started = True
        return self.observe()

    def step(self, actions: Mapping[str, Any]) -> BatchedStep:
        """Advance every copy by one step; copies that end are reset in the same call.

        Args:
            actions: per group, ``int [E, A_g]`` (discrete) or ``float [E, A_g, act_dim]``
                (continuous; clipped to ``[0, 1]`` as mpe2's wrapper does).
        """
        if not self._started:
            raise RuntimeError("call reset() before step()")
        force, comm = self._decode(actions)
        self._integrate(force)
        self._comm = comm
        reward = self._reward()
        self._steps += 1
        truncated = self._steps >= self.max_cycles
        terminated = ~truncated & self._terminal()  # mpe2 checks the time limit first
        done = truncated | terminated
        final_obs = self.observe()
        obs = final_obs
        if done.any():
            self._reset_copies(np.flatnonzero(done))
            obs = self.observe()  # unchanged for the copies that go on
        return BatchedStep(
            obs=obs,
            reward={g: reward[idx].T.astype(np.float32) for g, idx in self._group_index.items()},
            terminated=self._per_agent(terminated),
            truncated=self._per_agent(truncated),
            final_obs=final_obs,
            done_envs=done,
        )

    def observe(self) -> dict[str, np.ndarray]:
        """The current observations, ``obs[group]`` ``float32 [E, A_g, obs_dim]``."""
        return self._observe_groups()

    def state(self) -> np.ndarray:
        """``float32 [E, state_dim]``: every agent's observation, in agent order (mpe2's ``state()``)."""
        obs = self.observe()
        position = {a: (g, k) for g, names in self.groups.items() for k, a in enumerate(names)}
        return np.concatenate([obs[position[a][0]][:, position[a][1]] for a in self.agents], axis=-1)

    def _per_agent(self, flags: np.ndarray) -> dict[str, np.ndarray]:
        """``bool [E]`` copy flags repeated for each agent: ``{group: [E, A_g]}``."""
        return {g: np.repeat(flags[:, None], len(idx), axis=1) for g, idx in self._group_index.items()}

    def _draw(self, idx: np.ndarray) -> np.ndarray:
        """The next ``[len(idx), draws_per_reset]`` uniform ``[0, 1)`` numbers of the copies ``idx``.

        Each copy consumes its generator's ``random()`` stream in order; drawing
        ``RESET_POOL_EPISODES`` resets' worth at once only saves Python calls.
        """
        for i in idx[self._pool_next[idx] >= RESET_POOL_EPISODES]:
            self._pool[i] = self._rngs[i].random((RESET_POOL_EPISODES, self._draws_per_reset))
            self._pool_next[i] = 0
        rows = self._pool[idx, self._pool_next[idx]]
        self._pool_next[idx] += 1
        return rows

    def _reset_copies(self, idx: np.ndarray) -> None:
        """Fresh random starts for the copies ``idx``: goals, uniform positions, zero velocity and comm."""
        draws = self._draw(idx)
        n_goals, n_landmarks = self._layout.n_goals, self._n_landmarks
        self._goals[:, idx] = np.minimum(np.floor(draws[:, :n_goals] * n_landmarks), n_landmarks - 1).T
        unit = draws[:, n_goals:].reshape(len(idx), -1, 2).transpose(1, 2, 0)  # [N, 2, n]
        self._pos[:, :, idx] = self._spawn_low + (self._spawn_high - self._spawn_low) * unit
        self._vel[:, :, idx] = 0.0
        self._comm[:, :, idx] = 0.0
        self._steps[idx] = 0
        self._after_reset(idx)

    # ------------------------------------------------------------------ exact resume
    #: the attributes that change while stepping (with the generators): what :meth:`state_dict` saves
    _EVOLVING = ("_pos", "_vel", "_comm", "_goals", "_steps", "_accel", "_max_speed", "_pool", "_pool_next")

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes while stepping, copied: arrays, each copy's generator state, the
        curriculum stage. Loaded into an env made with the same arguments it continues exactly."""
        return {
            "arrays": {k: getattr(self, k).copy() for k in self._EVOLVING},
            "rngs": [copy.deepcopy(r.bit_generator.state) for r in self._rngs],
            "started": self._started,
            "curriculum_stage": getattr(self, "curriculum_stage", 0),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; raises ``ValueError`` (nothing changed) if it is of another shape."""
        arrays = state["arrays"]
        for k in self._EVOLVING:
            if np.shape(arrays[k]) != getattr(self, k).shape:
                raise ValueError(f"saved {k} has shape {np.shape(arrays[k])}, this env {getattr(self, k).shape}: "
                                 "made with other arguments (num_envs, scenario kwargs)?")
        if len(state["rngs"]) != self.num_envs:
            raise ValueError(f"saved {len(state['rngs'])} copy generators for {self.num_envs} copies")
        for k in self._EVOLVING:
            setattr(self, k, np.array(arrays[k], dtype=getattr(self, k).dtype))
        for rng, s in zip(self._rngs, state["rngs"], strict=True):
            rng.bit_generator.state = s
        self._started = bool(state["started"])
        if hasattr(self, "curriculum_stage"):
            self.curriculum_stage = int(state["curriculum_stage"])

    # ------------------------------------------------------------------ actions and physics
    def _decode(self, actions: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Actions per group -> agent forces ``[A, 2, E]`` and communication states ``[A, dim_c, E]``.

        Discrete (mpe2's ``_set_action``): a movable agent moves by ``a % 5`` (no-op, -x, +x, -y,
        +y) and says ``a // 5``; an immovable one says ``a``; what it says is one-hot. Continuous:
        force ``(a[2] - a[1], a[4] - a[3])`` (in the action's dtype, as mpe2 computes it), the
        rest of the vector is the communication state. Forces are scaled by the agent's accel.
        """
        E = self.num_envs
        force = np.zeros((self._n_agents, 2, E))
        comm = np.zeros((self._n_agents, self._dim_c, E))
        for g, idx in self._group_index.items():
            if g not in actions:
                raise ValueError(f"no actions for group {g!r}; expected keys {list(self.groups)}")
            a = np.asarray(actions[g])
            movable, silent = bool(self._layout.movable[idx[0]]), bool(self._layout.silent[idx[0]])
            space = self._action_spaces[self.agents[idx[0]]]
            if self.continuous_actions:
                if a.shape != (E, len(idx), space.shape[0]) or a.dtype.kind != "f":
                    raise ValueError(
                        f"actions[{g!r}]: expected float [{E}, {len(idx)}, {space.shape[0]}], "
                        f"got {a.dtype} {list(a.shape)}"
                    )
                a = np.clip(a, 0.0, 1.0).transpose(1, 2, 0)  # as mpe2's ClipOutOfBoundsWrapper (it warns)
                said = a
                if movable:
                    force[idx, 0] = (a[:, 2] - a[:, 1]).astype(np.float64) * self._accel[idx]
                    force[idx, 1] = (a[:, 4] - a[:, 3]).astype(np.float64) * self._accel[idx]
                    said = a[:, N_MOVES:]
                if not silent:
                    comm[idx] = said
            else:
                if a.shape != (E, len(idx)) or a.dtype.kind not in "iu":
                    raise ValueError(
                        f"actions[{g!r}]: expected int [{E}, {len(idx)}], got {a.dtype} {list(a.shape)}"
                    )
                if a.size and (a.min() < 0 or a.max() >= space.n):
                    raise ValueError(f"actions[{g!r}] outside Discrete({space.n}): [{a.min()}, {a.max()}]")
                said = a.T
                if movable:
                    move = said % N_MOVES
                    force[idx, 0] = MOVE_DIRECTIONS[:, 0][move] * self._accel[idx]
                    force[idx, 1] = MOVE_DIRECTIONS[:, 1][move] * self._accel[idx]
                    said = said // N_MOVES
                if not silent:
                    comm[idx] = said[:, None] == np.arange(self._dim_c)[:, None]
        return force, comm

    def _integrate(self, force: np.ndarray) -> None:
        """One mpe2 world step: contact forces, then position, damping, force and speed limit.

        Contact force on a movable colliding agent ``i`` from each other colliding entity ``j``
        (mpe2's ``get_collision_force``): ``c * (p_i - p_j) / d * k * log(1 + exp(-(d - d_min) / k))``
        with ``c = 100``, ``k = 1e-3``, ``d_min`` the sum of radii; summed in entity order.
        """
        if len(self._receivers) and self._partners.shape[1]:
            delta = self._pos[self._receivers, None] - self._pos[self._partners]  # [R, K, 2, E]
            dist = distance(delta)  # [R, K, E]
            k = CONTACT_MARGIN
            penetration = np.logaddexp(0.0, -(dist - self._contact_dist) / k) * k
            contact = CONTACT_FORCE * delta / dist[:, :, None] * penetration[:, :, None]
            total = force[self._receivers]
            for j in range(contact.shape[1]):  # mpe2 adds pair by pair in entity order
                total = total + contact[:, j]
            force[self._receivers] = total
        n_agents = self._n_agents
        # immovable agents have zero velocity and force, so updating them too leaves them in place
        self._pos[:n_agents] += self._vel * DT
        self._vel = self._vel * (1 - DAMPING) + force * DT  # mass 1
        if self._has_max_speed:
            speed = distance(self._vel)  # [A, E]
            over = speed > self._max_speed  # False where the limit is inf
            if over.any():
                limited = self._vel / np.where(over, speed, 1.0)[:, None] * self._max_speed[:, None]
                self._vel = np.where(over[:, None], limited, self._vel)

    # ------------------------------------------------------------------ mpe2 state
    def set_state_from_mpe2(self, copy_index: int, mpe2_env: Any) -> None:
        """Copy a live mpe2 env's world into copy ``copy_index`` (positions, velocities, comm, goals, steps).

        ``mpe2_env``: any mpe2 env of this scenario (parallel, AEC or raw; ``.unwrapped`` is used)
        built with the same settings (``max_cycles``, ``continuous_actions`` and the scenario's
        kwargs); a mismatch raises ``ValueError``. Other copies are untouched.
        """
        raw = getattr(mpe2_env, "unwrapped", mpe2_env)
        world = raw.world
        names = [a.name for a in world.agents]
        if names != self.agents or len(world.landmarks) != self._n_landmarks:
            raise ValueError(
                f"mpe2 env has agents {names} and {len(world.landmarks)} landmarks; "
                f"this env has {self.agents} and {self._n_landmarks}"
            )
        settings = {"max_cycles": self.max_cycles, "continuous_actions": self.continuous_actions}
        settings.update(self._mpe2_settings())
        for key, ours in settings.items():
            theirs = getattr(raw, key) if hasattr(raw, key) else getattr(raw.scenario, key)
            if theirs != ours:
                raise ValueError(f"mpe2 env has {key}={theirs!r}, this env {key}={ours!r}")
        i = copy_index
        entities = list(world.agents) + list(world.landmarks)
        self._pos[:, :, i] = [e.state.p_pos for e in entities]
        self._vel[:, :, i] = [a.state.p_vel if a.movable else np.zeros(2) for a in world.agents]
        self._comm[:, :, i] = [a.state.c for a in world.agents]
        self._goals[:, i] = self._goals_from_world(world)
        self._steps[i] = raw.steps
        self._load_extra(i, world)
        self._started = True

    def _landmark_at(self, index: np.ndarray) -> np.ndarray:
        """``[2, E]``: the position of landmark ``index[e]`` in each copy ``e`` (``index``: int ``[E]``)."""
        return self._pos[self._n_agents + index, :, self._copy_range].T

    # ------------------------------------------------------------------ scenario hooks
    def _observe_groups(self) -> dict[str, np.ndarray]:
        """``{group: float32 [E, A_g, obs_dim]}`` from the current state."""
        raise NotImplementedError

    def _reward(self) -> np.ndarray:
        """``float64 [A, E]``: each agent's reward after the world step (local/global mixing included)."""
        raise NotImplementedError

    def _terminal(self) -> np.ndarray:
        """``bool [E]``: copies whose scenario says the episode is over (mpe2's ``is_terminal``)."""
        return np.zeros(self.num_envs, dtype=bool)

    def _goals_from_world(self, world: Any) -> list[int]:
        """The ``G`` goal landmark indices of an mpe2 world."""
        return []

    def _mpe2_settings(self) -> dict[str, Any]:
        """Settings that must equal the mpe2 env's (attribute of the raw env or of its scenario)."""
        return {}

    def _after_reset(self, idx: np.ndarray) -> None:
        """Per-copy properties set at reset (prey speeds of simple_tag's curriculum)."""

    def _load_extra(self, i: int, world: Any) -> None:
        """Copy per-copy properties beyond positions, velocities, comm and goals from an mpe2 world."""
