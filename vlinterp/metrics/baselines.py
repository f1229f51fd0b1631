"""Baseline maps every saliency method must beat: uniform random and a centre prior.

Each takes ``like``: a :class:`~vlinterp.core.result.Result` (the baseline is then a Result
with the same layout, targets and ``scores`` shape, so it goes through the same patch-to-pixel
mapping as the method it is compared with) or an image shape ``(H, W)`` / an ``[H, W]`` array
(the baseline is then an ``[H, W]`` float32 map).
"""
from __future__ import annotations

import numpy as np

from ..core.errors import ArgumentError
from ..core.result import Result


def _patch_centres(res: Result) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Pixel ``(x, y)`` centres of every patch (all tiles, layout order) and the image ``(H, W)``."""
    g = res.layout.images[res.image_index]
    xs, ys = [], []
    for t in g.tiles:
        (rows, cols), (x0, y0, x1, y1) = t.grid, t.box
        cy = y0 + (np.arange(rows) + 0.5) * (y1 - y0) / rows
        cx = x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols
        yy, xx = np.meshgrid(cy, cx, indexing="ij")
        xs.append(xx.reshape(-1))
        ys.append(yy.reshape(-1))
    return np.concatenate(xs), np.concatenate(ys), g.size


def _shape(like) -> tuple[int, int]:
    if isinstance(like, tuple) and len(like) == 2:
        return int(like[0]), int(like[1])
    a = np.asarray(like)
    if a.ndim < 2:
        raise ArgumentError(f"baseline needs a Result, an (H, W) shape or an [H, W] map, got {like!r:.60}")
    return a.shape[0], a.shape[1]


def _like(res: Result, scores: np.ndarray, name: str) -> Result:
    return Result(name, {"scores": scores.astype(np.float32)}, res.layout, list(res.targets), res.image_index,
                  {"method": name, "baseline": True})


def random_map(like, seed: int = 0):
    """Uniform random scores (per patch for a Result, per pixel for a shape), seeded."""
    rng = np.random.default_rng(seed)
    if isinstance(like, Result):
        return _like(like, rng.random(np.shape(like.scores)), "random")
    return rng.random(_shape(like)).astype(np.float32)


def centre_map(like, sigma: float = 0.25):
    """Isotropic Gaussian centred on the image, ``sigma`` a fraction of ``max(H, W)``
    (per patch at the patch centres for a Result, per pixel for a shape)."""
    if isinstance(like, Result):
        xs, ys, (H, W) = _patch_centres(like)
        d2 = ((xs - W / 2) ** 2 + (ys - H / 2) ** 2) / (sigma * max(H, W)) ** 2
        row = np.exp(-0.5 * d2)
        return _like(like, np.tile(row, (np.shape(like.scores)[0], 1)), "centre")
    H, W = _shape(like)
    yy, xx = np.mgrid[:H, :W]
    d2 = ((xx + 0.5 - W / 2) ** 2 + (yy + 0.5 - H / 2) ** 2) / (sigma * max(H, W)) ** 2
    return np.exp(-0.5 * d2).astype(np.float32)


BASELINES = {"random": random_map, "centre": centre_map}

__all__ = ["random_map", "centre_map", "BASELINES"]
