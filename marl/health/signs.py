"""Warning signs in the training metrics: pure detectors and the monitor that reports them (see :mod:`marl.health`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:

    from marl.types import EnvSpec

from marl.config import HealthConfig


def persistently_above(series: Sequence[float], threshold: float, patience: int) -> bool:
    """The series has at least ``patience`` values and the last ``patience`` are all ``> threshold``."""
    return len(series) >= patience and all(v > threshold for v in series[-patience:])


def persistently_below(series: Sequence[float], threshold: float, patience: int) -> bool:
    """The series has at least ``patience`` values and the last ``patience`` are all ``< threshold``."""
    return len(series) >= patience and all(v < threshold for v in series[-patience:])


def entropy_collapse(series: Sequence[float], floor_frac: float, abs_floor: float, patience: int,
                     gaussian_dims: int = 0) -> str | None:
    """Entropy stayed below its floor for ``patience`` checks: a description, else ``None``.

    Categorical policies: the floor is ``max(floor_frac * first, abs_floor)`` nats.
    Gaussian policies (``gaussian_dims = d > 0``) have a differential entropy that is
    negative for small stds, so the test is on the geometric-mean std instead:
    ``exp((H - H_first) / d) < floor_frac``.
    """
    if len(series) < patience:
        return None
    first, now = series[0], series[-1]
    if gaussian_dims > 0:
        ratio = np.exp((np.asarray(series[-patience:]) - first) / gaussian_dims)
        if np.all(ratio < floor_frac):
            return (f"the action std fell to {ratio[-1]:.1%} of its first value (entropy {first:.3g} -> "
                    f"{now:.3g} nats over {gaussian_dims} action dims) for {patience} checks")
        return None
    floor = max(floor_frac * first, abs_floor)
    if persistently_below(series, floor, patience):
        return f"entropy fell from {first:.3g} to {now:.3g} nats (floor {floor:.3g}) for {patience} checks"
    return None


def returns_collapse(series: Sequence[float], collapse_frac: float, window: int, min_rise: float,
                     patience: int) -> str | None:
    """Returns rose, then fell by more than ``collapse_frac`` of the rise for ``patience`` checks.

    ``s`` is the trailing moving average (``window`` values) of the series,
    ``best_t = max(s_0..s_t)``; check ``t`` counts when
    ``s_t < best_t - collapse_frac * (best_t - s_0)`` and the rise ``best_t - s_0``
    exceeds ``min_rise`` noise std (robust: median absolute first difference).
    """
    x = np.asarray(series, dtype=np.float64)
    if len(x) < patience + 1:
        return None
    c = np.concatenate([[0.0], np.cumsum(x)])
    end = np.arange(1, len(x) + 1)
    start = np.maximum(end - window, 0)
    s = (c[end] - c[start]) / (end - start)
    best = np.maximum.accumulate(s)
    rise = best - s[0]
    d = np.diff(x)
    noise = 1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0)
    dropped = (s < best - collapse_frac * rise) & (rise > min_rise * noise)
    if not dropped[-patience:].all():
        return None
    return (f"the smoothed return rose from {s[0]:.4g} to a best of {best[-1]:.4g}, then fell to {s[-1]:.4g} "
            f"({(best[-1] - s[-1]) / rise[-1]:.0%} of the rise) for {patience} checks")


def q_divergence(abs_q: Sequence[float], bound: Sequence[float], factor: float, growth: float,
                 patience: int) -> str | None:
    """Q values diverging: a description, else ``None``.

    Args:
        abs_q: ``|mean Q|`` per check.
        bound: the largest possible ``|return|`` at each check (same length), 0 while
            no nonzero reward has been seen.
        factor: a bounded check counts when ``|Q| > factor * bound``.
        growth: with bound 0 (every true value is 0), ``|Q|`` rising at each of the last
            ``patience`` checks to ``growth`` times where it started is a divergence.
        patience: consecutive checks.
    """
    if len(abs_q) < patience:
        return None
    q, b = np.asarray(abs_q[-patience:], np.float64), np.asarray(bound[-patience:], np.float64)
    if np.all(b > 0):
        if np.all(q > factor * b):
            return (f"|Q| stayed above {factor:g} x the largest possible return max|r| / (1 - gamma) = {b[-1]:.4g} "
                    f"for {patience} checks (last |Q| {q[-1]:.4g})")
        return None
    if len(abs_q) > patience and not np.any(np.asarray(bound[-patience - 1:]) > 0):
        w = np.asarray(abs_q[-patience - 1:], np.float64)
        if np.all(np.diff(w) > 0) and w[-1] >= growth * w[0]:
            return (f"|Q| rose at each of {patience} checks from {w[0]:.4g} to {w[-1]:.4g} while every reward seen "
                    "so far is 0 (so every true value is 0)")
    return None


def ent_coef_collapse(series: Sequence[float], floor_frac: float, patience: int) -> str | None:
    """The entropy coefficient stayed below ``floor_frac`` of its first value for ``patience`` checks."""
    if len(series) < patience:
        return None
    floor = floor_frac * series[0]
    if persistently_below(series, floor, patience):
        return (f"the entropy coefficient alpha fell from {series[0]:.3g} to {series[-1]:.3g} "
                f"(floor {floor:.3g}) for {patience} checks")
    return None


# --------------------------------------------------------------------------- the monitor
REMEDIES = {
    "entropy_collapse": "the policy is converging prematurely: increase the entropy coefficient "
                        "algo.ent_coef (more exploration), or use a larger network (model.hidden)",
    "kl_high": "the update step is too large: lower algo.lr, lower algo.update_epochs, or set "
               "algo.target_kl (e.g. 0.02) to stop an update's epochs early",
    "clip_fraction_low": "clipping is not taking effect: algo.clip_coef may be too large "
                         "(or algo.lr too small)",
    "clip_fraction_high": "nearly every sample is clipped: the learning rate is likely too high; "
                          "lower algo.lr",
    "explained_variance_low": "the critic is worse than predicting the mean return: check the critic's size "
                              "(model.hidden), lower algo.lr, and make sure norm.obs=true",
    "returns_collapse": "possible catastrophic forgetting: lower algo.lr, algo.update_epochs or "
                        "algo.clip_coef; watch the policy for a reward exploit (reward hacking)",
    "q_divergence": "the critic feeds its own overestimates back through bootstrapping: lower algo.lr, slow "
                    "the target updates (smaller algo.tau, or a larger algo.target_update_interval), clip the "
                    "gradients (algo.max_grad_norm), scale the rewards down; DQN: keep algo.double_q=true",
    "ent_coef_collapse": "with alpha near 0 the policy regains exploration only slowly once its entropy falls "
                      "below the target: check algo.target_entropy (a target below what the policy keeps lets "
                      "alpha shrink without bound), or set algo.autotune=false with a fixed algo.ent_coef",
}
"""Warning name -> what to try (on-policy wording; :data:`OFF_POLICY_REMEDIES` for DQN, SAC, TD3)."""

OFF_POLICY_REMEDIES = {
    **REMEDIES,
    "entropy_collapse": "the policy stopped exploring: with algo.autotune raise algo.target_entropy (SAC), "
                        "else raise algo.ent_coef; or use a larger network (model.hidden)",
    "returns_collapse": "possible catastrophic forgetting: lower algo.lr, slow the target updates (smaller "
                        "algo.tau), keep older experience (a larger algo.buffer_size); watch the policy for a "
                        "reward exploit (reward hacking)",
}
"""Warning name -> what to try, with the off-policy algorithms' settings."""

