"""On-policy training (PPO): act -> rollout -> GAE -> minibatch epochs -> log.

* :mod:`marl.on_policy.policy`: :class:`ActorCriticPolicy` (every group's actor-critic +
  observation normalizers; numpy observations in, actions, log-probs and values out).
* :mod:`marl.on_policy.collector`: :class:`RolloutCollector`, which fills a rollout of ``T``
  steps per env copy through the shared act -> step loop (:class:`marl.env.loop.EnvLoop`).
* :mod:`marl.on_policy.trainer`: :class:`OnPolicyTrainer`, the loop body inside the run
  scaffolding every trainer shares (:class:`marl.run.TrainingRun`); its docstring holds the
  glossary (env step, agent step, iteration, update, grad step).

One iteration, data flowing one way::

    rollout = collector.collect()                       # [T, E, A, ...] per group; normalizer stats update
    buf.finish(last_value, gamma, gae_lambda)           # GAE per group, alive-aware
    metrics = learner.update(batches, ...)              # epochs x minibatches, one optimizer step each
"""

from marl.on_policy.collector import RolloutCollector, RolloutResult
from marl.on_policy.policy import ActorCritic, ActorCriticPolicy, GroupActorCritic
from marl.on_policy.trainer import OnPolicyTrainer

__all__ = [
    "ActorCritic", "ActorCriticPolicy", "GroupActorCritic", "OnPolicyTrainer", "RolloutCollector", "RolloutResult",
]
