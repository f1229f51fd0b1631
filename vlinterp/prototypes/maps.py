"""Prototype similarity maps on the image: the prototype's own (pooled) grid, bilinearly upsampled
into the tile's pixel box."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def pooled_map(head, z_or_feats: torch.Tensor, j: int, from_feats: bool = True) -> torch.Tensor:
    """Similarity of prototype ``j`` over its own pooled grid ``[Rs, Cs]`` for ONE image
    (``feats`` ``[R, C, D]``)."""
    z = head.embed(z_or_feats[None]) if from_feats else z_or_feats[None]
    s = int(head.proto_scale[j])
    zs = head.pooled(z, s)[0]
    d2 = (zs - head.prototypes[j]).pow(2).sum(-1)
    return torch.log((d2 + 1) / (d2 + head.eps))


def heatmap(grid_map, box, size, scale: int = 1, grid=None) -> np.ndarray:
    """``[Rs, Cs]`` map of ``scale x scale`` windows on a ``grid`` ``(R, C)`` -> ``[H, W]`` float32 at
    the image size ``(H, W)``: bilinear between the window centres inside the tile ``box`` (pixels
    outside get the map's minimum)."""
    m = torch.as_tensor(grid_map, dtype=torch.float32)
    H, W = int(size[0]), int(size[1])
    x0, y0, x1, y1 = box
    if scale > 1 and grid is not None:  # window centres span the box minus (s-1)/2 cells per side
        mx, my = (scale - 1) / 2 * (x1 - x0) / grid[1], (scale - 1) / 2 * (y1 - y0) / grid[0]
        x0, y0, x1, y1 = x0 + mx, y0 + my, x1 - mx, y1 - my
    out = np.full((H, W), float(m.min()), np.float32)
    bw, bh = max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0)))
    up = F.interpolate(m[None, None], size=(bh, bw), mode="bilinear", align_corners=False)[0, 0].numpy()
    ox, oy = int(round(x0)), int(round(y0))
    ys, xs = max(0, oy), max(0, ox)
    ye, xe = min(H, oy + bh), min(W, ox + bw)
    if ye > ys and xe > xs:
        out[ys:ye, xs:xe] = up[ys - oy:ye - oy, xs - ox:xe - ox]
    return out


__all__ = ["pooled_map", "heatmap"]