PER_GROUP = ("train/entropy", "train/approx_kl", "train/clip_fraction", "train/explained_variance", "train/q_mean",
             "train/ent_coef")


class HealthWarning(NamedTuple):
    """One warning sign seen in the metrics.

    Attributes:
        name: which sign, a key of :data:`REMEDIES` (e.g. ``"entropy_collapse"``).
        metric: the series it was seen in (e.g. ``"train/entropy/adversary"``).
        env_steps: env steps when it was reported.
        message: what was seen, with numbers.
        remedy: what to try, from the seed.
    """

    name: str
    metric: str
    env_steps: int
    message: str
    remedy: str

    def __str__(self) -> str:
        return (f"health warning [{self.name}] {self.metric}: {self.message} "
                f"(at {self.env_steps:,} env steps). Remedy: {self.remedy}")


def entropy_action_dims(spec: EnvSpec) -> dict[str, int | None]:
    """Entropy metric key -> Gaussian action dims (0: categorical; ``None``: unlike groups, unchecked)."""
    dims = {g.name: 0 if g.discrete else int(np.prod(g.action_shape)) for g in spec.groups}
    if len(dims) == 1:
        return {"train/entropy": next(iter(dims.values()))}
    out: dict[str, int | None] = {f"train/entropy/{g}": d for g, d in dims.items()}
    out["train/entropy"] = next(iter(dims.values())) if len(set(dims.values())) == 1 else None
    return out


