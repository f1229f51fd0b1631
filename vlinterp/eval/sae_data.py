"""Datasets for SAE-V: the items an activation store is harvested over, and the spec string a store
records so that its items can be rebuilt (dashboards, Ray workers).

Specs: ``shapes:SPLIT:N[:SEED[:KIND]]`` (KIND ``caption``, ``question`` or ``mixed``; what
:func:`shapes_items` makes) or ``jsonl:PATH`` (one ``{"image": path or null, "text": ...,
"answer": ...}`` per line; a malformed line stops with ``PATH:line``). The CLI builds the shapes
spec from ``--dataset shapes:SPLIT[:KIND] --n N --seed S``.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import ConfigError, UnknownNameError
from ..core.items import Item
from . import shapes

KINDS = ("caption", "question", "mixed")


def shapes_items(split: str = "sae", n: int = 512, seed: int = 0, kind: str = "caption") -> list[Item]:
    """Image-text-answer items from the shapes world: ``caption`` (``describe the image.`` answered by
    the scene's caption, so text tokens name the colours and shapes), ``question`` (POPE presence
    questions with their answers, half yes, half no) or ``mixed`` (alternating; the questions'
    negatives adversarial). Sample ``i`` shows scene ``i`` of the split (odd ``mixed`` /
    ``question`` items: the question's scene)."""
    from ..data.questions import CAPTION_QUESTION, caption, pope_split

    if kind == "caption":
        return shapes.captions(split, n, seed)
    if kind == "question":
        return shapes.pope(split, n, seed, "random")
    if kind == "mixed":  # even samples captions, odd samples presence questions (POPE-style)
        return [shapes.scene_item(s, CAPTION_QUESTION, caption(s), "caption") if i % 2 == 0 else
                shapes.scene_item(s, qa.question, qa.answer, "presence", target=qa.target, neg_type="adversarial",
                                  candidates=shapes.CANDIDATES["presence"])
                for i, (s, qa) in enumerate(pope_split(split, n, seed, "adversarial"))]
    raise UnknownNameError("shapes item kind", kind, KINDS)


def jsonl_items(path: str, image_dir: str | None = None) -> list[Item]:
    """Items of a JSON-lines file ``{"image": path or null, "text": ..., "answer"?: ...}``."""
    from ..data.jsonl import read_jsonl

    return [Item(img, str(d["text"]), None if d.get("answer") is None else str(d["answer"]), [], f"{path}:{k + 1}", "text")
            for k, (d, img) in enumerate(read_jsonl(path, ("text",), image_dir))]


def shapes_spec(split: str, n: int, seed: int = 0, kind: str = "caption") -> str:
    """The spec string of :func:`shapes_items` (what a store records)."""
    if kind not in KINDS:
        raise UnknownNameError("shapes item kind", kind, KINDS)
    return f"shapes:{split}:{int(n)}:{int(seed)}:{kind}"


def items_from_spec(spec: str) -> list[Item]:
    """Dataset items from a spec string (see the module doc)."""
    kind, _, rest = str(spec).partition(":")
    if kind == "shapes":
        parts = rest.split(":")
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConfigError(f"dataset spec {spec!r}: expected shapes:SPLIT:N[:SEED[:KIND]]")
        return shapes_items(parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 0,
                            parts[3] if len(parts) > 3 else "caption")
    if kind == "jsonl":
        return jsonl_items(rest)
    raise ConfigError(f"unknown dataset spec {spec!r}: shapes:SPLIT:N[:SEED[:KIND]] or jsonl:PATH")


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


__all__ = ["shapes_items", "jsonl_items", "shapes_spec", "items_from_spec", "swapped_captions", "KINDS"]
