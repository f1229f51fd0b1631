"""``pope:FILE[:IMAGES][:instances=INSTANCES.json]``: a POPE question file.

The format of the POPE repository's files (``output/coco/coco_pope_{random,popular,adversarial}.json``):
JSON lines ``{"question_id", "image", "text", "label"}`` (``image_id`` and other keys kept in
``meta``), the image a file name in ``IMAGES`` (default: the file's folder). Items: ``kind``
``presence``, ``answer`` the label (``yes``/``no``), ``meta``: ``question_id``, ``neg_type`` (from
the file name, ``..._random.json`` -> ``random``, or the ``neg_type`` option), ``candidates``, and
``target``: the object asked about, read from the question (``Is there a(n) X [in the image]?``).

With ``instances=`` (a COCO instances file over the same images, matched by file name) items carry
the image's objects (boxes, masks) and ``obj_index``, and every question must ask about a category
of that file: an unknown one is a :class:`~vlinterp.core.errors.DataError` naming the line.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from ...core.errors import ConfigError
from ...core.items import Item
from .base import Dataset, json_lines, load_rgb, need_dir, need_file
from .coco import POPE_KINDS, YES_NO

FIELDS = ("image", "text", "label")
NEG_TYPES = ("random", "popular", "adversarial")
_QUESTION = re.compile(r"^\s*is there (?:a|an|any|some) (.+?)(?: in (?:the|this) (?:image|picture|photo))?\s*\?\s*$", re.I)
_NEG_IN_NAME = re.compile(r"(?:^|[_\-.])(random|popular|adversarial)(?:[_\-.]|$)")


def question_target(text: str) -> str | None:
    """The object a presence question asks about (``Is there a dog in the image?`` -> ``dog``)."""
    m = _QUESTION.match(str(text))
    return m.group(1).strip().lower() if m else None


def neg_type_of(path: str) -> str | None:
    """``random`` / ``popular`` / ``adversarial`` when the file name says which, else None."""
    m = _NEG_IN_NAME.search(os.path.splitext(os.path.basename(path))[0])
    return m.group(1) if m else None


class PopeDataset(Dataset):
    name = "pope"
    kinds = tuple(POPE_KINDS)
    positional = ("file", "images")
    paths = {"file": ("text", "POPE file"), "images": ("dir", "POPE image folder"), "instances": ("file", "COCO annotations")}

    @dataclass
    class Config:
        file: str = ""
        images: str | None = None          # image folder (default: the file's folder)
        instances: str | None = None       # COCO instances over the same images: objects + category check
        neg_type: str | None = None        # the file's negative type (default: from its name)
        on_error: Literal["raise", "skip"] = "raise"
        kind: str | None = None

        def validate(self):
            if self.neg_type is not None and self.neg_type not in NEG_TYPES:
                raise ConfigError(f"pope: neg_type must be one of {', '.join(NEG_TYPES)}, got {self.neg_type!r}")

    def _open(self) -> None:
        c = self.config
        self.path = need_file(c.file, "POPE file")
        self.image_dir = need_dir(c.images, "POPE image folder") if c.images else os.path.dirname(os.path.abspath(self.path))
        self.neg_type = c.neg_type or neg_type_of(self.path)
        self.coco = None
        if c.instances:
            from .coco import CocoDataset

            self.coco = CocoDataset(CocoDataset.Config(annotations=c.instances, images=self.image_dir, on_error=c.on_error))
            self.skipped += self.coco.skipped
            self.by_file = {str(im["file_name"]): i for i, im in self.coco.images.items() if i not in self.coco.bad_images}
            self.names = {str(cat["name"]).lower() for cat in self.coco.categories.values()}
        self.records: list[tuple[int, dict]] = []
        for ln, d, err in json_lines(self.path, "POPE file"):
            where = f"{self.path}:{ln}"
            if err:
                self.bad(where, err)
                continue
            if not isinstance(d, dict):
                self.bad(where, "not a JSON object", f" (got {type(d).__name__})")
                continue
            if "question_id" in d:
                where += f" (question {d['question_id']})"
            miss = [k for k in FIELDS if k not in d]
            if miss:
                self.bad(where, f"missing key {miss[0]!r}", f" (a POPE line has {', '.join(FIELDS)})")
                continue
            label = str(d["label"]).strip().lower()
            if label not in YES_NO:
                self.bad(where, "bad label", f" ({d['label']!r}; must be yes or no)")
                continue
            img = str(d["image"])
            if not os.path.isfile(img if os.path.isabs(img) else os.path.join(self.image_dir, img)):
                self.bad(where, "image file missing", f" ({img!r} not in {self.image_dir})")
                continue
            if self.coco is not None:
                target = question_target(d["text"])
                if target is None:
                    self.bad(where, "unknown category in the prompt", f" (no 'is there a ...?' object in {d['text']!r})")
                    continue
                if target not in self.names:
                    self.bad(where, "unknown category in the prompt", f" ({target!r} is not a category of {c.instances})")
                    continue
                if os.path.basename(img) not in self.by_file:
                    self.bad(where, "image not in the instances file", f" ({img!r} not in {c.instances})")
                    continue
            self.records.append((ln, d))

    def describe(self) -> str:
        return self.spec or f"pope:{self.path}"

    def check_kind(self, kind: str | None) -> str:
        k = super().check_kind(kind)
        want = POPE_KINDS[k]
        if k != "presence" and self.neg_type is not None and want != self.neg_type:
            from ...core.errors import UsageError

            raise UsageError(f"{self.describe()} holds {self.neg_type} negatives, not {want} ({k!r} items)")
        return k

    def _records(self, kind: str):
        return self.records

    def _load(self, record, kind: str) -> Item:
        ln, d = record
        where = f"{self.path}:{ln}"
        img_name = str(d["image"])
        target = question_target(d["text"])
        meta = {k: v for k, v in d.items() if k not in ("image", "text", "label")}
        meta.update(question_id=d.get("question_id", ln - 1), image_path=img_name, target=target,
                    neg_type=self.neg_type, candidates=YES_NO)
        if self.coco is not None:  # the instances file's image (same folder) and its objects
            image, objs = self.coco._image_and_objects(self.by_file[os.path.basename(img_name)])
            meta["obj_index"] = next((k for k, o in enumerate(objs) if o.name.lower() == target), None)
        else:
            image = load_rgb(img_name if os.path.isabs(img_name) else os.path.join(self.image_dir, img_name), where)
            objs = []
        qid = d.get("question_id", ln - 1)
        return Item(image, str(d["text"]), str(d["label"]).strip().lower(), objs, str(qid), "presence", meta, where)


__all__ = ["PopeDataset", "question_target", "neg_type_of", "NEG_TYPES"]
