"""``coco:INSTANCES.json[:IMAGES]`` and ``chair:CAPTIONS.json:INSTANCES.json[:IMAGES]``: COCO.

An instances file (``images``, ``annotations``, ``categories``) and its image folder (default: the
JSON's folder). Objects carry ``name`` = the category name, ``box`` = ``(x0, y0, x1, y1)`` from the
COCO ``[x, y, w, h]``, ``mask`` decoded by pycocotools (polygons, RLE and crowd RLE: the pixels of
``COCO.annToMask``) and ``attrs``: ``category_id``, ``supercategory``, ``annotation_id``,
``iscrowd``, ``area`` and the annotation's own ``attributes`` object, if any.

Kinds: ``scene`` (image + objects), ``caption`` (with a captions file, option ``captions=`` or the
``chair`` format: prompt ``caption_prompt``, answer the first reference caption, all of them in
``meta["references"]``), and presence questions generated POPE-style (Li et al. 2023, the
``RUCAIBox/POPE`` sampler): on every image with at least ``questions`` distinct categories, its first
``questions`` categories each get a "yes" question followed by a "no" one about an absent category:
``pope-random`` (uniform over the categories that occur, drawn with ``question_seed`` and the
image's position), ``pope-popular`` (the most frequent absent category), ``pope-adversarial`` (the
absent category that co-occurs most with the positive one); ``presence`` = ``pope-random``.
Questions read ``Is there a(n) {category} in the image?`` as in POPE's files.

Bad records (``DataError`` naming the file and the record, or skipped with ``on_error=skip``): a
missing key, an annotation on an image the file does not list, an unknown category, a bad box, a
degenerate polygon, an RLE of the wrong size, an image file that is not there.
"""
from __future__ import annotations

import collections
import math
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...core.errors import ConfigError, DataError
from ...core.items import Item, Object
from .base import Dataset, load_rgb, need_dir, need_file, read_json
from .masks import check_segmentation, decode_segmentation

YES_NO = ("yes", "no")
POPE_KINDS = {"presence": "random", "pope-random": "random", "pope-popular": "popular", "pope-adversarial": "adversarial"}


def presence_prompt(name: str) -> str:
    """POPE's question: ``Is there a dog in the image?`` / ``Is there an apple in the image?``."""
    return f"Is there {'an' if name[:1].lower() in 'aeiou' else 'a'} {name} in the image?"


