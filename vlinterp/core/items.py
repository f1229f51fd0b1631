"""What methods take instead of dataset names: items.

An :class:`Item` is one image (or none) with a prompt, an optional answer and the objects known
to be in the image (name, box, mask). Every dataset reader in :mod:`vlinterp.eval` (the shapes
world, COCO, POPE, JSON lines, Hugging Face datasets, image folders) yields items; every method
(``fit``, probes, tracing groups, saliency benchmarks) consumes them, never a split name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(eq=False)
class Object:
    """An object in an item's image. ``name``: its class / phrase (``"red circle"``, ``"dog"``);
    ``box``: ``(x0, y0, x1, y1)`` in image pixels, end exclusive; ``mask``: ``[H, W]`` bool at the
    image size, or ``None`` (``box_mask()`` then derives one from the box); ``attrs``: anything
    else known (colour, shape, category id, supercategory...)."""

    name: str
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = field(default=None, repr=False)
    attrs: dict[str, Any] = field(default_factory=dict)

    def box_mask(self, size: tuple[int, int]) -> np.ndarray:
        """``[H, W]`` bool: the mask, or the box filled when there is no mask (``size = (H, W)``)."""
        if self.mask is not None:
            return np.asarray(self.mask, bool)
        H, W = size
        m = np.zeros((H, W), bool)
        if self.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in self.box)
            m[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
        return m


@dataclass(eq=False)
class Item:
    """One example. ``image``: an RGB PIL image (or ``None`` for text-only items); ``prompt``: the
    question or instruction (``None`` for image-only models); ``answer``: the expected answer (a
    POPE label, a caption, a class name) or ``None``; ``objects``: ground truth in the image;
    ``id``: a stable identifier (file:line, COCO image id, split/seed/index); ``kind``: what the
    item asks (``presence``, ``colour``, ``count``, ``caption``, ``class``...); ``meta``: the rest
    (negative type, candidates, the source record); ``source``: where it was read (``file:line``,
    ``file: image 3``, ``path (split test): row 5``), for errors about the record ("" when made in
    memory)."""

    image: Any = None
    prompt: str | None = None
    answer: str | None = None
    objects: list[Object] = field(default_factory=list)
    id: str = ""
    kind: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the image, or ``None``."""
        return None if self.image is None else (self.image.height, self.image.width)

    def names(self) -> list[str]:
        """The names of the item's objects."""
        return [o.name for o in self.objects]

    def where(self) -> str:
        """How errors name the item: its ``source``, else ``item {id}``."""
        return self.source or f"item {self.id}"


__all__ = ["Item", "Object"]
