"""Prototype heads on a dataset's images: training (multi-label: the classes are the objects' names;
an image folder: one class per sub-folder) and the metrics of :mod:`vlinterp.prototypes.metrics` on
held-out items. Default data: ``n`` scenes of the shapes world's ``train`` split (24 colour-shape
classes) and held-out ``test`` scenes. The methods see items only."""
from __future__ import annotations

from ..core.items import Item, Object
from ..data.shapes import PAIRS
from ..prototypes.fit import fit
from ..prototypes.metrics import evaluate, labels_for
from . import shapes

CLASSES = [f"{c} {s}" for c, s in PAIRS]
WANTED = ("scene", "class")  # what `protos train/eval --dataset` read


def labelled(items: list[Item]) -> list[Item]:
    """``items`` whose objects name their classes: image-folder items (a class, no objects) get one
    object, the whole image, named by their class (no localisation ground truth: the pointing game
    then equals its random-map baseline)."""
    out = []
    for it in items:
        if it.objects or it.answer is None or it.image is None:
            out.append(it)
            continue
        W, H = it.image.size
        out.append(Item(it.image, it.prompt, it.answer, [Object(str(it.answer), (0.0, 0.0, float(W), float(H)))], it.id,
                        it.kind, it.meta, it.source))
    return out


def classes_for(items: list[Item]) -> list[str]:
    """The class names of a dataset: an image folder's classes (sorted folder names), the 24
    colour-shape pairs on the shapes world, else every object name in first-seen order."""
    from .scene_questions import vocabulary

    cands = [tuple(it.meta["candidates"]) for it in items if it.kind == "class" and it.meta.get("candidates")]
    if cands and len(cands) == len(items):
        return list(cands[0])
    return vocabulary(labelled(items))


def fit_items(adapter, items: list[Item], classes: list[str] | None = None, site: str | None = None, seed: int = 0,
              data: str = "", **kw):
    """:func:`vlinterp.prototypes.fit` on ``items`` (classes: :func:`classes_for`); ``data`` names
    them in ``pm.info``."""
    from ..core.errors import DataError

    items = labelled(items)
    classes = classes or classes_for(items)
    if not classes:
        raise DataError("no classes: the items have no objects and no class labels")
    pm = fit(adapter, [it.image for it in items], labels_for(items, classes), classes, site=site, seed=seed, **kw)
    pm.info["data"] = data
    return pm


def evaluate_items(pm, items: list[Item], **kw) -> dict:
    """:func:`vlinterp.prototypes.metrics.evaluate` on ``items`` (objects outside ``pm.classes``: a
    :class:`DataError` naming the item)."""
    return evaluate(pm, labelled(items), **kw)


def fit_shapes(adapter, site: str | None = None, n: int = 2000, seed: int = 0, **kw):
    """:func:`vlinterp.prototypes.fit` on ``n`` scenes of the shapes world's ``train`` split."""
    return fit_items(adapter, shapes.scenes("train", n, seed), CLASSES, site=site, seed=seed, data=f"shapes:train:{n}:{seed}", **kw)


def evaluate_shapes(pm, n: int = 300, seed: int = 71, split: str = "test", **kw) -> dict:
    """:func:`vlinterp.prototypes.metrics.evaluate` on ``n`` held-out scenes drawn with ``seed``."""
    return evaluate(pm, shapes.scenes(split, n, seed), **kw)


__all__ = ["fit_items", "evaluate_items", "fit_shapes", "evaluate_shapes", "classes_for", "labelled", "CLASSES", "WANTED"]
