"""Reading and normalising user images into RGB PIL images.

Accepted: a path, raw bytes, a PIL image, a numpy array (``[H, W]``, ``[H, W, C]``, uint8,
uint16 or float in [0, 1]) or a torch tensor (``[C, H, W]`` float in [0, 1]).
Converted: grayscale, palette, CMYK, 16-bit and RGBA/LA (composited on black).
Refused with :class:`ImageError`: unreadable or non-image files, images smaller than
``MIN_SIDE`` pixels on a side, empty arrays, NaNs. Images larger than ``MAX_SIDE`` on a
side are downscaled (every processor resizes to a few hundred pixels anyway).
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image

from .errors import ImageError

MIN_SIDE = 4
MAX_SIDE = 4096


def _from_array(a: np.ndarray, what: str) -> Image.Image:
    if a.size == 0:
        raise ImageError(f"{what}: empty array of shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise ImageError(f"{what}: array contains NaN or Inf")
        a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).astype(np.uint8)
    elif a.dtype == np.uint16 or (a.dtype.kind in "iu" and a.max() > 255):
        a = (a.astype(np.float64) / max(float(a.max()), 1.0) * 255).astype(np.uint8) if a.dtype != np.uint16 else (a >> 8).astype(np.uint8)
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    else:
        a = a.astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(a, "L")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return Image.fromarray(a, "RGB" if a.shape[2] == 3 else "RGBA")
    raise ImageError(f"{what}: array of shape {a.shape} is not [H, W], [H, W, 1|3|4]")


def _to_rgb(img: Image.Image, what: str) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img).astype(np.float64)
        hi = a.max() if a.size else 1.0
        img = Image.fromarray((a / (hi if hi > 0 else 1.0) * 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def load_image(x, name: str = "image") -> Image.Image:
    """Return ``x`` as an RGB PIL image of at least ``MIN_SIDE`` and at most ``MAX_SIDE`` pixels a side."""
    what = name
    if isinstance(x, (str, os.PathLike)):
        what = f"{name} {os.fspath(x)!r}"
        if not os.path.exists(x):
            raise ImageError(f"{what}: no such file")
        if os.path.isdir(x):
            raise ImageError(f"{what}: is a directory, not an image file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(x) as im:
                    if max(im.size) > MAX_SIDE:
                        im.draft("RGB", (MAX_SIDE, MAX_SIDE))
                    im.load()
                    img = im.copy()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ImageError(f"{what}: image too large to decode safely ({e})") from None
        except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
            raise ImageError(f"{what}: cannot read as an image ({type(e).__name__}: {e})") from None
    elif isinstance(x, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(x)) as im:
                im.load()
                img = im.copy()
        except Exception as e:
            raise ImageError(f"{what}: bytes are not a readable image ({type(e).__name__})") from None
    elif isinstance(x, Image.Image):
        img = x
    elif isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        img = _from_array(t.float().numpy() if t.is_floating_point() else t.numpy(), what)
    elif isinstance(x, np.ndarray):
        img = _from_array(x, what)
    else:
        raise ImageError(f"{what}: expected a path, bytes, PIL image, numpy array or tensor, got {type(x).__name__}")
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{what}: {w}x{h} is too small (minimum {MIN_SIDE}x{MIN_SIDE} pixels)")
    img = _to_rgb(img, what)
    if max(w, h) > MAX_SIDE:
        img = img.copy()
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
    return img
