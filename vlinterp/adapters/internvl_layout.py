"""Token layouts of InternVL (``InternVLForConditionalGeneration``), from the processor's settings
and the image processor's own tiling (``GotOcr2ImageProcessor``).

With ``crop_to_patches`` the image is resized (aspect not kept) to ``cols x rows`` tiles of the
tower's size, the arrangement being the image processor's ``get_optimal_tiled_canvas`` within
``min_patches..max_patches``; a thumbnail of the whole image follows when there is more than one
tile. Each tile's ``g x g`` patches (a CLS first in the tower) are pixel-shuffled by
``downsample_ratio`` (0.5: each LM token is a 2x2 block of patches) into ``image_seq_length``
tokens, row-major; one run of ``<IMG_CONTEXT>`` between ``<img>`` and ``</img>`` holds every tile
of the image, tile after tile. Tile ``(r, c)`` covers original pixels
``[c W/cols, (c+1) W/cols) x [r H/rows, (r+1) H/rows)``; the thumbnail the whole image.
"""
from __future__ import annotations

import math

from ..core.errors import ImageTokenMismatchError
from ..core.layout import LayoutBuilder, Tile
from .vlm_layout import Crop, ImageRun, crop_layouts, image_settings, whole


def _grids(adapter) -> tuple[int, int]:
    """``(g, m)``: the tower's patch grid side and the LM grid side after the pixel shuffle."""
    vc = adapter.config.vision_config
    size = vc.image_size[0] if isinstance(vc.image_size, (list, tuple)) else vc.image_size
    patch = vc.patch_size[0] if isinstance(vc.patch_size, (list, tuple)) else vc.patch_size
    g = size // patch
    m = int(g * adapter.config.downsample_ratio)
    n = int(getattr(adapter.processor, "image_seq_length", m * m))
    if m * m != n:
        raise ImageTokenMismatchError(f"the processor writes {n} tokens per tile but the model makes {m}x{m}")
    return g, m


def tiles(adapter, enc, size: tuple[int, int]) -> list[tuple[str, tuple[float, float, float, float]]]:
    """``[(name, box)]`` of the tiles the image processor cuts from an ``(H, W)`` image, in order."""
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    get = image_settings(adapter, enc)
    H, W = size
    hi = int(get("max_patches") or 1)
    if not get("crop_to_patches") or hi <= 1:
        return [("base", whole(size))]
    s = get("size")
    sh, sw = (s["height"], s["width"]) if isinstance(s, dict) else (s.height, s.width)
    cols, rows = get_optimal_tiled_canvas((H, W), (sh, sw), int(get("min_patches") or 1), hi)
    if cols * rows == 1:
        return [("base", whole(size))]
    out = [(f"tile{r}_{c}", (c * W / cols, r * H / rows, (c + 1) * W / cols, (r + 1) * H / rows))
           for r in range(rows) for c in range(cols)]
    return out + [("thumbnail", whole(size))]


def image_run(adapter, enc, k: int, size: tuple[int, int]) -> ImageRun:
    _, m = _grids(adapter)
    ts = tiles(adapter, enc, size)

    def emit(lb: LayoutBuilder, img: int) -> None:
        for t in range(len(ts)):
            lb.image_grid(img, m, m, tile=t)

    return ImageRun([Tile((m, m), box, name) for name, box in ts], len(ts) * m * m, emit,
                    f"{len(ts)} tile(s) of {m}x{m}")


def vision_layouts(adapter, enc, sizes):
    """One row per tile: CLS + ``g x g`` patches in the tower, ``m x m`` after the projector."""
    crops = [Crop(k, box, name) for k, size in enumerate(sizes) for name, box in tiles(adapter, enc, size)]
    px = enc.get("pixel_values")
    if px is not None and px.shape[0] != len(crops):
        raise ImageTokenMismatchError(f"the processor made {px.shape[0]} tiles but the tiling gives {len(crops)}")
    g, m = _grids(adapter)
    return crop_layouts(sizes, crops, (g, g), (m, m), cls=True)


def special_ids(processor) -> tuple[int, ...]:
    """``<img>`` / ``</img>``."""
    return tuple(int(i) for i in (getattr(processor, "start_image_token_id", None), getattr(processor, "end_image_token_id", None))
                 if i is not None)


__all__ = ["image_run", "vision_layouts", "tiles", "special_ids"]
