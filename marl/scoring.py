"""How evaluations are scored and reported: what "best" means, the end-of-run line, the history entries,
and the deterministic-vs-stochastic comparison of the final evaluation.

Pure functions over evaluation results (the dicts :func:`marl.evaluation.evaluate` returns), used by
:class:`marl.run.TrainingRun`, :mod:`marl.tune` and :mod:`marl.comparison`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from marl.config import ConfigError
from marl.types import EnvSpec

GAP_Z = 3.0
"""How many standard errors apart the deterministic and the stochastic final evaluations must be for
the end-of-run line to report both (:func:`stochastic_gap`)."""


def score(result: Mapping[str, Any]) -> float:
    """What "best" means for an evaluation: win rate against a fixed opponent, else the ``score`` of the groups
    named by ``eval.score_groups`` (:func:`group_score`), else the mean team return."""
    if "win_rate" in result:
        return result["win_rate"]
    return result["score"] if "score" in result else result["ep_return"]


def result_line(summary: Mapping[str, Any]) -> str:
    """The end-of-run words on the evaluation: win / draw / loss rates against a fixed opponent (zero-sum games,
    where the team return is always 0), else the team return, plus the score of ``eval.score_groups`` when set."""
    final, best = summary["final_eval"], summary["best_eval"]
    if "win_rate" in final:
        return (f"final eval vs {final.get('opponent', 'random')}: win {final['win_rate']:.2f} / draw "
                f"{final['draw_rate']:.2f} / loss {final['loss_rate']:.2f}, best win rate {best['win_rate']:.2f}"
                + gap_line(final))
    line = f"final eval return {final['ep_return']:.2f}, best {best['ep_return']:.2f}"
    if "score" in final:
        line += f"; score ({final['score_groups']}) final {final['score']:.2f}, best {best['score']:.2f}"
    return line + gap_line(final)


def group_score(result: Mapping[str, Any], spec: EnvSpec, groups: Sequence[str]) -> float:
    """Mean episode return summed over the agents of ``groups`` (one side of a competitive game)."""
    unknown = sorted(set(groups) - {g.name for g in spec.groups})
    if unknown:
        raise ConfigError(f"eval.score_groups: unknown groups {unknown}; this env's groups are "
                          f"{[g.name for g in spec.groups]}")
    return float(sum(result["per_agent"][a] for g in spec.groups if g.name in groups for a in g.agents))


def eval_record(result: Mapping[str, Any]) -> dict[str, float | int]:
    """One ``eval_history`` entry: every scalar number of an evaluation result.

    ``env_steps`` and ``wall_time_s`` first, then ``ep_return``, ``ep_return_std``,
    ``ep_length``, ``success_rate``, ``win_rate`` ... as the evaluation reported them,
    and ``eval_time_s`` (seconds the evaluation took, included in ``wall_time_s``);
    nested per-agent / per-group tables and strings are left out (``best_eval`` and
    ``final_eval`` keep the whole result).
    """
    first = {k: result[k] for k in ("env_steps", "wall_time_s") if k in result}
    rest = {k: v for k, v in result.items()
            if k not in first and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {**first, **rest}


def _mean_and_se(result: Mapping[str, Any]) -> tuple[float, float]:
    """The score of an evaluation and its standard error (win rate: binomial; return: std / sqrt(episodes))."""
    n = max(int(result.get("episodes", 1)), 1)
    if "win_rate" in result:
        p = float(result["win_rate"])
        return p, math.sqrt(max(p * (1 - p), 1.0 / n) / n)
    return float(result["ep_return"]), float(result.get("ep_return_std", 0.0)) / math.sqrt(n)


def stochastic_gap(deterministic: Mapping[str, Any], stochastic: Mapping[str, Any]) -> float:
    """``(stochastic - deterministic) / standard error of the difference`` of two evaluations of one policy
    (win rates against a fixed opponent, else team returns): a z score; ``|z| >= GAP_Z`` is a real gap.

    >>> round(stochastic_gap({"ep_return": -61.3, "ep_return_std": 8.0, "episodes": 50},
    ...                      {"ep_return": -45.8, "ep_return_std": 8.0, "episodes": 50}), 1)
    9.7
    """
    d, d_se = _mean_and_se(deterministic)
    s, s_se = _mean_and_se(stochastic)
    se = math.hypot(d_se, s_se)
    return (s - d) / se if se > 0 else (0.0 if s == d else math.copysign(math.inf, s - d))


def with_stochastic(final: dict[str, Any], stochastic: Mapping[str, Any]) -> dict[str, Any]:
    """``final`` (a deterministic evaluation) with ``stochastic`` = the stochastic evaluation's scalars and
    ``gap`` (:func:`stochastic_gap`, in standard errors)."""
    keys = ("ep_return", "ep_return_std", "win_rate", "draw_rate", "loss_rate", "score", "success_rate")
    return {**final, "stochastic": {**{k: stochastic[k] for k in keys if k in stochastic},
                                    "gap": stochastic_gap(final, stochastic)}}


def gap_line(final: Mapping[str, Any]) -> str:
    """The end-of-run words on a deterministic/stochastic gap of ``GAP_Z`` standard errors or more; else ``""``."""
    sto = final.get("stochastic")
    if sto is None or abs(sto["gap"]) < GAP_Z:
        return ""
    z = sto["gap"]
    if "win_rate" in final:
        values = f"win rate {final['win_rate']:.2f} deterministic, {sto['win_rate']:.2f} stochastic"
    else:
        values = f"return {final['ep_return']:.2f} deterministic, {sto['ep_return']:.2f} stochastic"
    better = "stochastic" if z > 0 else "deterministic"
    hint = "; set eval.deterministic=false to evaluate (and pick best.pt) by sampling" if z > 0 else ""
    return f"; final eval {values} ({better} better by {abs(z):.1f} standard errors{hint})"