def _id(x) -> bool:
    return isinstance(x, (int, str)) and not isinstance(x, bool)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class CocoDataset(Dataset):
    name = "coco"
    kinds = ("scene", "caption", *POPE_KINDS)
    positional = ("annotations", "images")
    paths = {"annotations": ("file", "COCO annotations"), "images": ("dir", "COCO image folder"),
             "captions": ("file", "COCO captions")}

    @dataclass
    class Config:
        annotations: str = ""                       # instances JSON
        images: str | None = None                   # image folder (default: the JSON's folder)
        captions: str | None = None                 # captions JSON (caption kind, CHAIR)
        caption_prompt: str = "describe the image."
        questions: int = 3                          # presence: positives per image (POPE: 3)
        question_seed: int = 0                      # presence: seed of pope-random's negatives
        on_error: Literal["raise", "skip"] = "raise"
        kind: str | None = None

        def validate(self):
            if self.questions < 1:
                raise ConfigError(f"coco: questions must be at least 1, got {self.questions}")
            if self.kind is not None and self.kind not in CocoDataset.kinds:
                raise ConfigError(f"coco: unknown item kind {self.kind!r}; kinds: {', '.join(CocoDataset.kinds)}")

    # ------------------------------------------------------------------ reading
    def _open(self) -> None:
        c = self.config
        self.path = need_file(c.annotations, "COCO annotations")
        self.image_dir = need_dir(c.images, "COCO image folder") if c.images else os.path.dirname(os.path.abspath(self.path))
        data = read_json(self.path, "COCO annotations")
        if not isinstance(data, dict):
            raise DataError(f"{self.path}: a COCO instances file is a JSON object, got {type(data).__name__}")
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DataError(f"{self.path}: missing {key!r} (a COCO instances file has images, annotations, categories)")
            if not isinstance(data[key], list):
                raise DataError(f"{self.path}: {key!r} must be a list, got {type(data[key]).__name__}")
        self.categories: dict[int, dict] = {}
        for k, cat in enumerate(data["categories"]):
            where = f"{self.path}: category #{k}"
            if not isinstance(cat, dict):
                self.bad(where, "not an object")
                continue
            miss = [x for x in ("id", "name") if x not in cat]
            if miss:
                self.bad(f"{self.path}: category {cat.get('id', '#' + str(k))}", f"missing key {miss[0]!r}")
                continue
            if not _id(cat["id"]):
                self.bad(where, "bad id", f" ({cat['id']!r}; ids are integers or strings)")
                continue
            self.categories[cat["id"]] = cat
        self._read_images(data["images"])
        self._read_annotations(data["annotations"])
        self.references: dict = {}
        if c.captions:
            self._read_captions(c.captions)
        self._questions: dict[str, list] = {}
        self._last: tuple | None = None

    def _read_images(self, images: list) -> None:
        self.images: dict = {}
        self.order: list = []
        self.bad_images: set = set()
        for k, im in enumerate(images):
            if not isinstance(im, dict):
                self.bad(f"{self.path}: image #{k}", "not an object")
                continue
            where = f"{self.path}: image {im.get('id', '#' + str(k))}"
            miss = [x for x in ("id", "file_name", "width", "height") if x not in im]
            if miss:
                self.bad(where, f"missing key {miss[0]!r}")
                continue
            if not _id(im["id"]):
                self.bad(where, "bad id", f" ({im['id']!r}; ids are integers or strings)")
                continue
            if im["id"] in self.images:
                self.bad(where, "duplicate image id")
                continue
            if not (isinstance(im["width"], int) and isinstance(im["height"], int) and im["width"] > 0 and im["height"] > 0):
                self.bad(where, "bad size", f" (width {im['width']!r}, height {im['height']!r})")
                continue
            self.images[im["id"]] = im
            self.order.append(im["id"])
            if not os.path.isfile(os.path.join(self.image_dir, str(im["file_name"]))):
                self.bad(where, "image file missing", f" ({im['file_name']!r} not in {self.image_dir})")
                self.bad_images.add(im["id"])

    def _read_annotations(self, anns: list) -> None:
        self.anns: dict = collections.defaultdict(list)
        for k, a in enumerate(anns):
            if not isinstance(a, dict):
                self.bad(f"{self.path}: annotation #{k}", "not an object")
                continue
            where = f"{self.path}: annotation {a.get('id', '#' + str(k))}"
            miss = [x for x in ("id", "image_id", "category_id", "bbox") if x not in a]
            if miss:
                self._bad_ann(where, a.get("image_id"), f"missing key {miss[0]!r}")
                continue
            iid = a["image_id"]
            if not _id(iid) or iid not in self.images:
                self.bad(where, "annotation on a missing image", f" (image_id {iid!r} is not in 'images')")
                continue
            if iid in self.bad_images:
                continue
            where += f" (image {iid})"
            if not _id(a["category_id"]) or a["category_id"] not in self.categories:
                self._bad_ann(where, iid, "unknown category", f" (category_id {a['category_id']!r})")
                continue
            box = a["bbox"]
            if not (isinstance(box, list) and len(box) == 4 and all(_num(v) for v in box) and box[2] >= 0 and box[3] >= 0):
                self._bad_ann(where, iid, "bad bbox", f" ({box!r}; COCO boxes are [x, y, width, height])")
                continue
            if "segmentation" in a:
                im = self.images[iid]
                why = check_segmentation(a["segmentation"], im["height"], im["width"])
                if why:
                    reason, _, detail = why.partition(" (")
                    self._bad_ann(where, iid, reason, f" ({detail}" if detail else "")
                    continue
            self.anns[iid].append(a)

    def _bad_ann(self, where: str, iid, reason: str, detail: str = "") -> None:
        """A bad annotation of an existing image: the image is left out with it (its ground truth
        would be incomplete)."""
        self.bad(where, reason, detail)
        if _id(iid) and iid in self.images:
            self.bad_images.add(iid)

    def _read_captions(self, path: str) -> None:
        need_file(path, "COCO captions")
        data = read_json(path, "COCO captions")
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise DataError(f"{path}: a COCO captions file is an object with an 'annotations' list")
        refs = collections.defaultdict(list)
        for k, a in enumerate(data["annotations"]):
            where = f"{path}: caption {a.get('id', '#' + str(k)) if isinstance(a, dict) else '#' + str(k)}"
            if not isinstance(a, dict) or "image_id" not in a or not isinstance(a.get("caption"), str):
                self.bad(where, "missing key", " (a caption needs image_id and caption)")
                continue
            if not _id(a["image_id"]) or a["image_id"] not in self.images:
                self.bad(where, "caption on a missing image", f" (image_id {a['image_id']!r} is not in {self.path})")
                continue
            refs[a["image_id"]].append(a["caption"])
        self.references = dict(refs)

    # ----------------------------------------------------------------- records
    def describe(self) -> str:
        return self.spec or f"{self.name}:{self.path}"

    def image_ids(self) -> list:
        """The usable images, in file order."""
        return [i for i in self.order if i not in self.bad_images]

    def object_names(self, image_id) -> list[str]:
        """Distinct category names of an image, in annotation order."""
        return list(dict.fromkeys(self.categories[a["category_id"]]["name"] for a in self.anns.get(image_id, [])))

    def _records(self, kind: str):
        if kind == "scene":
            return [(i, None) for i in self.image_ids()]
        if kind == "caption":
            if not self.config.captions:
                raise DataError(f"{self.describe()}: caption items need a captions file "
                                "(option captions=FILE, or the chair format)")
            return [(i, None) for i in self.image_ids() if i in self.references]
        neg = POPE_KINDS[kind]
        if neg not in self._questions:
            self._questions[neg] = self._make_questions(neg)
        return self._questions[neg]

    def _make_questions(self, neg_type: str) -> list:
        """``[(image_id, (question index, target, label))]``, POPE's sampler on this file."""
        ids = self.image_ids()
        objs = {i: self.object_names(i) for i in ids}
        rank = {c["name"]: k for k, c in enumerate(self.categories.values())}
        freq = collections.Counter(o for i in ids for o in objs[i])
        pool = sorted(freq, key=lambda o: rank.get(o, 0))
        popular = sorted(freq, key=lambda o: (-freq[o], rank.get(o, 0)))
        co: dict = collections.defaultdict(collections.Counter)
        for i in ids:
            for a in objs[i]:
                for b in objs[i]:
                    if a != b:
                        co[a][b] += 1
        k = self.config.questions
        out = []
        for pos_i, i in enumerate(ids):
            o = objs[i]
            if len(o) < k:
                continue
            rng = np.random.default_rng([int(self.config.question_seed), pos_i])
            history: list[str] = []
            for q in range(k):
                history.append(o[q])
                out.append((i, (len(out), o[q], "yes")))
                allowed = [x for x in pool if x not in history and x not in o]
                if not allowed:
                    continue  # every category of the file is in this image: no negative to ask
                if neg_type == "popular":
                    order = popular
                elif neg_type == "adversarial":
                    order = sorted(co[o[q]], key=lambda x: (-co[o[q]][x], rank.get(x, 0)))
                else:
                    order = []
                neg = next((x for x in order if x in allowed), None)
                if neg is None:
                    neg = allowed[int(rng.integers(len(allowed)))]
                history.append(neg)
                out.append((i, (len(out), neg, "no")))
        return out

    def _image_and_objects(self, image_id):
        if self._last is not None and self._last[0] == image_id:
            return self._last[1], self._last[2]
        im = self.images[image_id]
        where = f"{self.path}: image {image_id}"
        img = load_rgb(os.path.join(self.image_dir, str(im["file_name"])), where)
        if (img.width, img.height) != (im["width"], im["height"]):
            raise DataError(f"{where}: the file {im['file_name']!r} is {img.width}x{img.height}, the annotations say "
                            f"{im['width']}x{im['height']}")
        objs = []
        for a in self.anns.get(image_id, []):
            cat = self.categories[a["category_id"]]
            x, y, w, h = (float(v) for v in a["bbox"])
            mask = decode_segmentation(a["segmentation"], im["height"], im["width"]) if "segmentation" in a else None
            attrs = {"category_id": a["category_id"], "supercategory": cat.get("supercategory"), "annotation_id": a["id"],
                     "iscrowd": bool(a.get("iscrowd", 0)), "area": a.get("area")}
            if isinstance(a.get("attributes"), dict):
                attrs.update(a["attributes"])
            objs.append(Object(str(cat["name"]), (x, y, x + w, y + h), mask, attrs))
        self._last = (image_id, img, objs)
        return img, objs

    def _load(self, record, kind: str) -> Item:
        image_id, q = record
        img, objs = self._image_and_objects(image_id)
        meta = {"image_id": image_id, "file_name": self.images[image_id]["file_name"]}
        where = f"{self.path}: image {image_id}"
        if kind == "scene":
            return Item(img, None, None, objs, str(image_id), "scene", meta, where)
        if kind == "caption":
            refs = self.references.get(image_id, [])
            return Item(img, self.config.caption_prompt, refs[0] if refs else None, objs, str(image_id), "caption",
                        {**meta, "references": list(refs)}, where)
        qid, target, label = q
        idx = next((k for k, o in enumerate(objs) if o.name == target), None)
        return Item(img, presence_prompt(target), label, objs, f"{image_id}/{qid}", "presence",
                    {**meta, "question_id": qid, "target": target, "neg_type": POPE_KINDS[kind], "candidates": YES_NO,
                     "obj_index": idx}, f"{where}, question {qid}")


class ChairDataset(CocoDataset):
    """``chair:CAPTIONS.json:INSTANCES.json[:IMAGES]``: COCO captions + instances (CHAIR's ground
    truth, Rohrbach et al. 2018); caption items by default (score them with
    :func:`vlinterp.eval.chair_vocab.chair_items`)."""

    name = "chair"
    kinds = ("caption", "scene", *POPE_KINDS)
    positional = ("captions", "annotations", "images")

    @dataclass
    class Config(CocoDataset.Config):
        def validate(self):
            super().validate()
            if not self.captions:
                raise ConfigError("chair: give the captions file (chair:CAPTIONS.json:INSTANCES.json[:IMAGES])")
            if not self.annotations:
                raise ConfigError("chair: give the instances file (chair:CAPTIONS.json:INSTANCES.json[:IMAGES])")


__all__ = ["CocoDataset", "ChairDataset", "presence_prompt", "POPE_KINDS", "YES_NO"]
