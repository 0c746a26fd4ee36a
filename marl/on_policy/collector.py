"""The rollout collector: runs the policy through the act -> step loop and fills rollouts.

``collect()`` runs the policy for ``T`` steps of ``E`` env copies through the run's
:class:`marl.loop.EnvLoop` and returns per-group :class:`~marl.data.rollout.GroupRollout`
storage plus the episodes that finished. With a vector env split into chunks (one per worker
process) and ``env.overlap``, the policy acts on one chunk while the others are stepping, so
env stepping and inference overlap on different cores::

    send(0, a0); send(1, a1)             # both chunks step
    recv(0) -> store, act on chunk 0, send(0)   # chunk 1 still stepping
    recv(1) -> store, act on chunk 1, send(1)   # chunk 0 stepping meanwhile

The last actions of a rollout are not sent: the next rollout starts by acting on
the loop's current observations with the updated policy.

Recurrent policies: the collector carries a hidden state per env copy and agent across
steps and rollouts (``hidden``), stores it at the first step of every BPTT chunk, and
zeroes an agent's state right after the step its episode or life ends
(:func:`marl.loop.episode_ends`), recording that in the rollout's ``reset``; values of final
observations (truncation) and of the last observations read the state they follow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from marl.data.rollout import GroupRollout
from marl.loop import EnvLoop, episode_ends, reset_hidden
from marl.multi_agent.groups import critic_input_shape, is_image
from marl.normalization import RewardScaler
from marl.on_policy.policy import ActorCriticPolicy
from marl.types import EpisodeStats

_STORED = ("obs", "critic_in", "action", "log_prob", "value", "alive", "reward", "terminated", "truncated",
           "action_mask", "reset")
"""Storage fields the collector writes at every step."""


class RolloutResult(NamedTuple):
    """What one ``collect`` returns.

    Attributes:
        groups: group -> filled storage (advantages not yet computed).
        last_value: group -> ``V(obs_T)`` ``[E, A]`` for bootstrapping.
        episodes: episodes that finished during the rollout.
        env_steps: vector env steps taken, summed over env copies (``T' * E``).
        agent_steps: agent decisions taken (alive agents over all steps).
        steps: ``T'``, the steps per copy the storage holds (its first ``T'`` rows): ``T`` unless a ``stop``
            ended the rollout early.
    """

    groups: dict[str, GroupRollout]
    last_value: dict[str, torch.Tensor]
    episodes: list[EpisodeStats]
    env_steps: int
    agent_steps: int
    steps: int


class RolloutCollector:
    """Steps a vector env with a policy and stores what happened.

    Args:
        loop: the env copies and their current observations (its units decide the overlap).
        policy: the acting policy (its normalizers update while collecting).
        num_steps: T, steps per env copy per rollout.
        reward_norm: scale rewards by the running return std.
        reward_clip: clip scaled rewards to ``[-clip, clip]`` (0 = off).
        gamma: discount of the reward scaler's running return.
        bptt_len: recurrent policies: steps per training chunk (its first step's hidden state is stored);
            0 = ``num_steps``.

    Attributes:
        hidden: recurrent policies: group -> ``[E, A, S]`` state of the current step; ``None`` otherwise.
    """

    def __init__(
        self,
        loop: EnvLoop,
        policy: ActorCriticPolicy,
        *,
        num_steps: int,
        reward_norm: bool,
        reward_clip: float,
        gamma: float,
        bptt_len: int = 0,
    ) -> None:
        self.loop = loop
        self.policy = policy
        self.num_steps = num_steps
        spec = loop.env.spec
        self.spec = spec
        self.num_envs = loop.num_envs
        device = policy.device
        self.storage: dict[str, GroupRollout] = {}
        central = policy.critic == "central"
        self.hidden = policy.initial_hidden(self.num_envs)
        self.chunk_len = bptt_len or num_steps

        for g in spec.groups:
            obs_dtype = torch.uint8 if is_image(g.obs_space.shape, g.obs_space.dtype) else torch.float32
            self.storage[g.name] = GroupRollout(
                num_steps, self.num_envs, g.n_agents, obs_shape=tuple(g.obs_space.shape), obs_dtype=obs_dtype,
                critic_shape=critic_input_shape(spec, g, "central") if central else None,
                action_shape=g.action_shape, action_dtype=torch.int64 if g.discrete else torch.float32,
                n_actions_mask=int(g.action_space.n) if (g.discrete and g.has_action_mask) else None, device=device,
                hidden_size=0 if self.hidden is None else self.hidden[g.name].shape[-1], bptt_len=bptt_len,
            )
        # On CPU the storage is written through numpy views of its tensors (a numpy slice
        # assignment costs a fraction of a tensor one; a step writes about ten fields per group).
        # A torch-native env (marl.env.batched) hands tensors: written as tensors, never through numpy.
        self.tensors = bool(getattr(loop.env, "tensors", False))
        self._views: dict[str, dict[str, np.ndarray]] | None = None
        if device.type == "cpu" and not self.tensors:
            self._views = {
                g: {k: getattr(buf, k).numpy() for k in _STORED if getattr(buf, k) is not None}
                for g, buf in self.storage.items()
            }
        self.reward_scalers: dict[str, RewardScaler] = {}
        if reward_norm:
            for g in spec.groups:
                self.reward_scalers[g.name] = RewardScaler(
                    (self.num_envs, g.n_agents), gamma, clip=reward_clip or None
                )
        self.reward_clip = reward_clip

    def _act_and_send(self, u: int) -> dict:
        """Act on the env copies of unit ``u`` and send them their actions."""
        obs, state = self.loop.unit_inputs(u)
        if self.hidden is None:
            out = self.policy.act(obs, state, update_stats=True)
            self.loop.send(u, out.env_action)
            return {"out": out, "obs": obs}
        sl = self.loop.unit_slices[u]
        hidden = {g: h[sl] for g, h in self.hidden.items()}
        out = self.policy.act(obs, state, update_stats=True, hidden=hidden)
        self.loop.send(u, out.env_action)
        return {"out": out, "obs": obs, "hidden": hidden}

    def collect(self, stop: Callable[[int], bool] | None = None) -> RolloutResult:
        """Run ``T`` steps on every env copy; return the filled storage.

        Args:
            stop: asked once per step with the number of steps the rollout will hold after it; true makes that
                step the last (its rows are the storage's first ``T'``; no action is sent beyond it). ``None``:
                always ``T`` steps.
        """
        T, loop = self.num_steps, self.loop
        units = range(len(loop.units))
        pending = [self._act_and_send(u) for u in units]
        episodes: list[EpisodeStats] = []
        agent_steps = 0
        for t in range(T):
            last = t == T - 1 or (stop is not None and stop(t + 1))
            for u in units:
                step = loop.recv(u)
                agent_steps += self._store(t, loop.unit_slices[u], pending[u], step)  # before advance: reads the inputs
                episodes.extend(step.episodes)
                loop.advance(u, step)
                if not last:
                    pending[u] = self._act_and_send(u)
            if last:
                break
        steps = t + 1
        last_obs = {g: o.obs for g, o in loop.obs.items()}
        if self.hidden is None:
            last_value = self.policy.values(last_obs, loop.state)
        else:
            last_value = self.policy.values(last_obs, loop.state, hidden=self.hidden)
        return RolloutResult(self.storage, last_value, episodes, steps * self.num_envs, agent_steps, steps)

    def _store(self, t: int, sl: slice, prev: dict, step) -> int:
        out = prev["out"]
        obs = prev["obs"]
        n_alive = 0
        final_obs_needed = {}
        ended = None
        if self.hidden is not None:
            ended = episode_ends(step, sl.start)
            if t % self.chunk_len == 0:
                for g, h in prev["hidden"].items():
                    self.storage[g].hidden[t // self.chunk_len, sl] = h
        for g, tr in step.transition.items():
            alive = obs[g].alive
            reward = tr.reward
            scaler = self.reward_scalers.get(g)
            if scaler is not None:
                reward = scaler(reward, tr.terminated | tr.truncated, alive, sl)
            elif self.reward_clip > 0 and isinstance(reward, torch.Tensor):
                reward = reward.clamp(-self.reward_clip, self.reward_clip)
            elif self.reward_clip > 0:
                reward = np.clip(reward, -self.reward_clip, self.reward_clip)
            fields = {
                "obs": out.obs[g], "action": out.action[g], "log_prob": out.log_prob[g], "value": out.value[g],
                "alive": alive, "reward": reward, "terminated": tr.terminated, "truncated": tr.truncated,
            }
            if self.storage[g].critic_in is not None:
                fields["critic_in"] = out.critic_in[g]
            if self.storage[g].action_mask is not None:
                fields["action_mask"] = obs[g].action_mask
            if ended is not None:
                fields["reset"] = ended[g]
            self._write(g, t, sl, fields)
            n_alive += int(alive.sum())
            if tr.truncated.any():
                final_obs_needed[g] = tr
        if final_obs_needed:
            final_state = step.final_state
            final_obs = {g: step.transition[g].final_obs for g in step.transition}
            if ended is None:
                vals = self.policy.values(final_obs, final_state)
            else:  # the final observation follows the state after this step, before its reset
                vals = self.policy.values(final_obs, final_state, hidden=out.hidden)
            for g, tr in final_obs_needed.items():
                trunc = torch.as_tensor(tr.truncated, device=vals[g].device)
                self.storage[g].final_value[t, sl] = torch.where(trunc, vals[g], torch.zeros_like(vals[g]))
        else:
            for g in step.transition:
                self.storage[g].final_value[t, sl] = 0.0
        if ended is not None:
            for g, h in reset_hidden(out.hidden, ended).items():
                self.hidden[g][sl] = h
        return n_alive

    def _write(self, g: str, t: int, sl: slice, fields: dict[str, np.ndarray | torch.Tensor]) -> None:
        """Write step ``t`` of env copies ``sl`` of group ``g``'s storage (numpy arrays or tensors)."""
        if self._views is not None:
            views = self._views[g]
            for k, x in fields.items():
                views[k][t, sl] = x.numpy() if isinstance(x, torch.Tensor) else x
            return
        buf = self.storage[g]
        for k, x in fields.items():
            getattr(buf, k)[t, sl] = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))

    def state_dict(self) -> dict:
        state: dict = {"reward_norm": {g: s.state_dict() for g, s in self.reward_scalers.items()}}
        if self.hidden is not None:  # the copies' current hidden states (exact resume of a recurrent run)
            state["hidden"] = {g: h.cpu().clone() for g, h in self.hidden.items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        for g, s in self.reward_scalers.items():
            s.load_state_dict(state["reward_norm"][g])
        if self.hidden is not None and "hidden" in state:
            for g, h in self.hidden.items():
                if tuple(state["hidden"][g].shape) == tuple(h.shape):
                    h.copy_(state["hidden"][g])
