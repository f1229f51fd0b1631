"""Renderings of one audit item: the same content as text, as an image, as text drawn into an
image, and mixed (part in the picture, part in words), plus rendered variants that change one
factor at a time (font size, text colour, resolution).

Each :class:`Rendering` is an image (or None) and a prompt. For shapes items the rendered text is the
object list (one per line, as the organism saw rendered words in training) and ``mixed`` splits the
objects between a picture and a sentence; for user items ``rendered`` draws the context and ``mixed``
draws its first half and states the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BASE = ("text", "image", "rendered", "mixed")
DEFAULT_STYLE = {"font_size": 14, "colour": "white-on-black", "resolution": 128}
COLOURS = {"white-on-black": ((255, 255, 255), (0, 0, 0)), "black-on-white": ((0, 0, 0), (255, 255, 255)),
           "yellow-on-blue": ((240, 220, 40), (30, 40, 140))}
FACTORS = {"font_size": (10, 14, 20), "colour": tuple(COLOURS), "resolution": (64, 128, 256)}


@dataclass
class Rendering:
    name: str
    image: object
    prompt: str
    factors: dict = field(default_factory=dict)


def _rendered_text(item) -> str:
    if item.scene is not None:
        from ..data.questions import left_to_right

        return "\n".join(f"{o.colour} {o.shape}" for o in left_to_right(item.scene))
    return item.context


def draw(item, font_size: int = 14, colour: str = "white-on-black", resolution: int = 128):
    """The item's content drawn as text into a ``resolution`` x ``resolution`` RGB image."""
    from ..data.renderings import render_words

    fg, bg = COLOURS[colour]
    return render_words(_rendered_text(item), size=int(resolution), font_size=int(font_size), fg=fg, bg=bg)


def renderings(item, seed: int = 0, factors: bool = True) -> list[Rendering]:
    """``text``, ``image`` (when the item has one), ``rendered``, ``mixed`` and, with ``factors``,
    ``rendered:<factor>=<value>`` for every non-default factor value."""
    q = item.question
    out = [Rendering("text", None, f"{item.context} {q}")]
    if item.image is not None:
        out.append(Rendering("image", item.image, q))
    out.append(Rendering("rendered", draw(item, **DEFAULT_STYLE), q, dict(DEFAULT_STYLE)))
    if item.scene is not None and len(item.scene.objects) >= 2:
        from ..data.renderings import mixed

        img, text = mixed(item.scene, np.random.default_rng([seed, item.scene.index]))
        out.append(Rendering("mixed", img, f"{text} {q}"))
    elif item.scene is None:
        words = item.context.split()
        half = max(1, len(words) // 2)
        from ..data.renderings import render_words

        out.append(Rendering("mixed", render_words(" ".join(words[:half])), f"{' '.join(words[half:])} {q}".strip()))
    if factors:
        for f, values in FACTORS.items():
            for v in values:
                if v == DEFAULT_STYLE[f]:
                    continue
                style = {**DEFAULT_STYLE, f: v}
                out.append(Rendering(f"rendered:{f}={v}", draw(item, **style), q, style))
    return out


__all__ = ["Rendering", "renderings", "draw", "BASE", "FACTORS", "DEFAULT_STYLE"]
