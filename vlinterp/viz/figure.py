"""An overlay as a figure a reader can take out of context: a title, the explained token, the
overlay and a colour bar saying what the colours mean.

``figure(image, heatmap, title=..., label=...)`` -> ``[H', W', 3]`` uint8 RGB: a title strip on
top (``title``; ``label``, e.g. ``token: "yellow"``), the overlay of :func:`~vlinterp.viz.overlay.overlay`
scaled up by a whole factor (nearest neighbour, so the overlay's pixels are kept exactly) until its
longer side is at least ``min_side``, and on its right a vertical colour bar from the map's minimum
(bottom) to its maximum (top), both values printed. Drawn with PIL's bundled font: no files needed.
"""
from __future__ import annotations

import math

import numpy as np

from .overlay import colorize, overlay

TITLE_H = 44     # pixels of the title strip (two lines)
BAR_W = 14       # colour bar width
BAR_PAD = 10     # gap between the overlay and the bar
LABEL_W = 60     # least room for the bar's numbers
MARGIN = 8


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    a = abs(v)
    return f"{v:.3g}" if a == 0 or 1e-3 <= a < 1e4 else f"{v:.2e}"


def scale_factor(shape: tuple[int, int], min_side: int = 320) -> int:
    """The whole factor an ``(H, W)`` overlay is enlarged by so its longer side reaches ``min_side``."""
    return max(1, math.ceil(min_side / max(1, max(shape))))


def colorbar(colormap: str = "jet", height: int = 256, width: int = BAR_W) -> np.ndarray:
    """``[height, width, 3]`` uint8: the colormap from its low end (bottom) to its high end (top)."""
    ramp = np.linspace(1.0, 0.0, height)[:, None].repeat(width, 1)
    return colorize(ramp, colormap, normalize=False)


def figure(image, heatmap, title: str = "", label: str = "", alpha: float = 0.5, colormap: str = "jet",
           min_side: int = 320) -> np.ndarray:
    """The annotated overlay (see the module doc). ``heatmap`` ``[h, w]`` is min-max normalised for
    the colours; the bar prints its raw minimum and maximum."""
    import cv2
    from PIL import Image, ImageDraw

    ov = overlay(image, heatmap, alpha=alpha, colormap=colormap)
    H, W = ov.shape[:2]
    s = scale_factor((H, W), min_side)
    big = cv2.resize(ov, (W * s, H * s), interpolation=cv2.INTER_NEAREST) if s > 1 else ov
    h = np.asarray(heatmap, np.float64)
    lo, hi = float(h.min()), float(h.max())
    Hs, Ws = big.shape[:2]
    f_title, f_small = _font(15), _font(12)
    texts = (f"max {_fmt(hi)}", f"min {_fmt(lo)}")
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(LABEL_W, 8 + int(max(probe.textlength(t, font=f_small) for t in texts)))
    width = MARGIN + Ws + BAR_PAD + BAR_W + label_w
    height = TITLE_H + Hs + MARGIN
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(Image.fromarray(big), (MARGIN, TITLE_H))
    bar = colorbar(colormap, Hs, BAR_W)
    bx = MARGIN + Ws + BAR_PAD
    canvas.paste(Image.fromarray(bar), (bx, TITLE_H))
    d = ImageDraw.Draw(canvas)
    d.rectangle([bx - 1, TITLE_H - 1, bx + BAR_W, TITLE_H + Hs], outline=(90, 90, 90))
    d.text((MARGIN, 6), _fit(d, title, f_title, width - 2 * MARGIN), fill=(20, 20, 20), font=f_title)
    d.text((MARGIN, 25), _fit(d, label, f_small, width - 2 * MARGIN), fill=(70, 70, 70), font=f_small)
    tx = bx + BAR_W + 4
    d.text((tx, TITLE_H), texts[0], fill=(40, 40, 40), font=f_small)
    d.text((tx, TITLE_H + Hs - 14), texts[1], fill=(40, 40, 40), font=f_small)
    return np.asarray(canvas, np.uint8)


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if not text or draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def overlay_box(shape: tuple[int, int], min_side: int = 320) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the (enlarged) overlay inside :func:`figure`'s output for an image of ``shape``."""
    s = scale_factor(shape, min_side)
    return MARGIN, TITLE_H, MARGIN + shape[1] * s, TITLE_H + shape[0] * s


__all__ = ["figure", "colorbar", "overlay_box", "scale_factor"]
