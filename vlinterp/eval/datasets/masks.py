"""Object masks as COCO stores them: polygons, uncompressed RLE and compressed RLE, decoded by
pycocotools exactly as its ``COCO.annToMask`` does, and checked first so that a bad record is a
:class:`~vlinterp.core.errors.DataError` naming it, never a crash inside the C decoder.

* :func:`check_segmentation` -> ``None`` or why a segmentation cannot be used (``"degenerate polygon
  (2 points)"``), without decoding it.
* :func:`decode_segmentation` -> ``[H, W]`` bool.
* :func:`encode_mask` -> a compressed RLE ``{"size": [H, W], "counts": str}`` (JSON-ready, lossless).
* :func:`mask_polygons` -> polygons tracing a mask's outer outlines (holes are lost).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def polygon_area(poly) -> float:
    """Area of one COCO polygon ``[x0, y0, x1, y1, ...]`` (shoelace)."""
    xs, ys = np.asarray(poly[0::2], float), np.asarray(poly[1::2], float)
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def check_segmentation(segm: Any, height: int, width: int) -> str | None:
    """Why ``segm`` (a COCO ``segmentation`` value) cannot be decoded on an ``height x width``
    image, or ``None`` when it can: polygons need at least 3 points each (an even number of
    finite coordinates) and a non-zero area; RLE needs ``size == [height, width]`` and counts that
    are a string or non-negative integers summing to ``height * width``."""
    if isinstance(segm, list):
        if not segm:
            return "degenerate polygon (no polygon)"
        for k, poly in enumerate(segm):
            if not isinstance(poly, list) or not all(_number(v) for v in poly):
                return f"degenerate polygon (part {k} is not a list of numbers)"
            if len(poly) % 2:
                return f"degenerate polygon (part {k} has an odd number of coordinates, {len(poly)})"
            if len(poly) < 6:
                return f"degenerate polygon (part {k} has {len(poly) // 2} points; needs 3)"
            if polygon_area(poly) <= 0:
                return f"degenerate polygon (part {k} has zero area)"
        return None
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            return f"RLE size must be [height, width], got {size!r}"
        if list(size) != [height, width]:
            return f"RLE size {size} does not match the image ({height}x{width})"
        if isinstance(counts, str):
            return None if counts else "RLE counts are empty"
        if isinstance(counts, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
                return "RLE counts must be non-negative integers"
            if sum(counts) != height * width:
                return f"RLE counts sum to {sum(counts)}, not {height}x{width} = {height * width}"
            return None
        return f"RLE counts must be a string or a list of integers, got {type(counts).__name__}"
    return f"segmentation must be polygons (a list) or RLE (an object), got {type(segm).__name__}"


def to_rle(segm: Any, height: int, width: int) -> dict:
    """pycocotools' compressed RLE of a checked segmentation (polygon parts merged, as
    ``COCO.annToRLE`` does)."""
    from pycocotools import mask as mu

    if isinstance(segm, list):
        return mu.merge(mu.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mu.frPyObjects(segm, height, width)
    return {"size": list(segm["size"]), "counts": segm["counts"].encode("ascii")}


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """``[height, width]`` bool mask of a checked segmentation (same pixels as
    ``COCO.annToMask``)."""
    from pycocotools import mask as mu

    return mu.decode(to_rle(segm, height, width)).astype(bool)


def encode_mask(mask: np.ndarray) -> dict:
    """Compressed RLE of a ``[H, W]`` bool mask: ``{"size": [H, W], "counts": str}`` (lossless)."""
    from pycocotools import mask as mu

    rle = mu.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_area(mask: np.ndarray) -> int:
    return int(np.asarray(mask, bool).sum())


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a ``[H, W]`` bool mask as COCO polygons. pycocotools rasterises them back
    to the same pixels for the shapes world's masks (tested); holes are lost, and pixels that touch
    only at a corner can differ (2 of 200 random blob masks)."""
    import cv2

    m = np.asarray(mask, np.uint8)
    # trace the pixel-corner outline: upsample x2 so a contour point sits on each pixel corner
    contours, _ = cv2.findContours(np.kron(m, np.ones((2, 2), np.uint8)), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        pts = c.reshape(-1, 2).astype(float)
        pts = (pts + 0.5) / 2.0  # corners of the x2 grid back to image coordinates
        poly = [float(v) for v in pts.reshape(-1)]
        if len(poly) >= 6 and polygon_area(poly) > 0:
            out.append(poly)
    return out


__all__ = ["check_segmentation", "decode_segmentation", "encode_mask", "mask_area", "mask_polygons", "polygon_area",
           "to_rle"]
