"""Off-policy training (DQN, SAC, TD3): act -> replay -> sample -> update -> priorities -> log.

* :mod:`marl.off_policy.actor`: :class:`OffPolicyActor` (acting networks + normalizers, the
  Policy interface that evaluation uses), :func:`build_actor`, :func:`build_learner`.
* :mod:`marl.off_policy.replay`: replay buffers per group, rows from vector steps, sampled
  batches as tensors, HER's goal functions, the replays' checkpoint entries (tensors of
  :meth:`marl.data.ReplayBuffer.state_dict`).
* :mod:`marl.off_policy.trainer`: :class:`OffPolicyTrainer`, the loop body (act, store, learn) inside
  the run scaffolding every trainer shares (:class:`marl.run.TrainingRun`).
* :mod:`marl.off_policy.sequences`: recurrent DQN (``model.recurrent``): acting hidden states carried per
  env copy and agent, sequence replay (:class:`marl.data.sequences.SequenceReplay`),
  :class:`~marl.off_policy.sequences.RecurrentDQNTrainer`.
* :mod:`marl.off_policy.team`: value decomposition (VDN, QMIX): team rows (every group's rows of
  one env step at one index, with the global state), :class:`~marl.off_policy.team.TeamTrainer`.

Glossary (as in :mod:`marl.trainer`, plus):

* **row**: one env step of one env copy for one group (all its agents, ``[A, ...]``);
  each group has its own replay buffer of ``algo.buffer_size`` rows.
* **training phase**: the gradient steps run after every ``algo.train_freq`` env
  steps collected (``algo.gradient_steps`` of them); the off-policy ``iteration``
  counter counts training phases and ``log.interval`` is measured in them.
* **warm-up**: the first ``algo.learning_starts`` env steps act uniformly at random
  (allowed actions only); training starts once each replay holds
  ``max(learning_starts, batch_size)`` rows.

One vector step of the loop, data flowing one way::

    out = actor.act(obs, epsilon=...)               # normalizer stats update here
    step = env.step(out.env_action)
    replay[g].add(rows(obs, out.action, step))      # next_obs = final obs where an episode ended
    every train_freq env steps, gradient_steps times:
        s = replay[g].sample(B, rng, beta)          # per group
        out = learner.update(batch(s))              # observations normalized with frozen stats
        replay[g].update_priorities(s.indices, out.td_error[g])   # PER: the one edge back

The replay stores raw observations, normalized with the current statistics when sampled
(after HER relabelling); rewards are stored raw (``norm.reward`` must be off). Checkpoints:
``policy`` (acting networks + normalizers, what :func:`build_actor` loads), ``learner``
(critics, targets, optimizers, ``log_alpha``, generator), counters, RNG states (python, numpy,
torch, replay sampling, actor), the health monitor, env snapshots
(:class:`marl.env.adapters.EnvSnapshot`: a resumed run continues its episodes exactly) and,
with ``algo.save_replay``, the replays in
``latest.pt`` and ``step_*.pt`` (``replay/bytes_per_row``, logged at start, times the capacity).
Resumed with the replay, a run continues exactly as if never stopped; without it, the replay
refills ``max(learning_starts, batch_size)`` rows (acting with the policy) before training.
"""

from marl.off_policy.actor import OffPolicyActor, build_actor, build_learner
from marl.off_policy.replay import (
    GoalFunctions,
    build_replays,
    goal_functions,
    load_replay_state,
    replay_bytes_per_row,
    replay_rows,
    replay_state,
    to_batch,
)
from marl.off_policy.trainer import OffPolicyTrainer

__all__ = [
    "GoalFunctions",
    "OffPolicyActor",
    "OffPolicyTrainer",
    "build_actor",
    "build_learner",
    "build_replays",
    "goal_functions",
    "load_replay_state",
    "replay_bytes_per_row",
    "replay_rows",
    "replay_state",
    "to_batch",
]
