"""Numeric health: a NaN/inf stops the run, named, before anything is logged or saved (see :mod:`marl.health`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor, nn



NUMERIC_REMEDY = ("check the scale of observations and rewards and enable normalization (norm.obs=true, "
                  "norm.reward=true); lower algo.lr; check the network initialization; "
                  "make sure no log(0) is taken")


class NonFiniteError(FloatingPointError):
    """A NaN or inf where training needs finite numbers; the message names the tensor and what to do."""

    def with_context(self, env_steps: int, checkpoint: str | Path | None) -> NonFiniteError:
        """The same error with the env step count and where the last good checkpoint is kept."""
        where = "no checkpoint was written yet"
        if checkpoint is not None and Path(checkpoint).is_file():
            where = f"the last good checkpoint is kept at {checkpoint}"
        return NonFiniteError(f"{self.args[0]} [at {env_steps:,} env steps; {where}]")


def _kind(t: Tensor) -> str:
    """``'nan'``, ``'inf'`` or ``'nan and inf'``, with the count of such entries."""
    t = t.detach()
    n_bad, n_nan = int((~t.isfinite()).sum()), int(t.isnan().sum())
    kinds = " and ".join(k for k, n in (("nan", n_nan), ("inf", n_bad - n_nan)) if n)
    return f"{kinds} ({n_bad} of {t.numel()} entries)"


def first_nonfinite(named_tensors: Iterable[tuple[str, Tensor | None]]) -> str | None:
    """Name of the first floating tensor holding a NaN or inf (``None`` tensors skipped), else ``None``."""
    for name, t in named_tensors:
        if t is None or not (t.is_floating_point() or t.is_complex()):
            continue
        if not bool(t.detach().isfinite().all()):
            return name
    return None


def _all_finite(tensors: list[Tensor]) -> bool:
    """One sync for many tensors (non-empty, one device): ``True`` = every entry is finite.

    ``False`` may also be a sum that overflowed; callers confirm with :func:`first_nonfinite`.
    """
    import torch  # here, so that importing HealthConfig (from marl.config) does not import torch

    return bool(torch.stack([t.detach().sum() for t in tensors]).isfinite().all())


def check_finite_update(loss: Tensor, grad_norm: Tensor | float | None, module: nn.Module) -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite parameter, loss, gradient or norm.

    Call it after ``loss.backward()`` and *before* clipping and ``optimizer.step()``
    (clipping multiplies every gradient by ``max_norm / norm``: after it one NaN
    has spread to every gradient). Given the pre-clip norm (``get_total_norm``, then
    ``clip_grads_with_norm_``), a passing check is one reduction of two scalars and
    one host sync; with ``grad_norm=None`` every gradient is reduced too. Parameters
    are scanned only after a failure: a step with finite gradients keeps parameters
    finite, and a non-finite parameter shows as a non-finite loss. The name given is
    the first in causal order: a parameter, the loss (a bad input or a log 0), a
    gradient, the norm (an overflow).

    Args:
        loss: the scalar that was back-propagated.
        grad_norm: global gradient norm before clipping (a scalar tensor or a float), or ``None``.
        module: the module whose parameters the optimizer steps.
    """
    if grad_norm is None:
        ok = _all_finite([loss, *(p.grad for p in module.parameters() if p.grad is not None)])
    elif isinstance(grad_norm, (int, float)):
        ok = math.isfinite(grad_norm) and math.isfinite(float(loss.detach()))
    else:
        ok = bool((loss.detach() + grad_norm).isfinite())  # finite iff both are, barring an overflow
    if ok:
        return
    loss_value = float(loss.detach())
    norm = None if grad_norm is None else float(grad_norm)
    params = list(module.named_parameters())
    if (name := first_nonfinite(params)) is not None:
        what = f"parameter {name} is {_kind(dict(params)[name])}"
    elif not math.isfinite(loss_value):
        what = (f"the loss is {loss_value} while every parameter is finite (a non-finite observation or "
                "reward, or a log 0 / division by 0 in the loss; health.check_inputs=true finds a bad input "
                "at its source)")
    elif (name := first_nonfinite((n, p.grad) for n, p in params)) is not None:
        grad = dict(params)[name].grad
        what = f"gradient of {name} is {_kind(grad)} while the loss is finite ({loss_value:.6g})"
    elif norm is not None and not math.isfinite(norm):
        what = f"the gradient norm is {norm} although every gradient is finite (the norm overflowed)"
    else:
        return  # only the screening sum overflowed: every value is finite
    raise NonFiniteError(f"non-finite update: {what}; training stopped. To fix: {NUMERIC_REMEDY}")


class NonFiniteSource(NamedTuple):
    """A part of an off-policy update, the metrics it produces, and what to try when they are not finite."""

    name: str
    metrics: tuple[str, ...]
    remedy: str


