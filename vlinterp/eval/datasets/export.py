"""Write items in the standard formats, so that reading them back gives the same items.

:func:`export_shapes` writes a shapes-world split (every item kind of
:data:`vlinterp.eval.shapes.ITEM_KINDS`) into an output folder:

* ``coco``: ``images/*.png`` + ``annotations/instances_{split}.json`` (categories = the 24
  colour-shape pairs, supercategory the shape; each annotation's ``attributes`` keep colour, shape
  and rgb; masks as compressed RLE, lossless, or ``masks="polygon"``: traced outer outlines, which
  pycocotools rasterises back to the same pixels for hole-free masks like the shapes world's, holes
  lost) + ``annotations/captions_{split}.json``. Read back with ``coco:`` (scenes, captions).
* ``pope``: ``images/*.png`` + ``{split}_pope_{random,popular,adversarial}.json`` in the POPE
  repository's line format + ``instances.json`` (the objects of every image, so POPE items keep
  their boxes and masks). Read back with ``pope:FILE:IMAGES:instances=...``.
* ``jsonl``: ``images/*.png`` + ``items.jsonl`` (one line per item of every kind, ``subset`` the
  kind). Read back with ``jsonl:``.
* ``hf``: a ``DatasetDict`` (one split, named like the shapes split) written by ``save_to_disk``
  (images embedded as PNG, objects with RLE masks, ``attrs`` / ``meta`` as JSON text). Read back
  with ``hf:``.

Images are PNG (lossless), one file per scene, shared by every item on it.
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable

from ...core.errors import DataError
from ...core.io import output_dir
from ...core.items import Item
from .base import jsonable
from .masks import encode_mask, mask_area, mask_polygons

FORMATS = ("coco", "pope", "jsonl", "hf")
MASKS = ("rle", "polygon")
NEG_TYPES = ("random", "popular", "adversarial")


def image_name(item: Item) -> str:
    """A file name for an item's image, from its id (``test/11/3`` -> ``test_11_0000003.png``)."""
    parts = str(item.id).split("/")
    if len(parts) == 3 and parts[2].isdigit():
        return f"{parts[0]}_{parts[1]}_{int(parts[2]):07d}.png"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(item.id)).strip("._") + ".png"


class _Images:
    """Writes each distinct image once under ``root/images``; checks that two items sharing a name
    share the pixels."""

    def __init__(self, root: str):
        self.dir = os.path.join(root, "images")
        os.makedirs(self.dir, exist_ok=True)
        self.written: dict[str, bytes] = {}

    def __call__(self, item: Item) -> str:
        name = image_name(item)
        data = item.image.tobytes() + repr(item.image.size).encode()
        if name in self.written:
            if self.written[name] != data:
                raise DataError(f"two items named {item.id!r} have different images")
        else:
            item.image.save(os.path.join(self.dir, name), format="PNG")
            self.written[name] = data
        return f"images/{name}"


def coco_instances(items: list[Item], file_names: list[str], categories: list[tuple[str, str]],
                   masks: str = "rle") -> dict:
    """A COCO instances dict of image ``items`` (their objects): ``categories`` = ``[(name,
    supercategory)]`` in id order (ids from 1); an object whose name is not among them is a
    :class:`DataError`."""
    cat_id = {name: k + 1 for k, (name, _) in enumerate(categories)}
    images, anns = [], []
    for k, (it, fn) in enumerate(zip(items, file_names)):
        images.append({"id": k + 1, "file_name": os.path.basename(fn), "width": it.image.width, "height": it.image.height})
        for o in it.objects:
            if o.name not in cat_id:
                raise DataError(f"item {it.id}: object {o.name!r} is not a category ({', '.join(cat_id)})")
            x0, y0, x1, y1 = o.box if o.box is not None else (0, 0, 0, 0)
            m = o.box_mask(it.size)
            segm = encode_mask(m) if masks == "rle" else mask_polygons(m)
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": cat_id[o.name],
                         "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "area": mask_area(m),
                         "iscrowd": 0, "segmentation": segm, "attributes": jsonable(o.attrs)})
    return {"info": {"description": "exported by vlinterp"}, "images": images, "annotations": anns,
            "categories": [{"id": k + 1, "name": n, "supercategory": s} for k, (n, s) in enumerate(categories)]}


