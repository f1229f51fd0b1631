"""Alternative renderings of the same scene content, for a modality audit.

* :func:`as_text` states the content in words (for a prompt with no image, or
  with :func:`blank_image`);
* :func:`render_words` draws those words as pixels (text-in-image);
* :func:`mixed` splits the objects between a picture and a sentence.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .questions import left_to_right, objects_phrase
from .shapes import IMAGE_SIZE, Obj, Scene

__all__ = ["as_text", "blank_image", "render_words", "mixed", "render_objects",
           "wrap_text"]


def as_text(scene: Scene) -> str:
    """"the image shows a red circle and a blue square." (left to right)."""
    return f"the image shows {objects_phrase(left_to_right(scene))}."


def blank_image(level: int = 0, size: int = IMAGE_SIZE) -> Image.Image:
    """A uniform gray RGB image."""
    level = int(np.clip(level, 0, 255))
    return Image.new("RGB", (size, size), (level, level, level))


def _font(font_size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=font_size)
    except TypeError:                              # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def wrap_text(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap so that each line fits in ``width`` pixels."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split():
            cand = word if not line else f"{line} {word}"
            if draw.textlength(cand, font=font) <= width or not line:
                line = cand
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return lines


def render_words(text_or_scene: str | Scene, size: int = IMAGE_SIZE, font_size: int = 14,
                 fg: tuple[int, int, int] = (255, 255, 255),
                 bg: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Render text (or a scene's object words, one object per line) as an RGB image.

    Lines are wrapped to fit the width; if the text is too tall, the font is
    shrunk (down to 6 px) until it fits.
    """
    if isinstance(text_or_scene, Scene):
        text = "\n".join(f"{o.colour} {o.shape}" for o in left_to_right(text_or_scene))
    else:
        text = str(text_or_scene)
    img = Image.new("RGB", (size, size), tuple(bg))
    draw = ImageDraw.Draw(img)
    margin = 4
    fs = font_size
    while True:
        font = _font(fs)
        lines = wrap_text(text, font, size - 2 * margin, draw)
        asc, desc = font.getmetrics() if hasattr(font, "getmetrics") else (fs, 0)
        line_h = asc + desc + 2
        if len(lines) * line_h <= size - 2 * margin or fs <= 6:
            break
        fs -= 1
    y = max(margin, (size - len(lines) * line_h) // 2)
    for line in lines:
        w = draw.textlength(line, font=font)
        draw.text((max(margin, (size - w) / 2), y), line, fill=tuple(fg), font=font)
        y += line_h
    return img


def render_objects(scene: Scene, keep: Sequence[int]) -> Image.Image:
    """The scene with only the objects at indices ``keep`` painted."""
    image = np.full_like(scene.image, scene.background)
    for k in keep:
        o: Obj = scene.objects[k]
        image[o.mask] = o.rgb
    return Image.fromarray(image, mode="RGB")


def mixed(scene: Scene, rng: np.random.Generator,
          return_indices: bool = False):
    """Split the objects between the picture and a sentence.

    Returns ``(image, text)`` where the image shows a random non-empty subset
    of the objects and ``text`` states the rest ("the image also has a blue
    square." / "there is nothing else." when the subset is everything, which
    only happens for one-object scenes).  With ``return_indices`` also returns
    the (sorted) indices of the objects shown.
    """
    n = len(scene.objects)
    k = int(rng.integers(1, n)) if n >= 2 else n
    shown = sorted(int(i) for i in rng.permutation(n)[:k])
    rest = [o for i, o in enumerate(left_to_right(scene)) if scene.objects.index(o) not in shown]
    text = (f"the image also has {objects_phrase(rest)}." if rest
            else "there is nothing else.")
    img = render_objects(scene, shown)
    return (img, text, shown) if return_indices else (img, text)