def _seen(condition: bool, text: str) -> str | None:
    return text if condition else None


def _watched(key: str) -> str | None:
    """The watched metric of series ``key`` (``train/entropy`` for ``train/entropy/<g>``), else ``None``."""
    if key == "rollout/ep_return":
        return key
    return next((b for b in PER_GROUP if key == b or key.startswith(b + "/")), None)


def largest_return(reward_abs_max: float, soft_bonus: float, gamma: float | None) -> float:
    """``(max |r| + soft_bonus) / (1 - gamma)``: no discounted return is larger in magnitude.

    0 when nothing is known yet (no nonzero reward, or no ``gamma``); inf for ``gamma = 1``.
    """
    per_step = reward_abs_max + soft_bonus
    if gamma is None or per_step <= 0:
        return 0.0
    return math.inf if gamma >= 1 else per_step / (1.0 - gamma)


class HealthMonitor:
    """Keeps the watched metric series and reports each warning sign once per series.

    Args:
        cfg: thresholds.
        entropy_dims: entropy metric key -> Gaussian action dims, from
            :func:`entropy_action_dims`; keys not listed are treated as categorical.
        remedies: warning name -> what to try (default :data:`REMEDIES`).
        gamma: discount factor of the value estimates; with the rewards fed to
            :meth:`note_rewards` it bounds ``train/q_mean`` (``None``: no bound known).
    """

    def __init__(self, cfg: HealthConfig, entropy_dims: Mapping[str, int | None] | None = None, *,
                 remedies: Mapping[str, str] | None = None, gamma: float | None = None) -> None:
        self.cfg = cfg
        self.entropy_dims = dict(entropy_dims or {})
        self.remedies = dict(REMEDIES if remedies is None else remedies)
        self.gamma = gamma
        self.series: dict[str, list[float]] = {}
        self.bounds: dict[str, list[float]] = {}
        self.reward_abs_max: dict[str, float] = {}
        self.reported: set[tuple[str, str]] = set()
        self.lr_first: float | None = None

    def note_rewards(self, group: str, reward: np.ndarray | float) -> None:
        """Fold rewards of ``group`` (any shape; 0 where no agent acted) into the largest ``|r|`` seen."""
        r = np.asarray(reward)
        if r.size:
            peak = float(np.abs(r).max())
            if peak > self.reward_abs_max.get(group, 0.0):
                self.reward_abs_max[group] = peak

    def observe(self, metrics: Mapping[str, float], env_steps: int) -> list[HealthWarning]:
        """Append this check's watched metrics; return the warning signs seen for the first time."""
        if not self.cfg.enabled:
            return []
        lr = metrics.get("train/lr")
        if lr is not None and self.lr_first is None and lr > 0:
            self.lr_first = float(lr)
        found = []
        for key, value in metrics.items():
            base = _watched(key)
            if base is None or value is None or not math.isfinite(value):
                continue
            self.series.setdefault(key, []).append(float(value))
            if base == "train/q_mean":
                self.bounds.setdefault(key, []).append(self._q_bound(key, metrics))
            for name, seen in self._signs(base, key, lr).items():
                if seen is not None and (name, key) not in self.reported:
                    self.reported.add((name, key))
                    found.append(HealthWarning(name, key, int(env_steps), seen, self.remedies[name]))
        return found

    def _q_bound(self, key: str, metrics: Mapping[str, float]) -> float:
        """Largest possible ``|return|`` for ``train/q_mean[/<group>]`` at this check (0 = unknown)."""
        suffix = key[len("train/q_mean"):]
        group = suffix[1:]
        r_max = self.reward_abs_max.get(group, 0.0) if group else max(self.reward_abs_max.values(), default=0.0)
        ent_coef, entropy = metrics.get("train/ent_coef" + suffix), metrics.get("train/entropy" + suffix)
        soft = ent_coef * abs(entropy) if ent_coef is not None and entropy is not None else 0.0
        return largest_return(r_max, soft if math.isfinite(soft) else 0.0, self.gamma)

    def _signs(self, base: str, key: str, lr: float | None) -> dict[str, str | None]:
        """Warning name -> what was seen (``None``: not seen) in the series ``key``."""
        c, s, p = self.cfg, self.series[key], self.cfg.patience
        last = f"for {p} checks (last {s[-1]:.3g})"
        if base == "train/entropy":
            dims = self.entropy_dims.get(key, 0)
            if dims is None:
                return {}
            seen = entropy_collapse(s, c.entropy_floor_frac, c.entropy_abs_floor, p, dims)
            return {"entropy_collapse": seen}
        if base == "train/approx_kl":
            high = persistently_above(s, c.kl_high, p)
            return {"kl_high": _seen(high, f"approx KL stayed above {c.kl_high} {last}")}
        if base == "train/clip_fraction":
            annealed = lr is not None and self.lr_first is not None and lr < c.lr_quiet_frac * self.lr_first
            low = not annealed and persistently_below(s, c.clip_low, p)
            high = persistently_above(s, c.clip_high, p)
            return {"clip_fraction_low": _seen(low, f"clip fraction stayed below {c.clip_low} {last}"),
                    "clip_fraction_high": _seen(high, f"clip fraction stayed above {c.clip_high} {last}")}
        if base == "train/explained_variance":
            bad = len(s) >= c.ev_warmup + p and persistently_below(s, c.ev_low, p)
            seen = _seen(bad, f"explained variance stayed below {c.ev_low} {last}")
            return {"explained_variance_low": seen}
        if base == "train/q_mean":
            return {"q_divergence": q_divergence(np.abs(s), self.bounds[key], c.q_bound_factor, c.q_growth, p)}
        if base == "train/ent_coef":
            return {"ent_coef_collapse": ent_coef_collapse(s, c.ent_coef_floor_frac, p)}
        seen = returns_collapse(s, c.collapse_frac, c.return_window, c.return_min_rise, p)
        return {"returns_collapse": seen}

    def state_dict(self) -> dict[str, Any]:
        """Plain data (lists, floats, strings) for a checkpoint loaded with ``weights_only=True``."""
        return {"series": {k: list(v) for k, v in self.series.items()},
                "reported": sorted([n, k] for n, k in self.reported), "lr_first": self.lr_first,
                "bounds": {k: list(v) for k, v in self.bounds.items()},
                "reward_abs_max": dict(self.reward_abs_max)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (checkpoints written before Q bounds were tracked load too)."""
        self.series = {k: [float(x) for x in v] for k, v in state["series"].items()}
        self.reported = {(str(n), str(k)) for n, k in state["reported"]}
        self.lr_first = None if state["lr_first"] is None else float(state["lr_first"])
        self.bounds = {k: [float(x) for x in v] for k, v in state.get("bounds", {}).items()}
        self.reward_abs_max = {k: float(v) for k, v in state.get("reward_abs_max", {}).items()}
