"""Sequence replay for recurrent Q-learning: fixed-length sequences cut at episode ends, with stored states.

:class:`SequenceReplay` takes one group's rows of each vector step (the fields of
:func:`marl.data.replay_schema`, as :func:`marl.off_policy.replay.replay_rows` builds them), plus the
hidden state the actor fed at the step and which env copies' episodes ended there. Per env copy it
builds the current sequence; a sequence is stored (one slot of a circular store of ``capacity``
sequences) when it holds ``seq_len`` steps or its episode ends (then padded). The next sequence of an
episode starts with the last ``burn_in`` steps of the stored one (and their stored state), the next
episode with a fresh sequence. Fields of a stored sequence (``L = seq_len``, ``P = L + 1`` positions)::

    obs          [P, A, *obs]   position t + 1 follows step t; position `length` is the final observation
                                where the episode ended (never the next episode's first)
    alive        [P, A]         position `length`: the agents' next_alive
    action_mask  [P, A, n]      when the group has masks (position `length`: next_action_mask)
    state        [P, S_env]     when the schema has the global state (position `length`: next_state)
    action, reward, terminated, ended (terminated | truncated)   [L, A]
    valid        [L]            real steps (padding after the episode's end is False)
    hidden       [A, S]         the actor's state before step 0
    burn_in      []             0 for a sequence starting at its episode's first step, else the burn-in

Sampling is uniform over stored sequences (:class:`marl.data.UniformSampler`) or prioritized
(:class:`marl.data.PrioritizedSampler`, one priority per sequence; the learner's priority is
``eta * max|delta| + (1 - eta) * mean|delta|``, :func:`marl.algos.r2d2.sequence_priority`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from marl.data.replay import Sampler, UniformSampler

STEP_FIELDS = ("action", "reward", "terminated", "ended")
"""Fields with one entry per step ``[L, A]``."""
POSITION_FIELDS = ("obs", "alive", "action_mask", "state")
"""Fields with one entry per position ``[P, A, ...]`` (the step's input, and after the last step the next one)."""


class SequenceReplay:
    """Circular store of fixed-length sequences of one group, built per env copy as steps arrive.

    Args:
        schema: one row's fields ``name -> (shape, dtype)`` (:func:`marl.data.replay_schema`); ``obs``,
            ``action``, ``alive`` and optionally ``action_mask`` give the stored shapes.
        hidden_size: ``S``, the state width per agent.
        capacity: stored sequences.
        n_envs: env copies ``E`` (one sequence under construction each).
        seq_len: ``L``, steps per sequence, burn-in included.
        burn_in: steps a continued sequence repeats from the previous one (``< seq_len``).
        sampler: uniform by default; a :class:`marl.data.PrioritizedSampler` of ``capacity`` rows.

    Example (one copy, one agent, 3-step sequences without burn-in; an episode of 4 steps):

    >>> import numpy as np
    >>> flag = ((1,), np.bool_)
    >>> schema = {"obs": ((1, 2), np.float32), "action": ((1,), np.int64)}
    >>> buf = SequenceReplay(schema, hidden_size=4, capacity=8, n_envs=1, seq_len=3, burn_in=0)
    >>> for t in range(4):
    ...     end = np.array([t == 3])
    ...     row = {"obs": np.full((1, 1, 2), t, np.float32), "next_obs": np.full((1, 1, 2), t + 1, np.float32),
    ...            "action": np.zeros((1, 1), np.int64), "reward": np.ones((1, 1), np.float32),
    ...            "terminated": end[:, None], "truncated": np.zeros((1, 1), bool),
    ...            "alive": np.ones((1, 1), bool), "next_alive": np.ones((1, 1), bool)}
    ...     slots = buf.add(row, np.zeros((1, 1, 4), np.float32), end)
    >>> len(buf), buf.fields["valid"][:2].tolist(), buf.fields["obs"][1, :, 0, 0].tolist()
    (2, [[True, True, True], [True, False, False]], [3.0, 4.0, 0.0, 0.0])
    """

    def __init__(self, schema: Mapping[str, tuple[tuple[int, ...], Any]], hidden_size: int, capacity: int,
                 n_envs: int, seq_len: int, burn_in: int, sampler: Sampler | None = None) -> None:
        if not 0 <= burn_in < seq_len:
            raise ValueError(f"burn_in must lie in [0, seq_len={seq_len}), got {burn_in}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 sequence, got {capacity}")
        self.capacity, self.n_envs, self.seq_len, self.burn_in = int(capacity), int(n_envs), int(seq_len), int(burn_in)
        self.sampler: Sampler = UniformSampler() if sampler is None else sampler
        if self.sampler.capacity is not None and self.sampler.capacity != self.capacity:
            raise ValueError(f"sampler was built for {self.sampler.capacity} rows, the replay holds {self.capacity}")
        obs_shape, obs_dtype = schema["obs"]
        n_agents = tuple(schema["action"][0])[:1]
        length, pos = self.seq_len, self.seq_len + 1
        self.layout: dict[str, tuple[tuple[int, ...], Any]] = {
            "obs": ((pos, *obs_shape), np.dtype(obs_dtype)), "alive": ((pos, *n_agents), np.dtype(bool)),
            "action": ((length, *schema["action"][0]), np.dtype(schema["action"][1])),
            "reward": ((length, *n_agents), np.dtype(np.float32)), "terminated": ((length, *n_agents), np.dtype(bool)),
            "ended": ((length, *n_agents), np.dtype(bool)), "valid": ((length,), np.dtype(bool)),
            "hidden": ((*n_agents, hidden_size), np.dtype(np.float32)), "burn_in": ((), np.dtype(np.int64)),
        }
        for key in ("action_mask", "state"):  # optional position fields
            if key in schema:
                shape, dtype = schema[key]
                self.layout[key] = ((pos, *shape), np.dtype(dtype))
        self.fields = {k: np.zeros((self.capacity, *shape), dtype) for k, (shape, dtype) in self.layout.items()}
        # the sequences under construction, one per copy; their hidden holds the state of every step
        self.pending = {k: np.zeros((self.n_envs, *shape), dtype) for k, (shape, dtype) in self.layout.items()
                        if k not in ("hidden", "burn_in")}
        self.pending["hidden"] = np.zeros((self.n_envs, length, *n_agents, hidden_size), np.float32)
        self.count = np.zeros(self.n_envs, np.int64)  # steps in each copy's pending sequence
        self.fresh = np.ones(self.n_envs, bool)  # the pending sequence starts at its episode's first step
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        """Sequences stored (at most ``capacity``)."""
        return self.size

    def add(self, rows: Mapping[str, np.ndarray], hidden: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """One vector step of every copy: ``rows`` (``[E, A, ...]`` replay rows), ``hidden [E, A, S]`` (the
        state fed at this step), ``episode_end [E]`` bool; returns the slots of the sequences stored now."""
        e = np.arange(self.n_envs)
        n = self.count
        p = self.pending
        p["obs"][e, n], p["obs"][e, n + 1] = rows["obs"], rows["next_obs"]
        p["alive"][e, n], p["alive"][e, n + 1] = rows["alive"], rows["next_alive"]
        for key in ("action_mask", "state"):
            if key in p:
                p[key][e, n], p[key][e, n + 1] = rows[key], rows["next_" + key]
        p["action"][e, n], p["reward"][e, n] = rows["action"], rows["reward"]
        p["terminated"][e, n] = rows["terminated"]
        p["ended"][e, n] = np.asarray(rows["terminated"]) | np.asarray(rows["truncated"])
        p["valid"][e, n] = True
        p["hidden"][e, n] = hidden
        self.count = n + 1
        done = np.asarray(episode_end, bool)
        slots = self._store(np.flatnonzero(done | (self.count == self.seq_len)))
        self._restart(np.flatnonzero(done), keep=0, fresh=True)
        self._restart(np.flatnonzero(~done & (self.count == self.seq_len)), keep=self.burn_in, fresh=False)
        return slots

    def cut(self, lanes: np.ndarray) -> None:
        """End the pending sequences of copies ``lanes`` (their next step starts a new episode, e.g. after a lost
        worker): stored as they are when they hold a step to train on, then restarted fresh."""
        lanes = np.asarray(lanes, np.int64)
        trained = self.count[lanes] > np.where(self.fresh[lanes], 0, self.burn_in)
        self._store(lanes[trained])
        self._restart(lanes, keep=0, fresh=True)

    def _store(self, lanes: np.ndarray) -> np.ndarray:
        if lanes.size == 0:
            return lanes
        slots = (self.pos + np.arange(lanes.size)) % self.capacity
        for k, arr in self.pending.items():
            if k != "hidden":
                self.fields[k][slots] = arr[lanes]
        self.fields["hidden"][slots] = self.pending["hidden"][lanes, 0]
        self.fields["burn_in"][slots] = np.where(self.fresh[lanes], 0, self.burn_in)
        self.pos = int((self.pos + lanes.size) % self.capacity)
        self.size = min(self.size + int(lanes.size), self.capacity)
        self.sampler.on_add(slots)
        return slots

    def _restart(self, lanes: np.ndarray, keep: int, fresh: bool) -> None:
        """Start the next sequence of copies ``lanes`` with the last ``keep`` steps of the full current one
        (``keep = 0``: nothing kept); ``fresh``: it starts at its episode's first step."""
        if lanes.size == 0:
            return
        length = self.seq_len
        for k, arr in self.pending.items():
            steps = arr.shape[1]  # L or P
            if keep:
                arr[lanes, :keep + steps - length] = arr[lanes, length - keep:]
            arr[lanes, keep + steps - length if keep else 0:] = 0
        self.count[lanes] = keep
        self.fresh[lanes] = fresh

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(indices [B], weights [B], fields)``: B stored sequences, each field ``[B, ...]`` (a copy)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty sequence replay")
        indices, weights = self.sampler.sample(np.array([self.size]), 1, batch_size, rng, beta)
        return indices, weights, self.gather(indices)

    def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Every field of the stored sequences ``indices [B]``: ``[B, ...]`` copies (the same slots of replays
        written in lockstep hold the same env steps, as value decomposition's per-group replays)."""
        return {k: v[indices] for k, v in self.fields.items()}

    def update_priorities(self, indices: np.ndarray, priority: np.ndarray | torch.Tensor) -> None:
        """New priorities (``[B]`` sequence ``|TD|`` summaries) of sequences ``indices``; a no-op when uniform."""
        if isinstance(priority, torch.Tensor):
            priority = priority.detach().cpu().numpy()
        self.sampler.update_priorities(np.asarray(indices), np.asarray(priority, np.float64))

    def nbytes_per_sequence(self) -> int:
        """Bytes one stored sequence takes (plus 8 for a PER priority)."""
        n = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in self.layout.values())
        return n + (8 if self.sampler.prioritized else 0)

    def state_dict(self) -> dict[str, Any]:
        """The stored and pending sequences, pointers and the sampler's state (numpy arrays and numbers)."""
        return {"fields": dict(self.fields), "pending": dict(self.pending), "count": self.count, "fresh": self.fresh,
                "pos": self.pos, "size": self.size, **self.sampler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` of a replay built alike; ``ValueError`` naming the field that does not fit."""
        for group, own in (("fields", self.fields), ("pending", self.pending)):
            saved = state[group]
            for k, arr in own.items():
                if k not in saved or tuple(np.shape(saved[k])) != arr.shape:
                    raise ValueError(f"saved sequence replay field {group}.{k} does not fit {arr.shape}")
        self.sampler.load_state_dict(state)
        for group, own in (("fields", self.fields), ("pending", self.pending)):
            for k, arr in own.items():
                arr[...] = np.asarray(state[group][k])
        self.count[:] = np.asarray(state["count"])
        self.fresh[:] = np.asarray(state["fresh"])
        self.pos, self.size = int(state["pos"]), int(state["size"])
