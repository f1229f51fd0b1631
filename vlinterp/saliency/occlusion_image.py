"""Occlusion on the original image, for VLMs whose processor tiles the image or packs its patches.

Where ``pixel_values`` is not one ``[3, H, W]`` crop (LLaVA-NeXT / OneVision tiles, InternVL and
SmolVLM crops with a thumbnail, Qwen's packed patch rows) a window of the ORIGINAL image is
filled with the processor's own mean colour (shifted by ``baseline`` standard deviations, as in
normalised pixel space), the occluded image goes through the processor again, and the explained
scores' drop ``f(x) - f(x_occluded)`` is spread over the window's pixels (mean over the windows
covering a pixel, as captum's ``Occlusion``). One forward pass per window gives every target
(captum would rerun the windows once per target). Pixel attributions ``[n_targets, H, W]`` are
pooled to each image token through its own tile's cell (:func:`~vlinterp.metrics.coverage.position_coverage`).

Window and stride are in cells of the image's first tile (its grid over its box), as for one crop.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.errors import ConfigError, ShapeMismatchError, UnsupportedError
from .targets import Targets, _teacher_force, row_images


def fill_colour(adapter, baseline: float) -> np.ndarray:
    """RGB uint8 ``[3]``: ``mean + baseline * std`` of the processor's normalisation (0: its mean colour)."""
    ip = getattr(adapter.processor, "image_processor", adapter.processor)
    mean = np.asarray(getattr(ip, "image_mean", None) or [0.5] * 3, np.float64)
    std = np.asarray(getattr(ip, "image_std", None) or [0.5] * 3, np.float64)
    return np.clip(np.round((mean + float(baseline) * std) * 255), 0, 255).astype(np.uint8)


def windows(t: Targets, window: int, stride: int, H: int, W: int) -> list[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` windows of ``window`` x ``window`` cells of the image's first tile, moved
    by ``stride`` cells, covering ``[0, H) x [0, W)``."""
    g = t.layout.images[t.image_index]
    rows, cols = g.tiles[0].grid
    bx0, by0, bx1, by1 = g.tiles[0].box
    ch, cw = (by1 - by0) / rows, (bx1 - bx0) / cols
    out = []
    for y in np.arange(0.0, H, stride * ch):
        for x in np.arange(0.0, W, stride * cw):
            y0, x0 = int(round(y)), int(round(x))
            y1, x1 = min(H, int(round(y + window * ch))), min(W, int(round(x + window * cw)))
            if y1 > y0 and x1 > x0:
                out.append((y0, y1, x0, x1))
    return out


def occlude(adapter, t: Targets, window: int, stride: int, baseline, absolute: bool, progress=None) -> np.ndarray:
    """``[n_targets, P]``: occlusion attributions of image ``t.image_index``'s ``P`` tokens."""
    from ..metrics.coverage import position_coverage

    if isinstance(baseline, torch.Tensor):
        raise ConfigError("occlusion on a tiled or packed image takes a number as baseline, not a tensor")
    row, imgs, local = row_images(t.batch, t.image_index)
    if len(imgs) != 1:
        raise UnsupportedError(f"occlusion on a tiled or packed image explains one image per prompt; this prompt has {len(imgs)}")
    img = np.asarray(imgs[0].convert("RGB") if hasattr(imgs[0], "convert") else imgs[0]).copy()
    H, W = img.shape[:2]
    formatted, ids = t.batch.meta["formatted"][row], t.meta["answer_ids"]
    T = t.batch.inputs["input_ids"].shape[1]

    def score(image: np.ndarray) -> np.ndarray:
        b = _teacher_force(adapter, [image], formatted, ids)
        if b.inputs["input_ids"].shape[1] != T:
            raise ShapeMismatchError(f"the occluded image gave {b.inputs['input_ids'].shape[1]} tokens, the image {T}")
        with torch.no_grad():
            return t.select(adapter.run(b).logits).float()[0].cpu().numpy()

    base = score(img)
    colour = fill_colour(adapter, baseline)
    acc = np.zeros((t.n, H, W), np.float64)
    cnt = np.zeros((H, W), np.float64)
    for y0, y1, x0, x1 in windows(t, window, stride, H, W):
        occ = img.copy()
        occ[y0:y1, x0:x1] = colour
        acc[:, y0:y1, x0:x1] += (base - score(occ))[:, None, None]
        cnt[y0:y1, x0:x1] += 1
    attr = acc / np.maximum(cnt, 1)
    if absolute:
        attr = np.abs(attr)
    t.meta["occlusion_space"] = "original image"
    return position_coverage(t.layout, attr, t.image_index)


__all__ = ["occlude", "fill_colour", "windows"]
