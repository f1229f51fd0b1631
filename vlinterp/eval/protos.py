"""Prototype heads on the shapes world: training on ``n`` scenes of the ``train`` split (24
colour-shape classes, multi-label) and the metrics of :mod:`vlinterp.prototypes.metrics` on held-out
scenes. The methods see items only."""
from __future__ import annotations

from ..data.shapes import PAIRS
from ..prototypes.fit import fit
from ..prototypes.metrics import evaluate, labels_for
from . import shapes

CLASSES = [f"{c} {s}" for c, s in PAIRS]


def fit_shapes(adapter, site: str | None = None, n: int = 2000, seed: int = 0, **kw):
    """:func:`vlinterp.prototypes.fit` on ``n`` scenes of the shapes world's ``train`` split."""
    items = shapes.scenes("train", n, seed)
    pm = fit(adapter, [it.image for it in items], labels_for(items, CLASSES), CLASSES, site=site, seed=seed, **kw)
    pm.info["data"] = f"shapes:train:{n}:{seed}"
    return pm


def evaluate_shapes(pm, n: int = 300, seed: int = 71, split: str = "test", **kw) -> dict:
    """:func:`vlinterp.prototypes.metrics.evaluate` on ``n`` held-out scenes drawn with ``seed``."""
    return evaluate(pm, shapes.scenes(split, n, seed), **kw)


__all__ = ["fit_shapes", "evaluate_shapes", "CLASSES"]
