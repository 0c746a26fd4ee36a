"""The acting side of off-policy learning: networks + normalizers, numpy observations in, actions out.

:class:`OffPolicyActor` has the interface of :class:`marl.multi_agent.policy.Policy` that
evaluation and ``marl eval`` use (``act``, ``state_dict``, ``load_state_dict``, ``device``);
exploration is generic: with probability ``epsilon`` per agent a uniformly random (allowed)
action replaces the network's. :func:`build_learner` pairs it with the learner that trains it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from marl.algos.dqn import DQNLearner, QPolicyNet
from marl.algos.r2d2 import RecurrentDQNLearner
from marl.algos.sac import SACLearner, SACPolicyNet
from marl.algos.td3 import TD3Learner, TD3PolicyNet
from marl.config import Config, DQNConfig, NormConfig, SACConfig, TD3Config
from marl.multi_agent.groups import is_image
from marl.nets import MaskedCategorical
from marl.normalization import ObsNormalizer
from marl.types import ActOutput, EnvSpec, GroupObs, GroupSpec

Learner = DQNLearner | SACLearner | TD3Learner
ActingNet = QPolicyNet | SACPolicyNet | TD3PolicyNet


class OffPolicyActor:
    """Acting networks plus per-group observation normalizers: numpy observations in, actions out.

    Same interface as :class:`marl.multi_agent.policy.Policy` where evaluation and
    ``marl eval`` use it (``act``, ``state_dict``, ``load_state_dict``, ``device``).

    Args:
        spec: the env.
        net: the acting networks (:class:`QPolicyNet`, :class:`SACPolicyNet` or :class:`TD3PolicyNet`).
        norm: ``norm.obs`` and ``norm.obs_clip`` are read (images are never standardized).
        device: torch device of ``net``.
        seed: seed of the actor's torch generator (exploration draws).
        epsilon: probability of a uniformly random action in stochastic ``act`` calls that
            pass no ``epsilon`` (DQN: ``epsilon_final``; 0 for SAC and TD3).
    """

    def __init__(self, spec: EnvSpec, net: ActingNet, norm: NormConfig, device: torch.device | str, seed: int,
                 epsilon: float) -> None:
        self.spec = spec
        self.groups = {g.name: g for g in spec.groups}
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.epsilon = float(epsilon)
        self.recurrent = isinstance(net, QPolicyNet) and net.recurrent
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.obs_norm: dict[str, ObsNormalizer] = {}
        if norm.obs:
            for g in spec.groups:
                if not is_image(g.obs_space.shape, g.obs_space.dtype):
                    self.obs_norm[g.name] = ObsNormalizer(tuple(g.obs_space.shape), clip=norm.obs_clip)

    def normalize(self, name: str, obs: np.ndarray, alive: np.ndarray | None, update: bool) -> Tensor:
        """One group's observations ``[..., A, *obs_shape]`` normalized (stats updated only if ``update``)."""
        norm = self.obs_norm.get(name)
        if norm is not None:
            norm.training = update
            obs = norm(obs, alive)
        return torch.as_tensor(obs, device=self.device)

    def random_action(self, group: GroupSpec, lead: tuple[int, ...], mask: Tensor | None) -> Tensor:
        """Uniformly random actions ``[*lead, *action_shape]``: allowed discrete actions, or ``[-1, 1]^d`` boxes."""
        if group.discrete:
            logits = torch.zeros(*lead, int(group.action_space.n), device=self.device)
            return MaskedCategorical(logits, mask).sample(self.generator)
        shape = (*lead, *group.action_shape)
        return torch.rand(shape, generator=self.generator, device=self.device) * 2.0 - 1.0

    @torch.no_grad()
    def act(
        self,
        obs: Mapping[str, GroupObs],
        state: np.ndarray | None = None,
        deterministic: bool = False,
        update_stats: bool = False,
        with_value: bool = True,
        *,
        epsilon: float | None = None,
        hidden: Mapping[str, Tensor] | None = None,
    ) -> ActOutput:
        """Actions for one step of ``E`` env copies.

        Args:
            obs: group -> :class:`GroupObs` with ``[E, A, ...]`` arrays.
            state: unused (off-policy critics are local); accepted for the Policy interface.
            deterministic: greedy / mode / noiseless actions, no random ones.
            update_stats: fold these observations into the normalizer statistics.
            with_value: unused (there are no state values); ``ActOutput.value`` stays empty.
            epsilon: per agent, the probability of a uniformly random action instead
                (``1`` = all random, the warm-up); ``None`` = :attr:`epsilon`. Ignored
                when ``deterministic``.
            hidden: recurrent Q networks: group -> ``[E, A, S]`` state before this step (``None`` = zeros);
                the network runs even on random steps, so the state follows every observation.

        Returns:
            ``ActOutput`` with ``action`` (replay form: discrete ids, or boxes in
            ``[-1, 1]``), ``env_action`` (numpy, scaled to the bounds), ``obs`` and, for recurrent
            networks, ``hidden`` (the state after this step; zeroing at episode ends is the caller's).
        """
        del state, with_value
        eps = 0.0 if deterministic else (self.epsilon if epsilon is None else float(epsilon))
        out = ActOutput({}, {}, {}, {}, {}, {}, {} if self.recurrent else None)
        for name, o in obs.items():
            group = self.groups[name]
            x = self.normalize(name, o.obs, o.alive, update_stats)
            mask = None if o.action_mask is None else torch.as_tensor(o.action_mask, device=self.device).bool()
            lead = tuple(o.alive.shape)
            if self.recurrent:
                h = self.net[name].zero_state(lead[0]) if hidden is None else hidden[name]
                alive = torch.as_tensor(o.alive, device=self.device)
                action, out.hidden[name] = self.net.act_recurrent(name, x, mask, h, alive)
                if eps > 0.0:
                    explore = torch.rand(lead, generator=self.generator, device=self.device) < eps
                    action = torch.where(explore, self.random_action(group, lead, mask), action)
            elif eps >= 1.0:
                action = self.random_action(group, lead, mask)
            else:
                action = self.net.act(name, x, mask, deterministic, self.generator)
                if eps > 0.0:
                    explore = torch.rand(lead, generator=self.generator, device=self.device) < eps
                    explore = explore.view(*lead, *([1] * (action.dim() - len(lead))))
                    action = torch.where(explore, self.random_action(group, lead, mask), action)
            out.action[name] = action
            out.env_action[name] = self.net.env_action(name, action).cpu().numpy()
            out.obs[name] = x
        return out

    def initial_hidden(self, num_envs: int) -> dict[str, Tensor] | None:
        """Recurrent Q networks: zero states group -> ``[E, A, S]`` for ``num_envs`` copies; else ``None``."""
        if not self.recurrent:
            return None
        return {g: self.net[g].zero_state(num_envs) for g in self.groups}

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "obs_norm": {k: n.state_dict() for k, n in self.obs_norm.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        if set(self.obs_norm) != set(state["obs_norm"]):
            raise ValueError(f"checkpoint normalizers {sorted(state['obs_norm'])} do not match the config's "
                             f"{sorted(self.obs_norm)} (norm.obs changed?)")
        for k, n in self.obs_norm.items():
            n.load_state_dict(state["obs_norm"][k])


def build_actor(spec: EnvSpec, cfg: Config, device: torch.device | str = "cpu") -> OffPolicyActor:
    """The acting policy of an off-policy config (what a checkpoint's ``policy`` entry loads into)."""
    algo = cfg.algo
    if isinstance(algo, DQNConfig):
        net, epsilon = QPolicyNet(spec, cfg.model, algo.dueling), algo.epsilon_final
    elif isinstance(algo, SACConfig):
        net, epsilon = SACPolicyNet(spec, cfg.model), 0.0
    elif isinstance(algo, TD3Config):
        net, epsilon = TD3PolicyNet(spec, cfg.model, algo.exploration_noise), 0.0
    else:
        raise ValueError(f"algo.name={algo.name!r} is not an off-policy algorithm (dqn, sac, td3)")
    return OffPolicyActor(spec, net, cfg.norm, device, cfg.seed, epsilon)


def build_learner(actor: OffPolicyActor, cfg: Config) -> Learner:
    """The learner that trains ``actor.net`` (and owns critics, targets, optimizers)."""
    algo, seed = cfg.algo, cfg.seed + 1  # a stream apart from the actor's
    if isinstance(algo, DQNConfig):
        return RecurrentDQNLearner(actor.net, algo) if actor.recurrent else DQNLearner(actor.net, algo)
    if isinstance(algo, SACConfig):
        return SACLearner(actor.net, actor.spec, cfg.model, algo, seed)
    return TD3Learner(actor.net, actor.spec, cfg.model, algo, seed)
