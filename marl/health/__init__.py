"""Training health: non-finite numbers stop a run; warning signs in the metrics are reported.

Both kinds come from the seed's "Logging and Evaluation" and "Common Failure Modes".

* **Numeric health** (errors): :func:`check_finite_update` (after ``backward()``,
  before clipping and the optimizer step) names the first non-finite parameter,
  loss, gradient or norm, so the parameters in memory and the checkpoints on disk
  stay the last good ones; :func:`check_finite_metrics` does the same from the
  metrics an off-policy learner returns (loss, Q, gradient norm, entropy
  coefficient), checked before anything is logged or saved; :func:`check_inputs`
  (opt-in) names the group, agent and env copy of the first NaN/inf observation or
  reward.
* **Warning signs**, each reported once per run and series by :class:`HealthMonitor`
  with one pure detector per sign; a sign must hold for ``patience`` consecutive
  *checks* (calls of :meth:`HealthMonitor.observe`: one per PPO iteration, one per
  ``log.interval`` training phases off-policy):

  ==========================  ==============================  ===================================
  warning                     metric (and ``/<group>``)       seen as
  ==========================  ==============================  ===================================
  ``entropy_collapse``        ``train/entropy``               below a floor
  ``kl_high``                 ``train/approx_kl``             above ``kl_high``
  ``clip_fraction_low``       ``train/clip_fraction``         below ``clip_low``
  ``clip_fraction_high``      ``train/clip_fraction``         above ``clip_high``
  ``explained_variance_low``  ``train/explained_variance``    below ``ev_low``
  ``returns_collapse``        ``rollout/ep_return`` only      a rise, then a drop
  ``q_divergence``            ``train/q_mean`` (off-policy)   ``|Q|`` above the largest possible
                                                              return, or growing without a reward
  ``ent_coef_collapse``       ``train/ent_coef`` (SAC)        below a fraction of its first value
  ==========================  ==============================  ===================================

  Per-agent and per-group returns are not watched: in competitive games one side's
  return falls whenever the other side learns. The largest possible return is
  ``max |r| / (1 - gamma)`` with ``max |r|`` the largest reward magnitude seen so
  far (:meth:`HealthMonitor.note_rewards`); SAC's soft values add
  ``alpha * |entropy|`` per step to ``max |r|``.

The checks live in :mod:`marl.health.numeric` (errors) and :mod:`marl.health.signs`
(detectors and :class:`HealthMonitor`); their thresholds are :class:`marl.config.HealthConfig`
(``health.*`` keys). This package re-exports what the trainers use.
"""

from marl.health.numeric import (
    NUMERIC_REMEDY,
    NonFiniteError,
    check_finite_metrics,
    check_finite_update,
    check_inputs,
    first_nonfinite,
    nonfinite_metrics,
)
from marl.health.signs import (
    OFF_POLICY_REMEDIES,
    REMEDIES,
    HealthMonitor,
    HealthWarning,
    entropy_action_dims,
    largest_return,
)

__all__ = [
    "NUMERIC_REMEDY",
    "OFF_POLICY_REMEDIES",
    "REMEDIES",
    "HealthMonitor",
    "HealthWarning",
    "NonFiniteError",
    "check_finite_metrics",
    "check_finite_update",
    "check_inputs",
    "entropy_action_dims",
    "first_nonfinite",
    "largest_return",
    "nonfinite_metrics",
]
