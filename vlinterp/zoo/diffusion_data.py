"""Data and judging helpers for ``shapes-diffusion``.

* :class:`CaptionPool`: 32x32 (area-downscaled) images of the shapes world with captions
  ``"a {colour} {shape}."``: every object of a training scene is rendered alone on its scene's
  background (``render_objects``), optionally also 2-object renderings captioned
  ``"a {c1} {s1} and a {c2} {s2}."`` (left to right).
* :func:`heuristic_judge`: a colour-threshold + shape-template judge of a generated image
  (``[3, S, S]`` in [0, 1]) -> ``(colour, shape)`` or ``None`` (no object found).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.renderings import render_objects
from ..data.shapes import COLOUR_RGB, COLOURS, IMAGE_SIZE, SHAPES, draw_mask, iter_scenes

__all__ = ["caption", "CaptionPool", "downscale", "heuristic_judge"]


def caption(pairs) -> str:
    return " and ".join(f"a {c} {s}" for c, s in pairs) + "."


def downscale(img: np.ndarray, size: int) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[3, size, size]`` in [-1, 1] (area interpolation)."""
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None] / 127.5 - 1.0
    return F.interpolate(x, size=(size, size), mode="area")[0]


class CaptionPool:
    """``n`` (image, caption) pairs from ``iter_scenes(split, seed)``; ``two_frac`` of them
    2-object renderings. Objects smaller than ``min_size`` px (at 128) are skipped.

    ``x``: ``[n, 3, size, size]`` in [-1, 1]; ``masks``: ``[n, 2, size, size]`` uint8 (area share
    x 255 of caption object 0 / 1; zeros where absent); ``n_obj``: ``[n]`` objects captioned."""

    def __init__(self, n: int, seed: int, size: int = 32, split: str = "train", min_size: int = 16,
                 two_frac: float = 0.0, log=None):
        rng = np.random.default_rng(seed)
        xs, caps, ms = [], [], []
        n_two = int(round(n * two_frac))
        for scene in iter_scenes(split, seed):
            if len(xs) >= n:
                break
            objs = [k for k, o in enumerate(scene.objects) if o.size >= min_size]
            if n_two > 0 and len(objs) >= 2 and rng.random() < 0.5:
                ks = sorted(rng.choice(objs, 2, replace=False).tolist(), key=lambda k: scene.objects[k].bbox[0])
                xs.append(downscale(np.asarray(render_objects(scene, ks)), size))
                caps.append(caption([scene.objects[k].pair for k in ks]))
                ms.append(_masks(scene, ks, size))
                n_two -= 1
                continue
            for k in objs:
                if len(xs) < n:
                    xs.append(downscale(np.asarray(render_objects(scene, [k])), size))
                    caps.append(caption([scene.objects[k].pair]))
                    ms.append(_masks(scene, [k], size))
            if log and scene.index % 1000 == 999:
                log(f"pool {len(xs)}/{n}")
        self.x = torch.stack(xs)
        self.captions = caps
        self.n = len(caps)
        self.masks = torch.stack(ms)
        self.n_obj = torch.tensor([1 + (" and " in c) for c in caps])


def _masks(scene, ks, size: int) -> torch.Tensor:
    """Objects ``ks`` of ``scene`` -> ``[2, size, size]`` uint8 area share x 255 (second zero if one)."""
    m = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE)
    for j, k in enumerate(ks):
        m[j] = torch.from_numpy(scene.objects[k].mask).float()
    return (F.interpolate(m[None], size=(size, size), mode="area")[0] * 255).round().to(torch.uint8)


_TEMPLATES: dict = {}


def _template(shape: str, size: int) -> np.ndarray:
    key = (shape, size)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = draw_mask(shape, 0, 0, size, image_size=size)
    return _TEMPLATES[key]


def heuristic_judge(img: torch.Tensor, thresh: float = 0.25):
    """``img`` ``[3, S, S]`` in [0, 1] -> ``(colour, shape)`` of the largest non-background
    region, or ``None``. Background = median of the border pixels (the world's backgrounds are
    uniform gray); object pixels differ from it by > ``thresh`` in some channel. Colour =
    nearest nominal RGB of the region's median colour; shape = best IoU of the mask (upsampled
    to 128) with each shape drawn in the mask's square box."""
    x = img.float().clamp(0, 1).numpy()                        # [3, S, S]
    S = x.shape[-1]
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    bg = np.median(border, axis=1)[:, None, None]
    mask = np.abs(x - bg).max(0) > thresh
    if mask.sum() < 2:
        return None
    from scipy import ndimage

    lab, k = ndimage.label(mask)
    sizes = ndimage.sum(mask, lab, range(1, k + 1))
    mask = lab == (int(np.argmax(sizes)) + 1)
    rgb = np.median(x[:, mask], axis=1) * 255
    colour = min(COLOURS, key=lambda c: float(((rgb - np.array(COLOUR_RGB[c])) ** 2).sum()))
    f = IMAGE_SIZE // S
    big = np.kron(mask, np.ones((f, f), bool))
    ys, xs_ = np.nonzero(big)
    x0, y0, x1, y1 = xs_.min(), ys.min(), xs_.max() + 1, ys.max() + 1
    side = int(max(x1 - x0, y1 - y0))
    crop = np.zeros((side, side), bool)
    sub = big[y0:y0 + side, x0:x0 + side]
    crop[:sub.shape[0], :sub.shape[1]] = sub

    def iou(shape):
        t = _template(shape, side)
        return (t & crop).sum() / max(1, (t | crop).sum())

    return colour, max(SHAPES, key=iou)
