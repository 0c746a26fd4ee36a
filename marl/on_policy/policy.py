"""Actor-critic networks of all groups, and the policy that acts with them.

* :class:`GroupActorCritic` holds one group's actor and critic, each an
  :class:`~marl.nets.AgentNet` whose sharing mode (shared with one-hot agent ids,
  independent, or an explicit agent -> parameter-set map) comes from the config;
  when both read the same input with one shared parameter set they are held as
  one :class:`~marl.nets.twin.TwinMLP` (the same two networks, computed together).
* :class:`ActorCritic` is the ``nn.ModuleDict`` of every group's actor-critic: the
  one module whose ``parameters()`` the common optimizer sees (each tensor once).
* :class:`ActorCriticPolicy` pairs the networks with the per-group observation normalizers and
  turns numpy observations ``[E, A, ...]`` into numpy actions (tensors into tensors: a torch-native
  env, :mod:`marl.env.batched`, keeps its arrays on its device); it is what the
  collector and the evaluator call. Normalizer statistics update only when asked
  (training collection), never in evaluation.

Critic input: ``local`` = the agent's own (normalized) observation; ``central`` =
the env's global state (``state()``) when it has one, else the concatenation of
all agents' observations, broadcast to every agent (MAPPO).

Recurrent models (``model.recurrent: gru | lstm``): actor and critic are each a
:class:`~marl.nets.recurrent.RecurrentAgentNet` (encoder -> core -> head, the central critic
too). A group's *hidden state* is one tensor ``[E, A, S_actor + S_critic]`` (the actor's
state, then the critic's). :meth:`ActorCriticPolicy.act` takes it (``hidden=``, ``None`` =
zeros) and returns the next one in :attr:`ActOutput.hidden` (agents that did not act keep
theirs); the caller zeroes an agent's state after its episode or life ends
(:func:`marl.loop.reset_hidden`). Evaluation, video and :class:`marl.deploy.DeployedPolicy`
carry it the same way; :meth:`ActorCriticPolicy.initial_hidden` is ``None`` for feed-forward
models.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from marl.config import Config, ModelConfig
from marl.multi_agent.groups import critic_input_shape, group_sharing, is_image, obs_encoder, param_sets_for
from marl.nets import AgentNet, DiagGaussian, MaskedCategorical, scale_action
from marl.nets.recurrent import RecurrentAgentNet, scan_together
from marl.nets.twin import TwinMLP
from marl.normalization import ObsNormalizer
from marl.types import ActOutput, EnvSpec, GroupObs, GroupSpec


class GroupActorCritic(nn.Module):
    """Actor and critic of one group of agents.

    When the critic reads the actor's input (``model.critic: local``), both are
    MLPs and the group has one parameter set (``sharing: shared``), the two
    networks are held as one :class:`~marl.nets.twin.TwinMLP` (``twin``): the
    same two independent MLPs, computed together (one forward instead of two; the
    common case of single-agent envs and shared-parameter teams). Otherwise they
    are two :class:`~marl.nets.AgentNet` modules, ``actor`` and ``critic``.

    With ``model.recurrent`` set, ``actor`` and ``critic`` are
    :class:`~marl.nets.recurrent.RecurrentAgentNet` modules (never a twin) and the
    ``sequence_*`` methods run them over time with a hidden state.

    Args:
        group: the group's spaces and agents.
        model: network sizes, sharing mode and recurrent core.
        critic_in_shape: one agent's critic input shape (see :func:`critic_input_shape`).
        critic_reads_obs: whether the critic's input is the actor's observation (``model.critic: local``).
    """

    def __init__(
        self, group: GroupSpec, model: ModelConfig, critic_in_shape: tuple[int, ...], critic_reads_obs: bool = False
    ) -> None:
        super().__init__()
        self.group = group
        sharing = group_sharing(model.sharing, group)
        self.param_sets = param_sets_for(sharing, group.agents)
        n_out = int(group.action_space.n) if group.discrete else int(np.prod(group.action_space.shape))
        obs_shape = tuple(group.obs_space.shape)
        # The one encoder rule of every algorithm (model.encoder): CNN for uint8 pixels (/255) and for board planes.
        actor_enc, scale = obs_encoder(obs_shape, group.obs_space.dtype, model.encoder)
        self.recurrent = model.recurrent != "none"
        self.uses_twin = critic_reads_obs and actor_enc == "mlp" and max(self.param_sets) == 0 and not self.recurrent
        if self.recurrent:
            common = dict(n_agents=group.n_agents, cell=model.recurrent, rnn_hidden=model.rnn_hidden,
                          hidden=tuple(model.hidden), activation=model.activation, param_sets=self.param_sets,
                          agent_id=model.agent_id, strategy=model.strategy)
            critic_enc = actor_enc if tuple(critic_in_shape) == obs_shape else "mlp"
            self.actor = RecurrentAgentNet(obs_shape, n_out, out_gain=0.01, encoder=actor_enc, input_scale=scale,
                                           **common)
            self.critic = RecurrentAgentNet(tuple(critic_in_shape), 1, out_gain=1.0, encoder=critic_enc,
                                            input_scale=scale, **common)
        elif self.uses_twin:
            self.twin = TwinMLP(obs_shape, (n_out, 1), group.n_agents, hidden=tuple(model.hidden),
                                activation=model.activation, agent_id=model.agent_id, out_gains=(0.01, 1.0))
        else:
            common = dict(
                n_agents=group.n_agents,
                hidden=tuple(model.hidden),
                activation=model.activation,
                param_sets=self.param_sets,
                agent_id=model.agent_id,
                strategy=model.strategy,
            )
            critic_enc = actor_enc if tuple(critic_in_shape) == obs_shape else "mlp"
            self.actor = AgentNet(obs_shape, n_out, out_gain=0.01, encoder=actor_enc, input_scale=scale, **common)
            self.critic = AgentNet(tuple(critic_in_shape), 1, out_gain=1.0, encoder=critic_enc, input_scale=scale,
                                   **common)
        if not group.discrete:
            n_sets = max(self.param_sets) + 1
            self.log_std = nn.Parameter(torch.full((n_sets, n_out), float(model.init_log_std)))
            self.register_buffer("low", torch.as_tensor(group.action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(group.action_space.high, dtype=torch.float32))
            self.register_buffer("set_index", torch.as_tensor(self.param_sets, dtype=torch.long))

    def policy_out(self, obs: Tensor) -> Tensor:
        """The actor's output ``[..., A, n]`` (logits, or the Gaussian mean) for ``obs [..., A, *obs_shape]``."""
        return self.twin(obs)[0] if self.uses_twin else self.actor(obs)

    def _make_dist(self, out: Tensor, action_mask: Tensor | None) -> MaskedCategorical | DiagGaussian:
        if self.group.discrete:
            return MaskedCategorical(out, action_mask)
        return DiagGaussian(out, self.log_std[self.set_index].expand_as(out))

    def dist(self, obs: Tensor, action_mask: Tensor | None = None) -> MaskedCategorical | DiagGaussian:
        """Action distribution for ``obs [..., A, *obs_shape]`` (and ``action_mask [..., A, n]``)."""
        return self._make_dist(self.policy_out(obs), action_mask)

    def value(self, critic_in: Tensor) -> Tensor:
        """``V`` for ``critic_in [..., A, *critic_in_shape]`` -> ``[..., A]``."""
        return (self.twin(critic_in)[1] if self.uses_twin else self.critic(critic_in)).squeeze(-1)

    def dist_and_value(
        self, obs: Tensor, critic_in: Tensor, action_mask: Tensor | None = None
    ) -> tuple[MaskedCategorical | DiagGaussian, Tensor]:
        """:meth:`dist` and :meth:`value` together (one forward when the two are held as one TwinMLP; then
        ``critic_in`` is ``obs``)."""
        if self.uses_twin:
            out, value = self.twin(obs)
            return self._make_dist(out, action_mask), value.squeeze(-1)
        return self.dist(obs, action_mask), self.value(critic_in)

    # ---------------------------------------------------------------- recurrent
    @property
    def hidden_size(self) -> int:
        """``S``: width of the group's hidden state (actor's then critic's); 0 for feed-forward models."""
        return self.actor.state_size + self.critic.state_size if self.recurrent else 0

    def initial_hidden(self, num_envs: int) -> Tensor:
        """Zero hidden state ``[E, A, S]`` (an episode start)."""
        w = self.actor.core.weight_hh
        return torch.zeros(num_envs, self.group.n_agents, self.hidden_size, device=w.device, dtype=w.dtype)

    def sequence_forward(
        self, obs: Tensor, critic_in: Tensor | None, hidden: Tensor, alive: Tensor | None = None,
        reset: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Run actor (and critic, unless ``critic_in`` is ``None``) over ``L`` steps.

        Args:
            obs: ``[L, N, A, *obs_shape]``; critic_in: ``[L, N, A, *critic_in_shape]`` or ``None``.
            hidden: ``[N, A, S]`` state before step 0.
            alive / reset: ``[L, N, A]`` bool carry rules (:mod:`marl.nets.recurrent`); ``None`` = all alive / never.

        Returns:
            ``(policy_out [L, N, A, n], value [L, N, A] or None, hidden [N, A, S] after step L-1)``;
            without a critic input the critic's part of the state is returned unchanged.
        """
        split = self.actor.state_size
        if critic_in is None:
            out, h_actor = self.actor(obs, hidden[..., :split], alive, reset)
            return out, None, torch.cat([h_actor, hidden[..., split:]], -1)
        # both cores in one time loop (scan_together: same result as one loop per core, fewer operations)
        (core_a, h_actor), (core_c, h_critic) = scan_together(
            [self.actor.core, self.critic.core], [self.actor.features(obs), self.critic.features(critic_in)],
            [hidden[..., :split], hidden[..., split:]], alive, reset)
        return self.actor.head(core_a), self.critic.head(core_c).squeeze(-1), torch.cat([h_actor, h_critic], -1)

    def sequence_dist_and_value(
        self, obs: Tensor, critic_in: Tensor, action_mask: Tensor | None, hidden: Tensor,
        alive: Tensor | None = None, reset: Tensor | None = None,
    ) -> tuple[MaskedCategorical | DiagGaussian, Tensor]:
        """The action distribution and ``V`` over ``L`` steps (``[L, N, A]``) from a chunk's initial state
        (:meth:`sequence_forward`); the recurrent counterpart of :meth:`dist_and_value` for the update."""
        out, value, _ = self.sequence_forward(obs, critic_in, hidden, alive, reset)
        return self._make_dist(out, action_mask), value

    def sequence_value(self, critic_in: Tensor, hidden: Tensor) -> Tensor:
        """``V [N, A]`` of one step ``critic_in [N, A, ...]`` from ``hidden [N, A, S]`` (the critic's part read)."""
        value, _ = self.critic(critic_in.unsqueeze(0), hidden[..., self.actor.state_size:])
        return value[0].squeeze(-1)

    def env_action(self, action: Tensor) -> Tensor:
        """Map a policy action to the env: discrete unchanged; continuous clipped to [-1, 1] and scaled to the
        bounds."""
        if self.group.discrete:
            return action
        return scale_action(action.clamp(-1.0, 1.0), self.low, self.high)


class ActorCritic(nn.ModuleDict):
    """Every group's :class:`GroupActorCritic`, keyed by group name."""

    def __init__(self, spec: EnvSpec, model: ModelConfig) -> None:
        super().__init__(
            {g.name: GroupActorCritic(g, model, critic_input_shape(spec, g, model.critic), model.critic == "local")
             for g in spec.groups}
        )


class ActorCriticPolicy:
    """Networks plus observation normalizers: numpy observations in, actions out.

    Args:
        spec: the env's spec.
        cfg: the experiment config (model and norm sections are read).
        device: torch device of the networks.
    """

    def __init__(self, spec: EnvSpec, cfg: Config, device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.critic = cfg.model.critic
        self.net = ActorCritic(spec, cfg.model).to(self.device)
        self.recurrent = cfg.model.recurrent != "none"
        self.obs_norm: dict[str, ObsNormalizer] = {}
        self.image_groups = {g.name for g in spec.groups if is_image(g.obs_space.shape, g.obs_space.dtype)}
        if cfg.norm.obs:
            for g in spec.groups:
                if not is_image(g.obs_space.shape, g.obs_space.dtype):
                    self.obs_norm[g.name] = ObsNormalizer(tuple(g.obs_space.shape), clip=cfg.norm.obs_clip)
            if self.critic == "central" and spec.state_shape is not None:
                self.obs_norm["__state__"] = ObsNormalizer(tuple(spec.state_shape), clip=cfg.norm.obs_clip)

    # ------------------------------------------------------------------ inputs
    def normalize(self, name: str, x: np.ndarray | Tensor, alive: np.ndarray | Tensor | None, update: bool) -> Tensor:
        """Normalize one group's observations (or the state, ``name='__state__'``) and move to the device
        (numpy arrays, or tensors from a torch-native env, :mod:`marl.env.batched`, normalized where they are)."""
        norm = self.obs_norm.get(name)
        if norm is not None:
            norm.training = update
            x = norm(x, alive)
        elif isinstance(x, Tensor):
            if x.dtype != torch.float32 and name not in self.image_groups:
                x = x.to(torch.float32)
        elif x.dtype != np.float32 and name not in self.image_groups:
            x = x.astype(np.float32)  # e.g. int8 board planes
        return torch.as_tensor(x, device=self.device)

    def inputs(
        self, obs: Mapping[str, GroupObs], state: np.ndarray | None, update: bool
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Actor inputs and critic inputs per group from one step of ``[E, A, ...]`` observations."""
        actor_in = {g: self.normalize(g, o.obs, o.alive, update) for g, o in obs.items()}
        return actor_in, self.critic_inputs(actor_in, state, update)

    def critic_inputs(
        self, actor_in: Mapping[str, Tensor], state: np.ndarray | None, update: bool
    ) -> dict[str, Tensor]:
        if self.critic == "local":
            return dict(actor_in)
        if state is not None:
            s = self.normalize("__state__", state, None, update)
        else:
            s = torch.cat([actor_in[g.name].flatten(-2) if actor_in[g.name].dim() > 2 else actor_in[g.name]
                           for g in self.spec.groups], dim=-1)
        out = {}
        for g in self.spec.groups:
            out[g.name] = s.unsqueeze(-2).expand(*s.shape[:-1], g.n_agents, s.shape[-1])
        return out

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(
        self,
        obs: Mapping[str, GroupObs],
        state: np.ndarray | None = None,
        deterministic: bool = False,
        update_stats: bool = False,
        with_value: bool = True,
        hidden: Mapping[str, Tensor] | None = None,
    ) -> ActOutput:
        """Choose actions for one step of ``E`` env copies.

        Args:
            obs: group -> :class:`GroupObs` with ``[E, A, ...]`` arrays.
            state: ``[E, S]`` global state or ``None``.
            deterministic: take the distribution's mode (evaluation) instead of sampling.
            update_stats: fold these observations into the normalizer statistics
                (training collection only).
            with_value: also compute the critic's values.
            hidden: recurrent models: group -> ``[E, A, S]`` state before this step (``None`` = zeros);
                the next state is ``out.hidden`` (agents not alive keep theirs). Ignored by feed-forward models.
        """
        actor_in, critic_in = self.inputs(obs, state, update_stats)
        out = ActOutput({}, {}, {}, {}, actor_in, critic_in)
        tensors = isinstance(next(iter(obs.values())).obs, Tensor)  # a torch-native env takes tensor actions
        if self.recurrent:
            return self._act_recurrent(obs, out, deterministic, with_value, hidden)
        for name, o in obs.items():
            net = self.net[name]
            mask = None if o.action_mask is None else torch.as_tensor(o.action_mask, device=self.device)
            if with_value:
                dist, out.value[name] = net.dist_and_value(actor_in[name], critic_in[name], mask)
            else:
                dist = net.dist(actor_in[name], mask)
            action = dist.mode() if deterministic else dist.sample()
            out.action[name] = action
            out.log_prob[name] = dist.log_prob(action)
            out.env_action[name] = net.env_action(action) if tensors else net.env_action(action).cpu().numpy()
        return out

    def _act_recurrent(self, obs: Mapping[str, GroupObs], out: ActOutput, deterministic: bool, with_value: bool,
                       hidden: Mapping[str, Tensor] | None) -> ActOutput:
        """:meth:`act` of a recurrent model: one step of :meth:`GroupActorCritic.sequence_forward` per group."""
        out = out._replace(hidden={})
        for name, o in obs.items():
            net = self.net[name]
            h = net.initial_hidden(o.alive.shape[0]) if hidden is None else hidden[name]
            alive = torch.as_tensor(o.alive, device=self.device).unsqueeze(0)
            critic_in = out.critic_in[name].unsqueeze(0) if with_value else None
            logits, value, out.hidden[name] = net.sequence_forward(out.obs[name].unsqueeze(0), critic_in, h, alive)
            mask = None if o.action_mask is None else torch.as_tensor(o.action_mask, device=self.device)
            dist = net._make_dist(logits[0], mask)
            if with_value:
                out.value[name] = value[0]
            action = dist.mode() if deterministic else dist.sample()
            out.action[name] = action
            out.log_prob[name] = dist.log_prob(action)
            out.env_action[name] = net.env_action(action).cpu().numpy()
        return out

    def initial_hidden(self, num_envs: int) -> dict[str, Tensor] | None:
        """Zero hidden states group -> ``[E, A, S]`` for ``num_envs`` copies; ``None`` for a feed-forward model."""
        if not self.recurrent:
            return None
        return {g.name: self.net[g.name].initial_hidden(num_envs) for g in self.spec.groups}

    @torch.no_grad()
    def values(self, obs: Mapping[str, np.ndarray], state: np.ndarray | None,
               hidden: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Critic values ``[E, A]`` of raw observations (e.g. final observations at truncation), stats frozen.

        ``hidden``: recurrent models: group -> ``[E, A, S]`` state the observations follow (``None`` = zeros).
        """
        actor_in = {g: self.normalize(g, o, None, False) for g, o in obs.items()}
        critic_in = self.critic_inputs(actor_in, state, False)
        if self.recurrent:
            return {g: self.net[g].sequence_value(
                critic_in[g], self.net[g].initial_hidden(critic_in[g].shape[0]) if hidden is None else hidden[g])
                for g in obs}
        return {g: self.net[g].value(critic_in[g]) for g in obs}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "obs_norm": {k: n.state_dict() for k, n in self.obs_norm.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        missing = set(self.obs_norm) ^ set(state["obs_norm"])
        if missing:
            raise ValueError(f"checkpoint normalizers {sorted(state['obs_norm'])} "
                             f"do not match the config's {sorted(self.obs_norm)}")
        for k, n in self.obs_norm.items():
            n.load_state_dict(state["obs_norm"][k])
