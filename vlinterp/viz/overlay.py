"""Heat maps over images: OpenCV colormaps, PNG written atomically, data URIs for HTML.

``overlay(image, heatmap)`` -> ``[H, W, 3]`` uint8 RGB: the heat map (min-max normalised,
resized to the image if needed) coloured with an OpenCV colormap (``cv2.COLORMAP_JET`` by
default) and alpha-blended over the image.
"""
from __future__ import annotations

import base64

import numpy as np

from ..core.errors import ArgumentError, NaNError, OutputError, ShapeMismatchError
from ..core.io import write_bytes

COLORMAPS = {"jet": "COLORMAP_JET", "turbo": "COLORMAP_TURBO", "inferno": "COLORMAP_INFERNO",
             "viridis": "COLORMAP_VIRIDIS", "hot": "COLORMAP_HOT", "magma": "COLORMAP_MAGMA"}


def _rgb(image) -> np.ndarray:
    from ..core.images import load_image

    return np.asarray(load_image(image), np.uint8)


def colorize(heatmap, colormap: str | int = "jet", normalize: bool = True) -> np.ndarray:
    """``[H, W]`` map -> ``[H, W, 3]`` uint8 RGB through an OpenCV colormap."""
    import cv2

    h = np.asarray(heatmap, np.float64)
    if h.ndim != 2:
        raise ShapeMismatchError(f"heatmap must be [H, W], got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise NaNError("heatmap contains NaN or Inf")
    if normalize:
        lo, hi = h.min(), h.max()
        h = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
    u8 = (np.clip(h, 0, 1) * 255).round().astype(np.uint8)
    cm = getattr(cv2, COLORMAPS.get(colormap, ""), None) if isinstance(colormap, str) else int(colormap)
    if cm is None:
        raise ArgumentError(f"unknown colormap {colormap!r}; known: {', '.join(COLORMAPS)}")
    return cv2.cvtColor(cv2.applyColorMap(u8, cm), cv2.COLOR_BGR2RGB)


def overlay(image, heatmap=None, alpha: float = 0.5, colormap: str | int = "jet", normalize: bool = True) -> np.ndarray:
    """Blend the coloured ``heatmap`` over ``image`` (path/PIL/array): ``[H, W, 3]`` uint8 RGB.
    A heat map of another size is resized (bilinear) to the image. ``overlay(explanation)``: the
    answer map of a :class:`~vlinterp.saliency.explanation.Explanation` over its image."""
    import cv2

    if heatmap is None and hasattr(image, "answer_map"):
        image, heatmap = image.image, image.answer_map

    img = _rgb(image)
    h = np.asarray(heatmap, np.float32)
    if h.shape != img.shape[:2]:
        h = cv2.resize(h, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    col = colorize(h, colormap, normalize)
    return np.clip((1 - alpha) * img.astype(np.float32) + alpha * col.astype(np.float32), 0, 255).round().astype(np.uint8)


def png_bytes(rgb) -> bytes:
    """PNG encoding of an ``[H, W, 3]`` uint8 RGB (or ``[H, W]`` gray) array."""
    import cv2

    a = np.asarray(rgb, np.uint8)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(a, cv2.COLOR_RGB2BGR) if a.ndim == 3 else a)
    if not ok:
        raise OutputError(f"OpenCV could not encode an image of shape {a.shape} as PNG")
    return buf.tobytes()


def data_uri(rgb) -> str:
    """``data:image/png;base64,...`` of an RGB array (for self-contained HTML)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")


# the name viz has used: :func:`vlinterp.core.io.write_bytes` (atomic; never over a file vlinterp did not write)
write_bytes_atomic = write_bytes


def save_png(path, rgb) -> str:
    """Write an RGB array as PNG, atomically."""
    return write_bytes(path, png_bytes(rgb))


def save_overlay(path, image, heatmap, **kw) -> str:
    """``overlay(image, heatmap, **kw)`` written to ``path`` as PNG, atomically."""
    return save_png(path, overlay(image, heatmap, **kw))


__all__ = ["COLORMAPS", "colorize", "overlay", "png_bytes", "data_uri", "save_png", "save_overlay", "write_bytes_atomic"]
