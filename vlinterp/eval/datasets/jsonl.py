"""``jsonl:FILE[:IMAGES]``: an image folder and JSON lines of prompts, answers and objects.

One JSON object per line, every key optional::

    {"id": "a1", "image": "images/a1.png", "prompt": "is there a dog?", "answer": "yes",
     "kind": "presence", "subset": "pope-random",
     "objects": [{"name": "dog", "box": [x0, y0, x1, y1], "mask": RLE or polygons, "attrs": {...}}],
     "meta": {...}}

Also read: the older spellings vlinterp's commands took (``question`` or ``text`` for the prompt,
``label`` or ``target`` for the answer, ``box`` + ``object`` for one object: ``trace --dataset``,
``audit --dataset``, ``sae harvest``); other keys go to ``meta``. ``image`` paths are relative to
``IMAGES`` (default: the file's folder). Boxes are ``(x0, y0, x1, y1)`` pixels, end exclusive; masks
COCO RLE (``{"size": [H, W], "counts": ...}``) or polygons.

Item kinds: a file whose lines carry ``subset`` or ``kind`` gives those (``items(kind=K)`` keeps the
lines whose ``subset`` is ``K``, or without subsets whose ``kind`` is ``K``; ``all``: every line); a
file without either gives its lines whatever kind is asked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ...core.errors import DataError, UsageError
from ...core.items import Item, Object
from .base import Dataset, json_lines, load_rgb, need_dir, need_file
from .masks import check_segmentation, decode_segmentation

PROMPT_KEYS = ("prompt", "question", "text")
ANSWER_KEYS = ("answer", "label", "target")
OWN_KEYS = ("id", "image", "kind", "subset", "objects", "meta", "box", "object", *PROMPT_KEYS, *ANSWER_KEYS)


def as_box(box):
    """A box as given: ``[x0, y0, x1, y1]``, or the older ``"x0,y0,x1,y1"`` string as a list."""
    if isinstance(box, str):
        try:
            return [float(v) for v in box.split(",")]
        except ValueError:
            return box
    return box


def _box_error(box) -> str | None:
    box = as_box(box)
    if not (isinstance(box, (list, tuple)) and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        return f"box must be [x0, y0, x1, y1], got {box!r}"
    if box[2] < box[0] or box[3] < box[1]:
        return f"box {list(box)} has x1 < x0 or y1 < y0"
    return None


def object_error(o) -> str | None:
    """Why one ``objects`` entry cannot be read, or None."""
    if not isinstance(o, dict) or not isinstance(o.get("name"), str):
        return "each object needs a name"
    if o.get("box") is not None and _box_error(o["box"]):
        return _box_error(o["box"])
    m = o.get("mask")
    if m is not None:
        size = m.get("size") if isinstance(m, dict) else None
        why = check_segmentation(m, *(size if isinstance(size, list) and len(size) == 2 else (1, 1)))
        if why:
            return why
    if o.get("attrs") is not None and not isinstance(o["attrs"], dict):
        return "object attrs must be a JSON object"
    return None


def select(tags: list[tuple[str | None, str | None]], kind: str) -> list[int]:
    """Positions of the records ``kind`` selects, from each record's ``(subset, kind)`` (see the
    module docstring)."""
    if kind == "all" or not any(s or k for s, k in tags):
        return list(range(len(tags)))
    if any(s for s, _ in tags):
        return [i for i, (s, _) in enumerate(tags) if s == kind]
    return [i for i, (_, k) in enumerate(tags) if k == kind]


def tag_kinds(tags: list[tuple[str | None, str | None]]) -> tuple[str, ...]:
    """``all`` and the subsets (or kinds) present, in first-seen order."""
    seen = [s for s, _ in tags if s] or [k for _, k in tags if k]
    return ("all", *dict.fromkeys(seen))


class JsonlDataset(Dataset):
    name = "jsonl"
    positional = ("file", "images")
    paths = {"file": ("text", "JSON-lines file"), "images": ("dir", "image folder")}

    @dataclass
    class Config:
        file: str = ""
        images: str | None = None     # folder the image paths are relative to (default: the file's)
        on_error: Literal["raise", "skip"] = "raise"
        kind: str | None = None

    def _open(self) -> None:
        c = self.config
        self.path = need_file(c.file, "JSON-lines file")
        self.image_dir = need_dir(c.images, "image folder") if c.images else os.path.dirname(os.path.abspath(self.path))
        self.records: list[tuple[int, dict]] = []
        for ln, d, err in json_lines(self.path, "JSON-lines file"):
            where = f"{self.path}:{ln}"
            if err:
                self.bad(where, err)
                continue
            if not isinstance(d, dict):
                self.bad(where, "not a JSON object", f" (got {type(d).__name__})")
                continue
            if "id" in d:
                where += f" (id {d['id']})"
            why = self._check(d)
            if why:
                self.bad(where, *why)
                continue
            self.records.append((ln, d))
        self.tags = [(r.get("subset"), r.get("kind")) for _, r in self.records]

    def _check(self, d: dict) -> tuple[str, str] | None:
        img = d.get("image")
        if img is not None:
            if not isinstance(img, str):
                return "bad image", f" (must be a path, got {type(img).__name__})"
            if not os.path.isfile(img if os.path.isabs(img) else os.path.join(self.image_dir, img)):
                return "image file missing", f" ({img!r} not in {self.image_dir})"
        if d.get("box") is not None and _box_error(d["box"]):
            return "bad box", f" ({_box_error(d['box'])})"
        objs = d.get("objects")
        if objs is not None:
            if not isinstance(objs, list):
                return "bad objects", " (must be a list)"
            for k, o in enumerate(objs):
                why = object_error(o)
                if why:
                    reason, _, detail = why.partition(" (")
                    return f"bad object {k}: {reason}", f" ({detail}" if detail else ""
        for key in ("meta",):
            if d.get(key) is not None and not isinstance(d[key], dict):
                return f"bad {key}", " (must be a JSON object)"
        return None

    def describe(self) -> str:
        return self.spec or f"jsonl:{self.path}"

    def available_kinds(self) -> tuple[str, ...]:
        return tag_kinds(self.tags)

    def check_kind(self, kind: str | None) -> str:
        k = kind or self.config.kind or "all"
        if k != "all" and any(s or t for s, t in self.tags) and not select(self.tags, k):
            raise UsageError(f"{self.describe()} has no {k!r} items; it has: {', '.join(self.available_kinds())}")
        return k

    def _records(self, kind: str):
        return [self.records[i] for i in select(self.tags, kind)]

    def _load(self, record, kind: str) -> Item:
        ln, d = record
        where = f"{self.path}:{ln}"
        image = None
        if d.get("image"):
            p = d["image"]
            image = load_rgb(p if os.path.isabs(p) else os.path.join(self.image_dir, p), where)
        return record_item(d, image, str(d["id"]) if "id" in d else f"{os.path.basename(self.path)}:{ln}", where)


def record_item(d: dict, image, item_id: str, where: str) -> Item:
    """An :class:`Item` from one record (a JSON line, or an HF row with its image decoded)."""
    prompt = next((d[k] for k in PROMPT_KEYS if d.get(k) is not None), None)
    answer = next((d[k] for k in ANSWER_KEYS if d.get(k) is not None), None)
    objs = []
    for o in d.get("objects") or []:
        mask = o.get("mask")
        if mask is not None:
            if image is None and not isinstance(mask, dict):
                raise DataError(f"{where}: object {o['name']!r}: a polygon mask needs the record's image (for its size)")
            size = (image.height, image.width) if image is not None else tuple(mask["size"])
            why = check_segmentation(mask, *size)
            if why:
                raise DataError(f"{where}: object {o['name']!r}: {why}")
            mask = decode_segmentation(mask, *size)
        box = tuple(float(v) for v in as_box(o["box"])) if o.get("box") is not None else None
        objs.append(Object(o["name"], box, mask, dict(o.get("attrs") or {})))
    if d.get("box") is not None and not d.get("objects"):
        objs.append(Object(str(d.get("object") or "object"), tuple(float(v) for v in as_box(d["box"]))))
    meta = dict(d.get("meta") or {})
    meta.update({k: v for k, v in d.items() if k not in OWN_KEYS})
    if d.get("object") is not None:
        meta.setdefault("object", d["object"])
    return Item(image, None if prompt is None else str(prompt), None if answer is None else str(answer), objs, item_id,
                str(d.get("kind") or ""), meta, where)


__all__ = ["JsonlDataset", "record_item", "select", "tag_kinds", "object_error"]