def item_record(item: Item, image: str | None, subset: str | None = None) -> dict:
    """One item as a JSON-lines record (``jsonl:`` reads it back as the same item)."""
    return {"id": item.id, "subset": subset, "kind": item.kind, "image": image, "prompt": item.prompt,
            "answer": item.answer,
            "objects": [{"name": o.name, "box": None if o.box is None else [float(v) for v in o.box],
                         "mask": None if o.mask is None else encode_mask(o.mask), "attrs": jsonable(o.attrs)}
                        for o in item.objects],
            "meta": jsonable(item.meta)}


def _write_json(path: str, obj, lines: bool = False) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if lines:
            f.writelines(json.dumps(r) + "\n" for r in obj)
        else:
            json.dump(obj, f)


def _progress(total: int, desc: str, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not show, unit="item")


def export_coco(root: str, kinds: dict[str, list[Item]], categories, split: str, masks: str, bar) -> dict:
    imgs = _Images(root)
    scenes = kinds["scene"]
    names = [imgs(it) for it in scenes]
    bar.update(len(scenes))
    inst = os.path.join(root, "annotations", f"instances_{split}.json")
    _write_json(inst, coco_instances(scenes, names, categories, masks))
    caps = os.path.join(root, "annotations", f"captions_{split}.json")
    by_name = {n: k + 1 for k, n in enumerate(names)}
    cap_anns = []
    for it in kinds.get("caption", []):
        n = imgs(it)
        cap_anns.append({"id": len(cap_anns) + 1, "image_id": by_name[n], "caption": it.answer})
    bar.update(len(kinds.get("caption", [])))
    _write_json(caps, {"images": [{"id": k + 1, "file_name": os.path.basename(n)} for k, n in enumerate(names)],
                       "annotations": cap_anns})
    return {"files": [inst, caps], "images": len(imgs.written),
            "read": [f"coco:{{out}}/annotations/instances_{split}.json:{{out}}/images"
                     f":captions={{out}}/annotations/captions_{split}.json"]}


def export_pope(root: str, kinds: dict[str, list[Item]], categories, split: str, masks: str, bar) -> dict:
    imgs = _Images(root)
    files, seen, pictured = [], {}, []
    for neg in NEG_TYPES:
        lines = []
        for k, it in enumerate(kinds[f"pope-{neg}"]):
            n = imgs(it)
            if n not in seen:
                seen[n] = len(seen) + 1
                pictured.append((it, n))
            lines.append({"question_id": k, "image": os.path.basename(n), "image_id": seen[n], "text": it.prompt,
                          "label": it.answer})
            bar.update(1)
        path = os.path.join(root, f"{split}_pope_{neg}.json")
        _write_json(path, lines, lines=True)
        files.append(path)
    inst = os.path.join(root, "instances.json")
    _write_json(inst, coco_instances([it for it, _ in pictured], [n for _, n in pictured], categories, masks))
    return {"files": [*files, inst], "images": len(imgs.written),
            "read": [f"pope:{{out}}/{split}_pope_{neg}.json:{{out}}/images:instances={{out}}/instances.json"
                     for neg in NEG_TYPES]}


def export_jsonl(root: str, kinds: dict[str, list[Item]], categories, split: str, masks: str, bar) -> dict:
    imgs = _Images(root)
    lines = []
    for kind, items in kinds.items():
        for it in items:
            lines.append(item_record(it, imgs(it) if it.image is not None else None, kind))
            bar.update(1)
    path = os.path.join(root, "items.jsonl")
    _write_json(path, lines, lines=True)
    return {"files": [path], "images": len(imgs.written), "read": ["jsonl:{out}/items.jsonl"]}


