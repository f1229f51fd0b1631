"""Reading and normalising user images into RGB PIL images.

Accepted: a path, raw bytes, a PIL image, a numpy array (``[H, W]``, ``[H, W, C]``, uint8,
uint16 or float in [0, 1]) or a torch tensor (``[C, H, W]`` float in [0, 1]).
Converted: grayscale, palette, CMYK, 16-bit and RGBA/LA (composited on black).
Refused with :class:`ImageError`: unreadable or non-image files, images smaller than
``MIN_SIDE`` pixels on a side, empty arrays, NaNs. Images larger than ``MAX_SIDE`` on a
side are downscaled (every processor resizes to a few hundred pixels anyway); the size before is
kept in ``img.info["original_size"]`` ``(W, H)``.

:func:`fit_note` says in one line what happened to an image on its way into a model (downscaled
here, cropped by the processor): the layout's tiles show the part of the image the model sees.
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
                    size0 = im.size
                    if max(im.size) > MAX_SIDE:
                        im.draft("RGB", (MAX_SIDE, MAX_SIDE))
                    im.load()
                    img = im.copy()
                if img.size != size0:
                    img.info["original_size"] = size0
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
    size = tuple(img.info.get("original_size", (w, h)))
    img = _to_rgb(img, what)
    if max(size) > max(img.size) or max(w, h) > MAX_SIDE:
        img = img.copy()
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
        img.info["original_size"] = size
    return img


def original_size(source, img: Image.Image | None = None) -> tuple[int, int]:
    """``(H, W)`` of ``source`` as the user has it: the file's own size for a path (PIL reads only
    the header), else the size before :func:`load_image` downscaled it, else ``img``'s size."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with Image.open(source) as im:
                return im.height, im.width
        except Exception:  # noqa: BLE001 - unreadable: fall back to the loaded image
            pass
    img = img if img is not None else source
    if isinstance(img, Image.Image):
        w, h = img.info.get("original_size", img.size)
        return int(h), int(w)
    raise ImageError(f"cannot tell the size of {type(source).__name__}")


def fit_note(img: Image.Image, layout, image_index: int = 0, name: str = "image", min_cover: float = 0.5,
             source=None) -> str | None:
    """One line saying what happened to ``img`` before the model saw it, or ``None`` when nothing
    worth saying did: downscaled on loading (``MAX_SIDE``), and/or only a part of it covered by the
    model's input (the tiles of image ``image_index`` of ``layout``, in image pixels, cover less
    than ``min_cover`` of it: a processor's centre crop of a long image; the usual crop of a
    4:3 photo to a square, 75 %, is not worth a line)."""
    H0, W0 = original_size(source, img) if source is not None else original_size(img)
    W, H = img.size
    parts = []
    if (W0, H0) != (W, H):
        parts.append(f"was downscaled to {W}x{H} (at most {MAX_SIDE} pixels a side)")
    g = layout.images[image_index]
    boxes = [t.box for t in g.tiles if t.grid[0] * t.grid[1] > 0]
    if boxes:
        x0, y0 = max(0.0, min(b[0] for b in boxes)), max(0.0, min(b[1] for b in boxes))
        x1, y1 = min(float(W), max(b[2] for b in boxes)), min(float(H), max(b[3] for b in boxes))
        cover = max(0.0, x1 - x0) * max(0.0, y1 - y0) / float(W * H)
        if cover < min_cover:
            parts.append(f"the model sees only {round(x1 - x0)}x{round(y1 - y0)} pixels of it at x {round(x0)}..{round(x1)}, "
                         f"y {round(y0)}..{round(y1)} ({100 * cover:.1f}% of the image: the processor crops)")
    if not parts:
        return None
    return f"{name} {W0}x{H0}: " + "; ".join(parts)
