"""Frozen patch-token features of any adapter site, arranged on the image's patch grid.

Works for every stream with an image grid in its layout: ViT and CLIP vision blocks, the LLaVA
vision tower (``vision.blocks.{i}.resid``). Only the base tile of each image is used.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import UnknownSiteError, UnsupportedError


@dataclass
class PatchFeatures:
    """``feats`` ``[n, R, C, D]`` float32; ``grid`` ``(R, C)``; ``boxes[i]`` the base tile's box
    ``(x0, y0, x1, y1)`` in image ``i``'s original pixels; ``sizes[i]`` its ``(H, W)``."""

    feats: torch.Tensor
    grid: tuple[int, int]
    boxes: list
    sizes: list


def fingerprint(adapter) -> str:
    """Short hash of the model's parameters (names, shapes, a sample of values): heads remember it
    and refuse a different backbone."""
    h = hashlib.sha256()
    for name, p in adapter.model.named_parameters():
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _prepare(adapter, images):
    if adapter.kind == "vlm":
        return adapter.prepare(images=images, text=["describe the image."] * len(images))
    return adapter.prepare(images=images)


@torch.no_grad()
def patch_features(adapter, images, site: str, batch_size: int = 64, noise: float = 0.0, seed: int = 0,
                   progress: bool = False) -> PatchFeatures:
    """Features at ``site`` for PIL ``images``; ``noise`` > 0 adds N(0, noise) to the model's
    (normalised) pixel input first, seeded by ``seed``."""
    from tqdm.auto import tqdm

    if site not in adapter.site_table:
        raise UnknownSiteError(site, list(adapter.site_table))
    stream = adapter.site_table[site].stream
    g = torch.Generator().manual_seed(seed)
    out, boxes, sizes, grid = [], [], [], None
    for i in tqdm(range(0, len(images), batch_size), desc=f"prototypes: patch features at {site}", disable=not progress):
        chunk = list(images[i:i + batch_size])
        b = _prepare(adapter, chunk)
        if stream not in b.layouts:
            raise UnsupportedError(f"site {site!r} is in stream {stream!r}, which has no image layout in this model's batches")
        if noise > 0:
            pv = b.inputs["pixel_values"]
            b = b.replace_inputs(pixel_values=pv + noise * torch.randn(pv.shape, generator=g).to(pv.dtype))
        lay = b.layouts[stream]
        x = adapter.run(b, capture=[site]).cache[site].float().cpu()
        for k in range(len(chunk)):
            R, C = lay.grid(k)
            if grid is None:
                grid = (R, C)
            elif grid != (R, C):
                raise UnsupportedError(f"images give different patch grids ({grid} vs {(R, C)}); resize them to one size")
            geo = lay.images[k]
            out.append(x[geo.batch_row, lay.image_positions(k, tile=0)].reshape(R, C, -1))
            boxes.append(tuple(geo.tiles[0].box))
            sizes.append(tuple(geo.size))
    if not out:
        from ..core.errors import ShapeMismatchError

        raise ShapeMismatchError("no images given")
    return PatchFeatures(torch.stack(out), grid, boxes, sizes)


def cell_box(box, grid, r: int, c: int, scale: int = 1) -> tuple[float, float, float, float]:
    """Pixel box of window ``(r, c)`` (``scale x scale`` base cells from ``(r, c)``) inside the tile ``box``."""
    x0, y0, x1, y1 = box
    R, C = grid
    cw, ch = (x1 - x0) / C, (y1 - y0) / R
    return (x0 + c * cw, y0 + r * ch, x0 + min(C, c + scale) * cw, y0 + min(R, r + scale) * ch)


def crop(image, box, size: int = 48) -> np.ndarray:
    """uint8 ``[size, size, 3]`` crop of a PIL image (box clipped to the image)."""
    x0, y0, x1, y1 = box
    W, H = image.size
    b = (max(0, int(round(x0))), max(0, int(round(y0))), min(W, max(int(round(x1)), int(round(x0)) + 1)), min(H, max(int(round(y1)), int(round(y0)) + 1)))
    return np.asarray(image.convert("RGB").crop(b).resize((size, size)), dtype=np.uint8)


__all__ = ["PatchFeatures", "patch_features", "fingerprint", "cell_box", "crop"]
