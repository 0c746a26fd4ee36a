"""Replay rows of turn-based (AEC) games: one transition per agent from one of its turns to its next.

In a turn-based game (``spec.turn_based``, :class:`marl.env.adapters.AECAdapter`) one agent acts per
env step, so the transition an agent learns from is not one env step long: it runs from the agent's
move to its **next turn** (or to the end of its episode), and its reward is everything the agent
received in between, the opponents' moves included (the loser of a game gets -1 on the winner's
move). :class:`TurnRows` keeps, per env copy and agent, the pending move (observation, action
mask, action, reward so far) and turns each vector step into the replay rows of the transitions
that completed at it:

* an agent whose episode ended at the step: ``next_obs`` = its final observation and
  ``next_action_mask`` the mask given with it (``tr.final_action_mask``: what a truncated agent's
  bootstrap chooses among; every action where the env gave none), ``terminated`` / ``truncated`` as
  the env said;
* an agent whose turn comes again (alive in the next observation): ``next_obs`` = the
  observation it now acts on, with its action mask;

``alive`` marks the completed transitions (everything else in the row is padding that every loss
masks out). The rows are one-step transitions (``algo.n_step`` must be 1: consecutive rows of a
copy are not one agent's consecutive turns).
"""

from __future__ import annotations

import numpy as np

from marl.types import GroupObs, GroupTransition


class TurnRows:
    """Pending moves of one group's agents in ``E`` env copies; :meth:`rows` emits completed transitions.

    The pending moves are not checkpointed: after a resume each agent's first transition starts at its
    first move (the moves in flight at the checkpoint give no row).
    """

    def __init__(self) -> None:
        self.pending: np.ndarray | None = None  # [E, A] bool; the buffers below are allocated at the first step

    def rows(self, before: GroupObs, action: np.ndarray, tr: GroupTransition, after: GroupObs) -> dict[str, np.ndarray]:
        """The replay rows ``[E, A, ...]`` of the transitions completed by one vector step.

        Args:
            before: the observations the step acted on (``alive`` = the agent to move).
            action: ``[E, A, ...]`` the actions chosen (only the mover's is used by the env).
            tr: what the step did (rewards of every agent, endings, final observations).
            after: the observations after the step (after an auto-reset: the next episode's).
        """
        moved = before.alive
        if self.pending is None:
            self.pending = np.zeros_like(moved)
            self.obs, self.action = np.zeros_like(before.obs), np.zeros_like(action)
            self.reward = np.zeros(moved.shape, np.float32)
            self.action_mask = None if before.action_mask is None else np.ones(before.action_mask.shape, bool)
        self.pending |= moved
        self.obs[moved] = before.obs[moved]
        self.action[moved] = action[moved]
        self.reward[moved] = 0.0
        if self.action_mask is not None:
            self.action_mask[moved] = before.action_mask[moved]
        self.reward += np.where(self.pending, tr.reward, 0.0).astype(np.float32)

        ended = self.pending & (tr.terminated | tr.truncated)
        turn = self.pending & ~ended & after.alive
        done = ended | turn
        next_obs = np.zeros_like(self.obs)
        next_obs[turn] = after.obs[turn]
        next_obs[ended] = tr.final_obs[ended]
        rows = {
            "obs": self.obs.copy(),
            "action": self.action.copy(),
            "reward": np.where(done, self.reward, 0.0).astype(np.float32),
            "next_obs": next_obs,
            "terminated": ended & tr.terminated,
            "truncated": ended & tr.truncated & ~tr.terminated,
            "alive": done,
            "next_alive": done,
        }
        if self.action_mask is not None:
            rows["action_mask"] = self.action_mask.copy()
            next_mask = np.ones_like(self.action_mask)
            if after.action_mask is not None:
                next_mask[turn] = after.action_mask[turn].astype(bool)
            if tr.final_action_mask is not None:
                next_mask[ended] = tr.final_action_mask[ended].astype(bool)
            rows["next_action_mask"] = next_mask
        self.pending &= ~done
        self.reward[done] = 0.0
        return rows
