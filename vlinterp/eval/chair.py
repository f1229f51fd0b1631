"""CHAIR truth as items: the shapes world's captions (objects = colour-shape pairs; nouns = shape
words, attributes = colour words) and COCO-style caption-truth files (one JSON object per line:
``image``, ``objects`` = canonical object names) with a synonym table (``{object: [synonyms]}``).
:func:`chair_items` scores captions of either against :func:`vlinterp.metrics.chair.chair`.
"""
from __future__ import annotations

import json

from ..core.errors import DataError
from ..core.items import Item, Object
from ..data.shapes import COLOURS, SHAPES
from ..metrics.chair import attribute_mentions, chair

CAPTION_PROMPT = "describe the image."


def shapes_mentions(caption: str) -> list[tuple[str | None, str]]:
    """``(colour or None, shape)`` per object mention in a shapes-world caption."""
    return attribute_mentions(caption, SHAPES, COLOURS)


def shapes_truth(item_or_scene) -> set[tuple[str, str]]:
    """The ``(colour, shape)`` pairs in an item's image (objects with ``colour`` / ``shape``
    attributes) or in a shapes :class:`~vlinterp.data.shapes.Scene`."""
    if isinstance(item_or_scene, Item):
        return {(o.attrs["colour"], o.attrs["shape"]) for o in item_or_scene.objects}
    return {(o.colour, o.shape) for o in item_or_scene.objects}


def shapes_chair(captions: list[str], truths) -> dict[str, float]:
    """CHAIR of shapes-world ``captions`` against items or scenes (``truths``)."""
    return chair(captions, [shapes_truth(t) for t in truths], nouns=SHAPES, attributes=COLOURS)


def chair_items(captions: list[str], items, vocabulary: dict[str, str] | None = None) -> dict[str, float]:
    """CHAIR of ``captions`` against the items' objects: with ``vocabulary`` their names are the
    canonical objects (user data), without it their colour-shape pairs (the shapes world)."""
    if vocabulary is None:
        return shapes_chair(captions, items)
    return chair(captions, [{o.name for o in it.objects} for it in items], vocabulary=vocabulary)


def read_caption_truth(path: str, image_dir: str | None = None) -> list[Item]:
    """A caption-truth JSON-lines file as caption items (``describe the image.``; objects named by
    their canonical names)."""
    from ..data.jsonl import read_jsonl

    out = []
    for k, (d, img) in enumerate(read_jsonl(path, ("image", "objects"), image_dir)):
        if not isinstance(d["objects"], list):
            raise DataError(f"{path}:{k + 1}: objects must be a list of object names")
        out.append(Item(img, CAPTION_PROMPT, None, [Object(str(o)) for o in d["objects"]], f"{path}:{k + 1}", "caption"))
    if not out:
        raise DataError(f"{path}: no caption-truth lines")
    return out


def read_vocabulary(path: str) -> dict[str, str]:
    """Synonym table: JSON ``{canonical: [synonym, ...]}`` -> ``{word or phrase: canonical}``."""
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a JSON synonym table ({e})") from None
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise DataError(f"{path}: a synonym table is a JSON object {{object: [synonyms]}}")
    vocab = {}
    for canon, syns in table.items():
        for w in [canon, *syns]:
            vocab[str(w).lower()] = canon
    return vocab


__all__ = ["shapes_mentions", "shapes_truth", "shapes_chair", "chair_items", "read_caption_truth", "read_vocabulary",
           "CAPTION_PROMPT"]
