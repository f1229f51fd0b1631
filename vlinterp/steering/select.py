"""Choosing a steering strength on calibration items, scored with :mod:`vlinterp.metrics`.

Calibration items carry their answers and candidates (yes/no questions with ``meta["neg_type"]``,
colour / count questions with their answer words, captions); :func:`calib_scores` answers them with
the method on (:func:`vlinterp.metrics.answers.answer`, in the order given, so the batches and the
numbers depend only on the list) and scores each group. The rules are pure functions of those
numbers, so a test can check the choice against the grid recorded in ``meta``:

* :func:`least_false_yes`: the lowest false-yes rate on the ``adversarial`` yes/no group (all yes/no
  items without one) among the grid values whose accuracy on every other group drops by at most
  ``max_drop`` (mean-difference, probe steering, grounding's yes/no strength);
* :func:`best_accuracy`: the highest accuracy on that group with the other groups' accuracy within
  ``max_drop`` (IRI).

Both return 0 (no steering) when no grid value beats the unsteered numbers.
"""
from __future__ import annotations

import contextlib

from ..core.errors import ConfigError
from ..metrics.answers import answer, group_scores
from .base import progress_bar

OBJECTIVE = ("adversarial", "presence")


def _objective(scores: dict) -> str:
    for k in OBJECTIVE:
        if isinstance(scores.get(k), dict):
            return k
    yn = [k for k, v in scores.items() if isinstance(v, dict)]
    if not yn:
        raise ConfigError("choosing a strength needs yes/no calibration items (presence questions with answers)")
    return yn[0]


def calib_scores(adapter, method, items, bar=None) -> dict:
    """Per-group scores (:func:`~vlinterp.metrics.answers.group_scores`) of the answers to ``items``
    with ``method`` applied (``None``: unsteered)."""
    with method.applied(adapter) if method is not None else contextlib.nullcontext():
        preds = answer(adapter, items, progress=bar)
    return group_scores(items, preds)


def summary(scores: dict) -> dict:
    """``{"false_yes": objective group's false-yes rate, group: accuracy, ...}`` (the other groups;
    when there are none, the objective group's own ``accuracy``, so that saying "no" to everything
    cannot win)."""
    obj = _objective(scores)
    out = {"false_yes": scores[obj]["false_yes"]}
    for k, v in scores.items():
        if k != obj:
            out[k] = v["accuracy"] if isinstance(v, dict) else v
    if len(out) == 1:
        out["accuracy"] = scores[obj]["accuracy"]
    return out


def accuracies(scores: dict) -> dict:
    """``{group: accuracy}`` with the objective group first."""
    obj = _objective(scores)
    out = {obj: scores[obj]["accuracy"]}
    for k, v in scores.items():
        if k != obj:
            out[k] = v["accuracy"] if isinstance(v, dict) else v
    return out


def least_false_yes(base: dict, grid: dict, max_drop: float) -> float:
    """The grid key (a float) with the lowest ``false_yes`` below the base's, among those whose other
    numbers each stay within ``max_drop`` of the base's; 0.0 when none qualifies. ``base`` and each
    ``grid[str(value)]`` are :func:`summary` dicts. Ties: the first in grid order."""
    best = (base["false_yes"], 0.0)
    for key, r in grid.items():
        ok = all(r[k] >= base[k] - max_drop for k in base if k != "false_yes")
        if ok and r["false_yes"] < best[0]:
            best = (r["false_yes"], float(key))
    return best[1]


def best_accuracy(base: dict, grid: dict, max_drop: float) -> float:
    """The grid key with the highest accuracy on the first group above the base's, among those whose
    other groups' accuracies stay within ``max_drop``; 0.0 when none does. Dicts of :func:`accuracies`."""
    first = next(iter(base))
    best = (base[first], 0.0)
    for key, r in grid.items():
        ok = all(r[k] >= base[k] - max_drop for k in base if k != first)
        if ok and r[first] > best[0]:
            best = (r[first], float(key))
    return best[1]


def grid_scores(adapter, method, field: str, values, calib, reduce, progress: bool = False, desc: str = "") -> tuple[dict, dict]:
    """``(base, {str(value): numbers})``: ``reduce(calib_scores(...))`` unsteered and with
    ``method.replace(field=value)`` for each value."""
    bar = progress_bar(progress, (len(values) + 1) * len(calib), desc or f"fitting {method.name}: choosing {field}")
    try:
        base = reduce(calib_scores(adapter, None, calib, bar))
        grid = {str(float(v)): reduce(calib_scores(adapter, method.replace(**{field: float(v)}), calib, bar)) for v in values}
    finally:
        bar.close()
    return base, grid


def select_least_false_yes(method, adapter, field: str, values, calib, max_drop: float, progress: bool = False) -> float:
    """Set ``method.config.<field>`` to :func:`least_false_yes` over ``values`` on ``calib``; the grid's
    numbers go to ``method.meta`` (``<field>_grid``, ``<field>_base``). Returns the value."""
    base, grid = grid_scores(adapter, method, field, values, calib, summary, progress)
    value = least_false_yes(base, grid, max_drop)
    method.config = method.make_config(method.config, **{field: value})
    method.meta.update({f"{field}_grid": grid, f"{field}_base": base, f"{field}_calib": len(calib)})
    return value


__all__ = ["calib_scores", "summary", "accuracies", "least_false_yes", "best_accuracy", "grid_scores",
           "select_least_false_yes"]