NONFINITE_SOURCES = (
    NonFiniteSource("critic", ("q_loss", "q_mean", "grad_norm"), (
        "scale the rewards down (off-policy rewards are stored raw), lower algo.lr, clip the gradients "
        "(algo.max_grad_norm, e.g. 10), slow the target updates (smaller algo.tau), enable norm.obs, and set "
        "health.check_inputs=true to find a non-finite observation or reward at its source")),
    NonFiniteSource("actor", ("actor_loss", "actor_grad_norm"), (
        "lower algo.lr and clip the gradients (algo.max_grad_norm); a log-probability of an action at the "
        "bounds of its box (log 0) also gives inf")),
    NonFiniteSource("entropy coefficient", ("ent_coef", "ent_coef_loss", "entropy"), (
        "log_alpha overflowed: lower algo.lr, or set algo.autotune=false with a fixed algo.ent_coef")),
)
"""In the order an update computes them: a NaN of the critic reaches the actor's loss, and so on."""


def _source(key: str) -> tuple[int, int]:
    """Where metric ``key`` (``train/q_loss/<group>``) comes from: ``(source, position in its metrics)``
    indices into :data:`NONFINITE_SOURCES`; ``(len, 0)`` for a metric of no listed source."""
    name = key.removeprefix("train/").split("/")[0]
    for i, src in enumerate(NONFINITE_SOURCES):
        if name in src.metrics:
            return i, src.metrics.index(name)
    return len(NONFINITE_SOURCES), 0


def nonfinite_metrics(metrics: Mapping[str, float]) -> list[str]:
    """Keys of the non-finite values, the likeliest origin first: critic, actor, entropy coefficient,
    others; within a source the loss before the values and the gradient norm."""
    return sorted((k for k, v in metrics.items() if not math.isfinite(v)), key=_source)


def check_finite_metrics(metrics: Mapping[str, float], grad_steps: tuple[int, int], detail: str = "") -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite metric of off-policy updates and what to try.

    Args:
        metrics: ``train/<name>[/<group>]`` -> value, e.g. the sums over a logging window
            (a NaN or inf in any update of the window makes its sum non-finite).
        grad_steps: ``(first, last)`` gradient steps the values cover.
        detail: appended to the message (e.g. which acting parameter is non-finite).
    """
    bad = nonfinite_metrics(metrics)
    if not bad:
        return
    first = bad[0]
    i = _source(first)[0]
    source = NONFINITE_SOURCES[i] if i < len(NONFINITE_SOURCES) else NonFiniteSource("update", (), NUMERIC_REMEDY)
    also = f" (also non-finite: {', '.join(bad[1:])})" if len(bad) > 1 else ""
    steps = f"grad step {grad_steps[1]:,}" if grad_steps[0] == grad_steps[1] else \
        f"grad steps {grad_steps[0]:,}-{grad_steps[1]:,}"
    raise NonFiniteError(
        f"non-finite off-policy update: {first} is {metrics[first]}{also} in {steps}{detail}; training stopped. "
        f"To fix ({source.name}): {source.remedy}")


def check_inputs(obs: Mapping[str, np.ndarray], reward: Mapping[str, np.ndarray] | None,
                 agents: Mapping[str, Sequence[str]], env_offset: int = 0) -> None:
    """Raise :class:`NonFiniteError` at the first NaN/inf observation or reward.

    Groups are scanned in the order of ``agents``; per group the observations, then
    the rewards; within an array env copies first, then agents.

    Args:
        obs: group -> ``[E, A, ...]`` observations (integer arrays, e.g. images, are skipped).
        reward: group -> ``[E, A]`` rewards, or ``None`` (after a reset: observations only).
        agents: group -> agent names along the ``A`` axis.
        env_offset: index of the first env copy in the arrays (a chunk of a larger vector env).
    """
    sources = {"observation": obs} if reward is None else {"observation": obs, "reward": reward}
    for group, names in agents.items():
        for what, arrays in sources.items():
            x = np.asarray(arrays[group])
            if x.shape[1:2] != (len(names),):
                raise ValueError(f"{what} of group {group!r} has shape {x.shape}; "
                                 f"expected [E, {len(names)}, ...]")
            if not np.issubdtype(x.dtype, np.inexact):
                continue
            bad = ~np.isfinite(x.reshape(x.shape[0], x.shape[1], -1)).all(axis=-1)
            if bad.any():
                e, a = (int(i) for i in np.argwhere(bad)[0])
                entry = np.asarray(x[e, a]).reshape(-1)
                raise NonFiniteError(
                    f"non-finite {what} ({entry[~np.isfinite(entry)][0]}) from the env: agent "
                    f"{names[a]!r} of group {group!r}, env copy {env_offset + e}; check the env's {what} "
                    "code (division by 0, overflow, uninitialized state), or set health.check_inputs=false "
                    "to skip this check")
