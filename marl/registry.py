"""The algorithm registry: ``algo.name`` -> its config section, its trainer and its acting policy.

Config validation, the command line, :mod:`marl.api` (``train``, ``load_policy``), ``marl eval``,
``marl record`` and ``marl compare`` read this table and nothing else to decide what an algorithm
is. Adding an algorithm is its own files plus one :class:`Algorithm` entry in :data:`ALGORITHMS`.

Entries name their parts as ``"module:attribute"`` strings, resolved on use, so that reading the
table (e.g. to validate a config) imports no trainer and this module imports nothing of marl.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Literal, NamedTuple


def resolve(path: str) -> Any:
    """The attribute named by ``"package.module:attribute"``."""
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


class Algorithm(NamedTuple):
    """One registered algorithm.

    Attributes:
        name: the value of ``algo.name``.
        paradigm: ``on_policy`` (rollouts, :mod:`marl.on_policy`) or ``off_policy`` (replay,
            :mod:`marl.off_policy`).
        config: the schema of the ``algo`` section (a dataclass in :mod:`marl.schemas`).
        trainer: the :class:`marl.run.TrainingRun` subclass that trains it, built as ``Trainer(cfg)``.
        acting_policy: ``(spec, cfg, device) -> ActingPolicy``: the policy a checkpoint's ``policy``
            entry loads into (what evaluation, ``marl eval`` and ``marl record`` act with).
        summary: one line for ``marl config --keys`` and error messages.
    """

    name: str
    paradigm: Literal["on_policy", "off_policy"]
    config: str
    trainer: str
    acting_policy: str
    summary: str

    def config_class(self) -> type:
        return resolve(self.config)

    def trainer_class(self, cfg: Any = None) -> type:
        """The trainer; for dqn, sac and td3 with ``algo.num_actors > 0`` (given ``cfg``) the Ape-X one, for dqn,
        vdn and qmix with ``model.recurrent`` the sequence-replay ones."""
        if cfg is not None and self.name in ("dqn", "sac", "td3") and getattr(cfg.algo, "num_actors", 0) > 0:
            return resolve("marl.off_policy.apex:ApexTrainer")
        if cfg is not None and self.name in ("dqn", "vdn", "qmix") and cfg.model.recurrent != "none":
            team = self.name != "dqn"
            return resolve(f"marl.off_policy.sequences:{'RecurrentTeamTrainer' if team else 'RecurrentDQNTrainer'}")
        return resolve(self.trainer)

    def build_acting_policy(self, spec: Any, cfg: Any, device: Any = "cpu") -> Any:
        return resolve(self.acting_policy)(spec, cfg, device)


def _entry(name: str, paradigm: Literal["on_policy", "off_policy"], config: str, summary: str) -> Algorithm:
    if paradigm == "on_policy":
        trainer, policy = "marl.on_policy.trainer:OnPolicyTrainer", "marl.on_policy.policy:ActorCriticPolicy"
    else:
        trainer, policy = "marl.off_policy.trainer:OffPolicyTrainer", "marl.off_policy.actor:build_actor"
    return Algorithm(name, paradigm, f"marl.schemas:{config}", trainer, policy, summary)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        _entry("ppo", "on_policy", "PPOConfig", "proximal policy optimization (clipped surrogate, GAE)"),
        Algorithm("appo", "on_policy", "marl.schemas:APPOConfig", "marl.on_policy.async_trainer:AsyncPPOTrainer",
                  "marl.on_policy.policy:ActorCriticPolicy",
                  "asynchronous PPO: worker processes collect, the learner corrects the policy lag with V-trace"),
        _entry("dqn", "off_policy", "DQNConfig", "deep Q-learning (double Q, dueling, PER, n-step, HER)"),
        _entry("sac", "off_policy", "SACConfig", "soft actor-critic (continuous and discrete actions)"),
        _entry("td3", "off_policy", "TD3Config", "twin delayed DDPG (continuous actions)"),
        Algorithm("vdn", "off_policy", "marl.schemas:VDNConfig", "marl.off_policy.team:TeamTrainer",
                  "marl.off_policy.actor:build_actor", "value decomposition: summed per-agent Q (team reward)"),
        Algorithm("qmix", "off_policy", "marl.schemas:QMIXConfig", "marl.off_policy.team:TeamTrainer",
                  "marl.off_policy.actor:build_actor", "QMIX: per-agent Q mixed monotonically by a state hypernetwork"),
    )
}


class UnknownAlgorithm(ValueError):
    """``algo.name`` names no registered algorithm; the message lists the known ones."""


def algorithm(name: str) -> Algorithm:
    """The registry entry of ``name``.

    Raises:
        UnknownAlgorithm: with the closest known name and the full list.
    """
    if name in ALGORITHMS:
        return ALGORITHMS[name]
    close = difflib.get_close_matches(str(name), ALGORITHMS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownAlgorithm(f"unknown algorithm {name!r}{hint} (known: {', '.join(sorted(ALGORITHMS))})")
