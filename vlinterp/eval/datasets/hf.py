"""``hf:PATH[:SPLIT]``: a local Hugging Face ``datasets`` dataset (nothing is downloaded).

``PATH`` is a folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``: name the
split when there are several), a ``.parquet`` file or a folder of them, or an ``imagefolder``
(images in class sub-folders, optionally a ``metadata.jsonl``). The image is the column of type
``Image`` (else a column named ``image``); a dataset without one is a
:class:`~vlinterp.core.errors.DataError`. The prompt is ``prompt`` / ``question`` / ``text``, the
answer ``answer`` / ``label`` / ``target`` (a ``ClassLabel`` gives its name); ``objects`` is either
vlinterp's list of ``{name, box, mask, attrs}`` (what ``vlinterp data export --format hf`` writes)
or the Hub's detection layout ``{bbox: [[x, y, w, h]...], category: [...]}``. Kinds: as JSON lines
(``subset`` / ``kind`` columns; see :mod:`.jsonl`). Parquet and imagefolder data are converted into
a temporary Arrow cache (removed at exit); ``save_to_disk`` folders are memory-mapped.
"""
from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Literal

from ...core.errors import DataError, UsageError
from ...core.items import Item
from .base import Dataset
from .jsonl import ANSWER_KEYS, PROMPT_KEYS, object_error, record_item, select, tag_kinds

IMAGE_NAMES = ("image", "img", "picture", "photo")
_CACHE: list[str] = []


def _cache_dir() -> str:
    if not _CACHE:
        _CACHE.append(tempfile.mkdtemp(prefix="vlinterp-hf-"))
        atexit.register(shutil.rmtree, _CACHE[0], True)
    return _CACHE[0]


@contextlib.contextmanager
def quiet_datasets():
    """``datasets`` with its logging at errors and its progress bars off for the block (restored)."""
    import datasets

    datasets.logging.set_verbosity_error()
    was_off = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        yield datasets
    finally:
        if not was_off:
            datasets.utils.enable_progress_bars()


def _read_local(datasets, path: str, parquet: list[str]):
    if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json")):
        return datasets.load_from_disk(path)
    if parquet:
        return datasets.load_dataset("parquet", data_files=parquet, cache_dir=_cache_dir())
    if os.path.isdir(path):
        return datasets.load_dataset("imagefolder", data_dir=path, cache_dir=_cache_dir())
    raise DataError(f"{path!r} is not a Hugging Face dataset (a save_to_disk folder, parquet, or an image folder)")


def open_hf(path: str, split: str | None):
    """``(datasets.Dataset, split name)`` of a local path (see the module docstring)."""
    if not os.path.exists(path):
        raise DataError(f"Hugging Face dataset {path!r} does not exist")
    parquet = [path] if path.endswith(".parquet") else sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    try:
        with quiet_datasets() as datasets:
            ds = _read_local(datasets, path, parquet)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - the library's own error, in one line
        first = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{path!r} cannot be read as a Hugging Face dataset: {type(e).__name__}: {first}") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        if split is None:
            if len(names) != 1:
                raise DataError(f"{path!r} has splits {', '.join(names)}: name one (hf:{path}:SPLIT)")
            split = names[0]
        if split not in ds:
            raise DataError(f"{path!r} has no split {split!r}; splits: {', '.join(names)}")
        return ds[split], split
    if split is not None and split != (str(ds.split) if ds.split is not None else split):
        raise DataError(f"{path!r} is one dataset (split {ds.split}), not a dict of splits; leave out {split!r}")
    return ds, (str(ds.split) if ds.split is not None else "train")