def export_hf(root: str, kinds: dict[str, list[Item]], categories, split: str, masks: str, bar) -> dict:
    from .hf import quiet_datasets

    with quiet_datasets() as datasets:
        return _write_hf(datasets, root, kinds, split, bar)


def _write_hf(datasets, root: str, kinds: dict[str, list[Item]], split: str, bar) -> dict:
    mask_t = {"size": datasets.List(datasets.Value("int64")), "counts": datasets.Value("string")}
    feats = datasets.Features({
        "id": datasets.Value("string"), "subset": datasets.Value("string"), "kind": datasets.Value("string"),
        "image": datasets.Image(), "prompt": datasets.Value("string"), "answer": datasets.Value("string"),
        "objects": datasets.List({"name": datasets.Value("string"), "box": datasets.List(datasets.Value("float64")),
                                  "mask": mask_t, "attrs": datasets.Value("string")}),
        "meta": datasets.Value("string")})
    cols: dict[str, list] = {k: [] for k in feats}
    for kind, items in kinds.items():
        for it in items:
            r = item_record(it, None, kind)
            for o in r["objects"]:
                o["attrs"] = json.dumps(o["attrs"])
            r["meta"] = json.dumps(r["meta"])
            r["image"] = it.image
            for k in feats:
                cols[k].append(r[k])
            bar.update(1)
    ds = datasets.Dataset.from_dict(cols, features=feats)
    datasets.DatasetDict({split: ds}).save_to_disk(root)
    n_images = len({image_name(it) for items in kinds.values() for it in items if it.image is not None})
    return {"files": [os.path.join(root, "dataset_dict.json")], "images": n_images, "read": [f"hf:{{out}}:{split}"]}


WRITERS: dict[str, Callable] = {"coco": export_coco, "pope": export_pope, "jsonl": export_jsonl, "hf": export_hf}


def shapes_kinds(split: str, n: int, seed: int) -> dict[str, list[Item]]:
    """Every item kind of ``n`` scenes of a shapes split (what the exporters write)."""
    from .. import shapes as world

    return {kind: fn(split, n, seed) for kind, fn in world.ITEM_KINDS.items()}


def shapes_categories() -> list[tuple[str, str]]:
    """The 24 colour-shape pairs as COCO categories ``(name, supercategory = shape)``."""
    from ...data.shapes import PAIRS

    return [(f"{c} {s}", s) for c, s in PAIRS]


def export_shapes(out: str, fmt: str, split: str = "test", n: int = 64, seed: int = 0, masks: str = "rle",
                  progress: bool = False) -> dict:
    """Write ``n`` scenes of shapes split ``split`` (``seed``) in format ``fmt`` into the output
    folder ``out`` (published atomically; see :func:`vlinterp.core.io.output_dir`). Returns
    ``{"files", "images", "read": [dataset specs that read it back]}``."""
    if fmt not in WRITERS:
        from ...core.errors import UnknownNameError

        raise UnknownNameError("export format", fmt, list(WRITERS))
    if masks not in MASKS:
        from ...core.errors import ConfigError

        raise ConfigError(f"masks must be one of {', '.join(MASKS)}, got {masks!r}")
    kinds = shapes_kinds(split, n, seed)
    if fmt == "coco":
        kinds = {k: kinds[k] for k in ("scene", "caption")}
    elif fmt == "pope":
        kinds = {k: v for k, v in kinds.items() if k.startswith("pope-")}
    out_abs = os.path.abspath(out)
    with _progress(sum(len(v) for v in kinds.values()), f"exporting shapes {split} as {fmt}", progress) as bar:
        with output_dir(out) as tmp:
            res = WRITERS[fmt](tmp, kinds, shapes_categories(), split, masks, bar)
    res["files"] = [os.path.join(out_abs, os.path.relpath(f, tmp)) for f in res["files"]]
    res["read"] = [r.format(out=out_abs) for r in res["read"]]
    res["items"] = {k: len(v) for k, v in kinds.items()}
    return res


__all__ = ["export_shapes", "coco_instances", "item_record", "image_name", "shapes_kinds", "shapes_categories", "FORMATS",
           "MASKS", "WRITERS"]
