"""How much of each cell of a patch grid an object covers: ground truth for localisation checks
(tracing, SAE features, prototypes) from items' object masks."""
from __future__ import annotations

import numpy as np


def _overlap_matrix(edges: np.ndarray, n_pixels: int) -> np.ndarray:
    """``[cells, pixels]``: fraction of each cell's extent overlapped by each pixel."""
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_pixels, dtype=np.float64)[None, :]
    inter = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None)
    return inter / (hi - lo)


def mask_coverage(masks, size: tuple[int, int], grid: tuple[int, int] = (4, 4),
                  box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """float32 ``[n_obj, rows, cols]``: fraction of each grid cell covered by each mask.

    ``masks``: ``[n_obj, H, W]`` (bool or float) at image size ``size = (H, W)``; the ``rows x
    cols`` grid tiles ``box = (x0, y0, x1, y1)`` in pixels (default: the whole image; fractional and
    out-of-image boxes are fine, pixels outside the image count as background)."""
    from ..core.errors import ShapeMismatchError

    rows, cols = int(grid[0]), int(grid[1])
    h, w = int(size[0]), int(size[1])
    x0, y0, x1, y1 = (0.0, 0.0, float(w), float(h)) if box is None else map(float, box)
    if not (x1 > x0 and y1 > y0):
        raise ShapeMismatchError(f"empty box {box}")
    wy = _overlap_matrix(np.linspace(y0, y1, rows + 1), h)      # [rows, H]
    wx = _overlap_matrix(np.linspace(x0, x1, cols + 1), w)      # [cols, W]
    if len(masks) == 0:
        return np.zeros((0, rows, cols), dtype=np.float32)
    m = np.stack([np.asarray(x) for x in masks]).astype(np.float64)
    cov = np.einsum("ry,nyx,cx->nrc", wy, m, wx)
    return cov.astype(np.float32)


def item_coverage(item, grid: tuple[int, int], box=None) -> np.ndarray:
    """:func:`mask_coverage` of an :class:`~vlinterp.core.items.Item`'s objects (their masks, or
    boxes filled when they have none)."""
    return mask_coverage([o.box_mask(item.size) for o in item.objects], item.size, grid, box)


def position_coverage(layout, masks, image_index: int = 0) -> np.ndarray:
    """float32 ``[n_obj, P]``: for each of image ``image_index``'s ``P`` patch positions
    (``layout.image_positions`` order) the share of its cell that each mask covers, the cell taken
    in the position's own tile: that tile's grid laid over that tile's box (LLaVA-NeXT's base and
    high-resolution tiles, InternVL's / SmolVLM's crops and thumbnail, Qwen's merged grid).
    ``masks``: ``[n_obj, H, W]`` at the image's original size. A one-tile image whose box is the
    whole image gives :func:`mask_coverage` of its grid, flattened row-major."""
    g = layout.images[image_index]
    pos = layout.image_positions(image_index).numpy()
    b = g.batch_row
    tiles, rr, cc = layout.tile[b, pos], layout.row[b, pos], layout.col[b, pos]
    out = np.zeros((len(masks), len(pos)), dtype=np.float32)
    if len(masks) == 0:
        return out
    for t in np.unique(tiles):
        if not 0 <= t < len(g.tiles):
            continue
        tile = g.tiles[int(t)]
        rows, cols = tile.grid
        cov = mask_coverage(masks, g.size, tile.grid, tile.box)          # [n_obj, rows, cols]
        sel = (tiles == t) & (rr >= 0) & (cc >= 0) & (rr < rows) & (cc < cols)
        out[:, sel] = cov[:, rr[sel], cc[sel]]
    return out


__all__ = ["mask_coverage", "item_coverage", "position_coverage"]
