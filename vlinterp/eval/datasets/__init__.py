"""Every data format vlinterp reads, one reader each, all giving :class:`~vlinterp.core.items.Item`.

``--dataset`` specs read the same on every command: ``FORMAT:PART:PART...[:key=value...]``, the
parts filling the format's fields in order, ``key=value`` setting any field by name::

    shapes[:SPLIT[:N[:SEED]]][:KIND]        the procedural shapes world (vlinterp.eval.shapes)
    coco:INSTANCES.json[:IMAGES]            COCO instances: boxes, polygon / RLE / crowd masks
    chair:CAPTIONS.json:INSTANCES.json[:IMAGES]   COCO captions + instances (CHAIR's ground truth)
    pope:FILE[:IMAGES][:instances=INSTANCES.json] a POPE question file (JSON lines)
    jsonl:FILE[:IMAGES]                     JSON lines of image / prompt / answer / objects
    hf:PATH[:SPLIT]                         a local Hugging Face dataset (save_to_disk, parquet, imagefolder)
    folder:DIR                              images in class sub-folders

A bare existing path works too (``data.jsonl``, ``instances.json``, a folder). Options every file
format takes: ``on_error=skip`` (leave bad records out and count them: :meth:`Dataset.summary`),
``kind=K`` (the item kind: commands then read only that kind) and ``take=N[:take_seed=S]`` (``N``
items of each kind, drawn with ``S``, unless the command's ``--n`` says otherwise).

The API commands call::

    ds = open_dataset(spec)                         # reads and checks; DataError names file + record
    items = ds.items(kind="pope-adversarial", n=args.n, seed=args.seed)
    for item in ds.iter(kind="scene"): ...          # streaming, one image decoded at a time
    ds.size(kind); ds.available_kinds(); ds.summary()   # summary: one line on skipped records, or None

Kinds: ``scene`` (image + objects), ``caption``, ``presence`` / ``pope-random`` / ``pope-popular`` /
``pope-adversarial`` (yes/no questions), ``colour`` / ``colour-all`` / ``count`` (shapes world),
``class`` (image folders), ``all`` (every record of a JSON-lines or HF dataset).
"""
from __future__ import annotations

import json
import os

from ...core.errors import ConfigError, DataError, UnknownNameError
from ...core.registry import Registry
from .base import Dataset, subsample

FORMATS = Registry("dataset format", {
    "shapes": "vlinterp.eval.datasets.shapes:ShapesDataset",
    "coco": "vlinterp.eval.datasets.coco:CocoDataset",
    "chair": "vlinterp.eval.datasets.coco:ChairDataset",
    "pope": "vlinterp.eval.datasets.pope:PopeDataset",
    "jsonl": "vlinterp.eval.datasets.jsonl:JsonlDataset",
    "hf": "vlinterp.eval.datasets.hf:HFDataset",
    "folder": "vlinterp.eval.datasets.folder:FolderDataset",
})

USAGE = ("shapes[:SPLIT[:N[:SEED]]], coco:INSTANCES.json[:IMAGES], chair:CAPTIONS.json:INSTANCES.json[:IMAGES], "
         "pope:FILE[:IMAGES], jsonl:FILE[:IMAGES], hf:PATH[:SPLIT], folder:DIR")


def infer_format(path: str) -> str | None:
    """The format of an existing file or folder given without a ``FORMAT:`` prefix, or None."""
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json")):
            return "hf"
        return "folder"
    if not os.path.isfile(path):
        return None
    low = path.lower()
    if low.endswith(".parquet"):
        return "hf"
    if low.endswith(".jsonl"):
        return "jsonl"
    if low.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                head = f.read(1 << 16).lstrip()
        except (OSError, UnicodeDecodeError):
            return None
        if head.startswith("{") and "\n" in head:
            first = head.split("\n", 1)[0]
            try:
                d = json.loads(first)
            except ValueError:
                d = None
            if isinstance(d, dict) and not {"images", "annotations"} & set(d):  # JSON lines
                return "pope" if {"text", "label", "image"} <= set(d) else "jsonl"
        return "coco"
    return None


def parse_dataset_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"coco:ann.json:imgs:on_error=skip"`` -> ``("coco", {"annotations": "ann.json", "images":
    "imgs", "on_error": "skip"})``; a bare existing path gets its inferred format. An unknown format
    or a missing path: one-line :class:`~vlinterp.core.errors.VlinterpError`."""
    s = str(spec).strip()
    if not s:
        raise ConfigError(f"empty dataset spec; give one of: {USAGE}")
    head, sep, rest = s.partition(":")
    if head not in FORMATS:
        fmt = infer_format(s)
        if fmt is not None:
            return fmt, {FORMATS.get(fmt).positional[0]: s}
        if not sep and (os.sep in s or "." in s):
            raise DataError(f"dataset {s!r}: no such file or folder")
        raise UnknownNameError("dataset format", head, list(FORMATS))
    cls = FORMATS.get(head)
    pos, opts = [], {}
    for part in rest.split(":") if sep else []:
        if "=" in part:
            k, v = part.split("=", 1)
            opts[k.strip().replace("-", "_")] = v.strip()
        else:
            pos.append(part)
    pos, extra = cls.spec_parts(pos)
    for k, v in extra.items():
        opts.setdefault(k, v)
    if len(pos) > len(cls.positional):
        raise ConfigError(f"dataset spec {s!r}: {head} takes at most {len(cls.positional)} parts "
                          f"({':'.join(p.upper() for p in cls.positional)}); use key=value for options")
    for name, value in zip(cls.positional, pos):
        if value != "":
            opts.setdefault(name, value)
    return head, opts


TAKE = ("take", "take_seed")  # options every format takes: items() without n gives take=N of them, drawn with take_seed


def _take(opts: dict, spec: str) -> tuple[int | None, int | None]:
    out = []
    for k in TAKE:
        v = opts.pop(k, None)
        if v is not None:
            try:
                v = int(v)
            except (TypeError, ValueError):
                raise ConfigError(f"dataset spec {spec!r}: {k} must be an integer, got {v!r}") from None
            if k == "take" and v < 1:
                raise ConfigError(f"dataset spec {spec!r}: take must be a positive integer, got {v}")
        out.append(v)
    return out[0], out[1]


def check_spec(spec: str) -> str:
    """Validate a ``--dataset`` spec without reading the data: format, options, types, and that the
    files and folders it names exist (a JSON-lines or POPE file must be text). For argparse
    ``type=``; returns the spec. Problems inside the records are found by :func:`open_dataset`."""
    fmt, opts = parse_dataset_spec(spec)
    _take(opts, spec)
    FORMATS.get(fmt).check_paths(FORMATS.config(fmt, **opts))
    return spec


def open_dataset(spec: str, **options) -> Dataset:
    """Open (read and check) the data a spec names; ``options`` override the spec's."""
    fmt, opts = parse_dataset_spec(spec)
    opts.update({k: v for k, v in options.items() if v is not None})
    take = _take(opts, spec)
    ds = FORMATS.create(fmt, **opts)
    ds.spec = str(spec)
    ds.take, ds.take_seed = take
    return ds


__all__ = ["FORMATS", "Dataset", "open_dataset", "parse_dataset_spec", "check_spec", "infer_format", "subsample", "USAGE"]
