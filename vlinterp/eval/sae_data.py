"""Datasets for SAE-V: the items an activation store is harvested over, and the spec string a store
records so that its items can be read again (dashboards, Ray workers).

Specs are :mod:`vlinterp.eval.datasets` specs; a store records a resolved one that reads exactly its
items (``shapes:SPLIT:N:SEED:KIND``, ``jsonl:file=/abs/items.jsonl:kind=caption:take=100``...). A
harvest reads the ``caption`` items of a dataset that has them (a shapes split, COCO with captions,
an exported subset), else what it holds (POPE questions, every line of a JSON-lines file: ``image``
(a path or null), ``prompt`` / ``text``, ``answer``). Shapes kinds ``question`` (POPE presence) and
``mixed`` (captions and presence questions in turn) are :data:`vlinterp.eval.shapes.ITEM_KINDS`.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import DataError, UnknownNameError
from ..core.items import Item
from . import shapes

KINDS = ("caption", "question", "mixed")
WANTED = ("caption",)  # what a harvest reads from a dataset that has several kinds


def shapes_items(split: str = "sae", n: int = 512, seed: int = 0, kind: str = "caption") -> list[Item]:
    """Image-text-answer items from the shapes world: ``caption`` (``describe the image.`` answered by
    the scene's caption, so text tokens name the colours and shapes), ``question`` (POPE presence
    questions with their answers, half yes, half no) or ``mixed`` (alternating; the questions'
    negatives adversarial). Sample ``i`` shows scene ``i`` of the split (odd ``mixed`` /
    ``question`` items: the question's scene)."""
    if kind not in KINDS:
        raise UnknownNameError("shapes item kind", kind, KINDS)
    return shapes.ITEM_KINDS[kind](split, n, seed)


def shapes_spec(split: str, n: int, seed: int = 0, kind: str = "caption") -> str:
    """The spec string of :func:`shapes_items` (what a store records)."""
    if kind not in shapes.ITEM_KINDS:
        raise UnknownNameError("shapes item kind", kind, list(shapes.ITEM_KINDS))
    return f"shapes:{split}:{int(n)}:{int(seed)}:{kind}"


def check_items(items: list[Item]) -> list[Item]:
    """Items a harvest can run: each has a prompt (text); a record without one is a
    :class:`DataError` naming it."""
    for it in items:
        if it.prompt is None or not str(it.prompt).strip():
            raise DataError(f"{it.where()}: no text (a harvested item needs a prompt / text, and an image or not)")
    return items


def read_harvest_items(spec: str, n: int | None = None, seed: int | None = None, **options) -> tuple[list[Item], str]:
    """``(items, resolved spec)`` of a harvest over ``spec`` (``n`` items drawn with ``seed``; a
    ``shapes`` split without ``N``: ``n`` scenes, default 512, seed ``seed`` or 0)."""
    from .datasets.pick import read_items

    items, info = read_items(spec, WANTED, n, seed, 512, 0, **options)
    return check_items(items), info["resolved"]


def items_from_spec(spec: str) -> list[Item]:
    """Dataset items from a spec string (a store's ``dataset``; see the module doc)."""
    from .datasets.pick import read_items

    return check_items(read_items(spec, WANTED)[0])


def swapped_captions(scene_items: list[Item], swap: float = 0.3, seed: int = 0) -> tuple[list[Item], set[int]]:
    """Caption items of ``scene_items`` (``describe the image.`` -> caption) with ``swap`` of the
    captions taken from another scene, and the set of mismatched sample ids. ``scene_items``:
    shapes items (``meta["scene"]``)."""
    from ..data.questions import CAPTION_QUESTION, caption

    rng = np.random.default_rng(seed)
    scenes = [it.meta["scene"] for it in scene_items]
    n = len(scenes)
    bad = set(rng.choice(n, int(round(swap * n)), replace=False).tolist())
    items = []
    for i, s in enumerate(scenes):
        text = caption(s)
        if i in bad:
            j = (i + 1 + int(rng.integers(n - 1))) % n
            while caption(scenes[j]) == caption(s):
                j = (j + 1) % n
            text = caption(scenes[j])
        items.append(Item(scene_items[i].image, CAPTION_QUESTION, text, scene_items[i].objects, scene_items[i].id, "caption",
                          {"scene": s, "mismatched": i in bad}))
    return items, bad


__all__ = ["shapes_items", "shapes_spec", "items_from_spec", "read_harvest_items", "check_items", "swapped_captions", "KINDS",
           "WANTED"]
