"""``folder:DIR``: images in class sub-folders (``DIR/dog/1.jpg``, ``DIR/cat/2.png``), the layout of
torchvision's ``ImageFolder``. Items: ``kind`` ``class``, ``answer`` the sub-folder's name,
``meta["label"]`` its index among the sorted class names, ``meta["candidates"]`` all class names.
A folder of images without sub-folders gives unlabelled image items (``answer`` None). Images
beside class folders have no class: a :class:`~vlinterp.core.errors.DataError` (or skipped).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ...core.items import Item
from .base import Dataset, load_rgb, need_dir

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _images(d: str) -> list[str]:
    return sorted(f for f in os.listdir(d) if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(d, f)))


class FolderDataset(Dataset):
    name = "folder"
    kinds = ("class",)
    positional = ("dir",)
    paths = {"dir": ("dir", "image folder")}

    @dataclass
    class Config:
        dir: str = ""
        on_error: Literal["raise", "skip"] = "raise"
        kind: str | None = None

    def _open(self) -> None:
        self.root = need_dir(self.config.dir, "image folder")
        subdirs = sorted(e for e in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, e)) and not e.startswith("."))
        self.classes = [c for c in subdirs if _images(os.path.join(self.root, c))]
        loose = _images(self.root)
        self.records: list[tuple[str, str | None]] = []
        if self.classes:
            for f in loose:
                self.bad(f"{self.root}: {f}", "image outside the class folders")
            for c in self.classes:
                self.records += [(os.path.join(c, f), c) for f in _images(os.path.join(self.root, c))]
        else:
            self.records = [(f, None) for f in loose]
        if not self.records:
            from ...core.errors import DataError

            raise DataError(f"{self.root}: no images (expected DIR/CLASS/IMAGE or DIR/IMAGE; "
                            f"extensions {', '.join(IMAGE_EXTENSIONS)})")

    def describe(self) -> str:
        return self.spec or f"folder:{self.root}"

    def _records(self, kind: str):
        return self.records

    def _load(self, record, kind: str) -> Item:
        rel, cls = record
        image = load_rgb(os.path.join(self.root, rel), f"{self.root}: {rel}")
        meta = {"path": rel}
        if cls is not None:
            meta.update(label=self.classes.index(cls), candidates=tuple(self.classes))
        return Item(image, None, cls, [], rel, "class", meta, f"{self.root}: {rel}")


__all__ = ["FolderDataset", "IMAGE_EXTENSIONS"]
