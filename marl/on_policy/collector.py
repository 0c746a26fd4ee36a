"""The collector owns the env copies and their last observations, and fills rollouts.

``collect(num_steps)`` runs the policy for ``T`` steps of ``E`` env copies and
returns per-group :class:`~marl.data.rollout.GroupRollout` storage plus the
episodes that finished. With a vector env split into chunks (one per worker
process), the policy acts on one chunk while the others are stepping, so env
stepping and inference overlap on different cores::

    send(0, a0); send(1, a1)             # both chunks step
    recv(0) -> store, act on chunk 0, send(0)   # chunk 1 still stepping
    recv(1) -> store, act on chunk 1, send(1)   # chunk 0 stepping meanwhile

The last actions of a rollout are not sent: the next rollout starts by acting on
the stored observations with the updated policy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from marl import health
from marl.data.rollout import GroupRollout
from marl.env.vector import concat_steps
from marl.multi_agent.groups import critic_input_shape, is_image
from marl.normalization import RewardScaler
from marl.on_policy.policy import ActorCriticPolicy
from marl.types import EpisodeStats, GroupObs

_STORED = ("obs", "critic_in", "action", "log_prob", "value", "alive", "reward", "terminated", "truncated",
           "action_mask")
"""Storage fields the collector writes at every step."""


class RolloutResult(NamedTuple):
    """What one ``collect`` returns.

    Attributes:
        groups: group -> filled storage (advantages not yet computed).
        last_value: group -> ``V(obs_T)`` ``[E, A]`` for bootstrapping.
        episodes: episodes that finished during the rollout.
        env_steps: vector env steps taken, summed over env copies (``T * E``).
        agent_steps: agent decisions taken (alive agents over all steps).
    """

    groups: dict[str, GroupRollout]
    last_value: dict[str, torch.Tensor]
    episodes: list[EpisodeStats]
    env_steps: int
    agent_steps: int


class RolloutCollector:
    """Steps a vector env with a policy and stores what happened.

    Args:
        env: a vector env (``marl.env.VectorEnv``): ``reset``, ``send``, ``recv``, ``chunk_slice``.
        policy: the acting policy (its normalizers update while collecting).
        num_steps: T, steps per env copy per rollout.
        reward_norm: scale rewards by the running return std.
        reward_clip: clip scaled rewards to ``[-clip, clip]`` (0 = off).
        gamma: discount of the reward scaler's running return.
        seed: seed of the env copies' first reset.
        overlap: act on each chunk as soon as its step returns (inference overlaps the
            other chunks' stepping); ``False`` acts once on all env copies per step.
        check_inputs: raise on a NaN/inf observation or reward, naming the agent and env copy.
    """

    def __init__(
        self,
        env,
        policy: ActorCriticPolicy,
        num_steps: int,
        reward_norm: bool,
        reward_clip: float,
        gamma: float,
        seed: int,
        overlap: bool = True,
        check_inputs: bool = False,
    ) -> None:
        self.env = env
        self.policy = policy
        self.num_steps = num_steps
        spec = env.spec
        self.spec = spec
        self.num_envs = env.num_envs
        chunks = list(range(env.num_chunks))
        # Units the policy acts on: one per chunk when overlapping, else all chunks at once.
        self.units = [[k] for k in chunks] if overlap else [chunks]
        self.unit_slices = [slice(env.chunk_slice(u[0]).start, env.chunk_slice(u[-1]).stop) for u in self.units]
        device = policy.device
        self.storage: dict[str, GroupRollout] = {}
        central = policy.critic == "central"

        for g in spec.groups:
            obs_dtype = torch.uint8 if is_image(g.obs_space.shape, g.obs_space.dtype) else torch.float32
            self.storage[g.name] = GroupRollout(
                num_steps, self.num_envs, g.n_agents, tuple(g.obs_space.shape), obs_dtype,
                critic_input_shape(spec, g, "central") if central else None,
                g.action_shape, torch.int64 if g.discrete else torch.float32,
                int(g.action_space.n) if (g.discrete and g.has_action_mask) else None, device,
            )
        # On CPU the storage is written through numpy views of its tensors (a numpy slice
        # assignment costs a fraction of a tensor one; a step writes about ten fields per group).
        self._views: dict[str, dict[str, np.ndarray]] | None = None
        if device.type == "cpu":
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
        self.check_inputs = check_inputs
        self.agents = {g.name: g.agents for g in spec.groups}
        self.set_obs(*env.reset(seed))

    def set_obs(self, obs: dict[str, GroupObs], state: np.ndarray | None) -> None:
        """Take the env copies' current observations (after a reset or a restore)."""
        if self.check_inputs:
            health.check_inputs({g: o.obs for g, o in obs.items()}, None, self.agents)
        # Own copies: a vector env may hand out views of buffers it rewrites on the next step.
        self.obs = {g: GroupObs(o.obs.copy(), o.alive.copy(), None if o.action_mask is None else o.action_mask.copy())
                    for g, o in obs.items()}
        self.state = None if state is None else state.copy()

    def _act_and_send(self, u: int) -> dict:
        """Act on the env copies of unit ``u`` and send each of its chunks their actions."""
        sl = self.unit_slices[u]
        obs = {g: GroupObs(o.obs[sl], o.alive[sl], None if o.action_mask is None else o.action_mask[sl])
               for g, o in self.obs.items()}
        state = None if self.state is None else self.state[sl]
        out = self.policy.act(obs, state, update_stats=True)
        for k in self.units[u]:
            ck = self.env.chunk_slice(k)
            part = slice(ck.start - sl.start, ck.stop - sl.start)
            self.env.send(k, {g: a[part] for g, a in out.env_action.items()})
        return {"out": out, "obs": obs}

    def collect(self) -> RolloutResult:
        """Run ``T`` steps on every env copy; return the filled storage."""
        T = self.num_steps
        pending = [self._act_and_send(u) for u in range(len(self.units))]
        episodes: list[EpisodeStats] = []
        agent_steps = 0
        for t in range(T):
            for u, sl in enumerate(self.unit_slices):
                steps = [self.env.recv(k) for k in self.units[u]]
                step = steps[0] if len(steps) == 1 else concat_steps(steps)
                if self.check_inputs:
                    health.check_inputs({g: o.obs for g, o in step.obs.items()},
                                        {g: tr.reward for g, tr in step.transition.items()}, self.agents, sl.start)
                agent_steps += self._store(t, sl, pending[u], step)
                episodes.extend(step.episodes)
                # Merge the unit's new observations into the full-batch view.
                for g, o in step.obs.items():
                    self.obs[g].obs[sl] = o.obs
                    self.obs[g].alive[sl] = o.alive
                    if o.action_mask is not None:
                        self.obs[g].action_mask[sl] = o.action_mask
                if self.state is not None:
                    self.state[sl] = step.state
                if t < T - 1:
                    pending[u] = self._act_and_send(u)
        last_value = self.policy.values({g: o.obs for g, o in self.obs.items()}, self.state)
        return RolloutResult(self.storage, last_value, episodes, T * self.num_envs, agent_steps)

    def _store(self, t: int, sl: slice, prev: dict, step) -> int:
        out = prev["out"]
        obs = prev["obs"]
        n_alive = 0
        final_obs_needed = {}
        for g, tr in step.transition.items():
            alive = obs[g].alive
            reward = tr.reward
            scaler = self.reward_scalers.get(g)
            if scaler is not None:
                reward = scaler(reward, tr.terminated | tr.truncated, alive, sl)
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
            self._write(g, t, sl, fields)
            n_alive += int(alive.sum())
            if tr.truncated.any():
                final_obs_needed[g] = tr
        if final_obs_needed:
            final_state = step.final_state
            vals = self.policy.values({g: step.transition[g].final_obs for g in step.transition}, final_state)
            for g, tr in final_obs_needed.items():
                trunc = torch.from_numpy(tr.truncated)
                self.storage[g].final_value[t, sl] = torch.where(trunc, vals[g], torch.zeros_like(vals[g]))
        else:
            for g in step.transition:
                self.storage[g].final_value[t, sl] = 0.0
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
        return {"reward_norm": {g: s.state_dict() for g, s in self.reward_scalers.items()}}

    def load_state_dict(self, state: dict) -> None:
        for g, s in self.reward_scalers.items():
            s.load_state_dict(state["reward_norm"][g])
