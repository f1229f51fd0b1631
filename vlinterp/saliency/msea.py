"""MSEA: multi-scale ensemble of any saliency method.

The explained image is resized to each scale in ``scales`` (PIL bilinear; the prompt/texts stay
the same), the wrapped method runs on each (the target resolved once at the original scale and
reused, so every scale explains the same answer tokens / class / text), each result is mapped to
the ORIGINAL image size through its own layout (``Result.heatmap``, then bilinear resizing), and
the maps are averaged (``normalize=True``: each divided by its max |value| first).

The Result lives on the original-scale grid: ``scores`` ``[n_targets, n_patches]`` are the mean
of the averaged heat map over each patch's cell of the original-scale layout (each tile's box cut
into ``rows x cols`` cells), ``layout`` is the original-scale run's layout, and
``arrays["heatmap"]`` ``[n_targets, H, W]`` keeps the averaged map itself.

``MSEA(method_instance, scales=...)`` or ``saliency.get("msea")(adapter, method="relevancy",
scales=..., options={...})``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..core.errors import ConfigError
from ..core.layout import ImageGeometry, Tile
from ..core.result import Result
from .base import SaliencyMethod, build_config
from .targets import prepare_like, row_images


def at_original_size(layout, image_index: int, size: tuple[int, int]):
    """A copy of ``layout`` whose image ``image_index`` is the same image resized to ``size``
    ``(H, W)``: tile boxes scaled, so ``to_heatmap`` maps straight to the original pixels."""
    g = layout.images[image_index]
    fy, fx = size[0] / g.size[0], size[1] / g.size[1]
    out = copy.copy(layout)
    out.images = list(layout.images)
    out.images[image_index] = ImageGeometry(g.batch_row, tuple(size), [
        Tile(t.grid, (t.box[0] * fx, t.box[1] * fy, t.box[2] * fx, t.box[3] * fy), t.name) for t in g.tiles])
    return out


def cell_means(hm: np.ndarray, layout, image_index: int) -> np.ndarray:
    """Mean of ``hm`` ``[H, W]`` over each patch cell of image ``image_index`` (all tiles,
    :meth:`TokenLayout.image_positions` order); cells outside the image score 0."""
    g = layout.images[image_index]
    H, W = hm.shape
    out = []
    for tile in g.tiles:
        rows, cols = tile.grid
        x0, y0, x1, y1 = tile.box
        ys, xs = np.linspace(y0, y1, rows + 1), np.linspace(x0, x1, cols + 1)
        for r in range(rows):
            a, b = int(np.clip(np.floor(ys[r]), 0, H)), int(np.clip(np.ceil(ys[r + 1]), 0, H))
            for c in range(cols):
                u, v = int(np.clip(np.floor(xs[c]), 0, W)), int(np.clip(np.ceil(xs[c + 1]), 0, W))
                out.append(float(hm[a:b, u:v].mean()) if b > a and v > u else 0.0)
    return np.asarray(out, np.float32)


class MSEA:
    name = "msea"
    kinds = ("vlm", "vit", "clip")

    @dataclass
    class Config:
        """``scales``: resize factors (> 0); ``normalize``: divide each scale's map by its max |value|;
        ``method`` / ``options``: the wrapped method when MSEA is built on an adapter."""

        scales: tuple[float, ...] = (0.75, 1.0, 1.25)
        normalize: bool = False
        method: str = "relevancy"
        options: dict | None = None

        def validate(self) -> None:
            if not self.scales or any(not s > 0 for s in self.scales):
                raise ConfigError(f"scales must be positive numbers, got {self.scales}")
            if self.method == "msea":
                raise ConfigError("method: msea cannot wrap itself")
            if self.options is not None and not isinstance(self.options, dict):
                raise ConfigError(f"options must be a dict of the wrapped method's options, got {self.options!r}")

    def __init__(self, wrapped, /, config=None, **opts):
        c = build_config(type(self), config, opts)
        if isinstance(wrapped, SaliencyMethod):
            method = wrapped
        else:  # registry form: MSEA(adapter, method="name", options={...})
            from . import create

            method = create(c.method, wrapped, **(c.options or {}))
        self.config, self.inner = c, method
        self.scales, self.normalize = tuple(float(s) for s in c.scales), bool(c.normalize)
        self.adapter = method.adapter
        self.kinds = method.kinds

    def attribute(self, batch, target=None, image_index: int = 0) -> Result:
        base = self.inner.attribute(batch, target, image_index)
        row, images, local = row_images(batch, image_index)
        H, W = base.layout.images[base.image_index].size
        maps = []
        for s in self.scales:
            if s == 1.0:
                res = base
            else:
                scaled = [im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR) for im in images]
                res = self.inner.attribute(prepare_like(self.adapter, batch, scaled, row), base.meta["target"], local)
            lay = at_original_size(res.layout, res.image_index, (H, W))
            hm = np.stack([lay.to_heatmap(res.scores[k], res.image_index) for k in range(len(res.targets))])
            if self.normalize:
                hm = hm / np.maximum(np.abs(hm).reshape(len(hm), -1).max(1), 1e-12)[:, None, None]
            maps.append(hm)
        avg = np.mean(maps, 0).astype(np.float32)
        scores = np.stack([cell_means(m, base.layout, base.image_index) for m in avg])
        meta = dict(base.meta, method="msea", inner=self.inner.name, scales=list(self.scales), normalize=self.normalize)
        return Result("msea", {"scores": scores, "heatmap": avg}, base.layout, list(base.targets), base.image_index, meta)

    def __repr__(self) -> str:
        return f"<MSEA of {self.inner!r} scales={self.scales}>"