class HFDataset(Dataset):
    name = "hf"
    positional = ("path", "split")
    paths = {"path": ("any", "Hugging Face dataset")}

    @dataclass
    class Config:
        path: str = ""
        split: str | None = None
        image_column: str | None = None     # default: the Image-typed column
        on_error: Literal["raise", "skip"] = "raise"
        kind: str | None = None

    def _open(self) -> None:
        import datasets

        c = self.config
        self.path = c.path
        self.ds, self.split = open_hf(c.path, c.split)
        feats = self.ds.features
        cols = list(feats)
        col = c.image_column or next((k for k, f in feats.items() if isinstance(f, datasets.Image)), None) \
            or next((k for k in IMAGE_NAMES if k in feats), None)
        where = f"{self.path} (split {self.split})"
        if col is None or col not in feats:
            raise DataError(f"{where}: no image column (columns: {', '.join(cols) or 'none'}); "
                            "vlinterp reads images from a column of type Image or named 'image' (option image_column=NAME)")
        self.image_column = col
        self.class_names = {k: f.names for k, f in feats.items() if isinstance(f, datasets.ClassLabel)}
        det = feats.get("objects")
        self.det_names = None
        if isinstance(det, dict) and "category" in det:
            inner = det["category"]
            inner = getattr(inner, "feature", inner)
            self.det_names = inner.names if isinstance(inner, datasets.ClassLabel) else None
        light = self.ds.remove_columns([col])
        self.records: list[tuple[int, dict]] = []
        for i, row in enumerate(light):
            d = self._normalise(row)
            rec_where = f"{where}: row {i}" + (f" (id {d['id']})" if "id" in d else "")
            why = self._check(d)
            if why:
                self.bad(rec_where, why)
                continue
            self.records.append((i, d))
        self.tags = [(r.get("subset"), r.get("kind")) for _, r in self.records]

    def _normalise(self, row: dict) -> dict:
        """A row as a JSON-lines record (class names for ClassLabels, decoded JSON strings,
        detection objects as vlinterp objects)."""
        d = {}
        for k, v in row.items():
            if k in self.class_names and isinstance(v, int) and 0 <= v < len(self.class_names[k]):
                v = self.class_names[k][v]
            if k == "meta" and isinstance(v, str):
                try:
                    v = json.loads(v)
                except ValueError:
                    v = {"meta": v}
            d[k] = v
        objs = d.get("objects")
        if isinstance(objs, dict) and "bbox" in objs:  # the Hub's detection layout: columns of lists
            cats = objs.get("category") or objs.get("label") or [None] * len(objs["bbox"])
            d["objects"] = [{"name": str(self.det_names[c] if self.det_names and isinstance(c, int) else c),
                             "box": [b[0], b[1], b[0] + b[2], b[1] + b[3]]} for b, c in zip(objs["bbox"], cats)]
        elif isinstance(objs, list):
            out = []
            for o in objs:
                o = dict(o) if isinstance(o, dict) else o
                if isinstance(o, dict):
                    if isinstance(o.get("attrs"), str):
                        o["attrs"] = json.loads(o["attrs"]) if o["attrs"] else {}
                    if o.get("mask") is not None and not o["mask"].get("counts"):
                        o["mask"] = None
                out.append(o)
            d["objects"] = out
        return {k: v for k, v in d.items() if v is not None or k in PROMPT_KEYS + ANSWER_KEYS}

    @staticmethod
    def _check(d: dict) -> str | None:
        objs = d.get("objects")
        if objs is None:
            return None
        if not isinstance(objs, list):
            return "bad objects (must be a list)"
        for k, o in enumerate(objs):
            why = object_error(o)
            if why:
                return f"bad object {k}: {why}"
        return None

    def describe(self) -> str:
        return self.spec or f"hf:{self.path}" + (f":{self.config.split}" if self.config.split else "")

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
        from ...core.errors import ImageError
        from ...core.images import load_image

        i, d = record
        where = f"{self.path} (split {self.split}): row {i}"
        raw = self.ds[i][self.image_column]
        if raw is None:
            raise DataError(f"{where}: no image")
        try:
            image = load_image(raw, name=where)
        except ImageError as e:
            raise DataError(str(e)) from None
        return record_item(d, image, str(d["id"]) if d.get("id") is not None else f"{self.split}:{i}", where)


__all__ = ["HFDataset", "open_hf"]
