"""The language-model token layout shared by every VLM family, from the actual ``input_ids``.

Each run of the family's image token is one image (in prompt order across the batch); the
family's ``image_run`` says how many positions the run must hold and writes them (patch grid,
CLS, newline tokens...). Everything else is text, special tokens or padding; named spans:
``system`` (text before the first image), ``prompt`` (text after the last image, before the
answer), ``answer`` (teacher-forced answer tokens), ``last`` (the position predicting the first
answer token).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..core.errors import ImageTokenMismatchError
from ..core.layout import LayoutBuilder, Tile, TokenLayout


@dataclass
class ImageRun:
    """The LM positions of one image: ``tiles`` (geometry for heat maps), ``n_tokens`` (the run
    length the model expects), ``emit(lb, image_index)`` writes them; ``describe`` names the grid
    in error messages."""

    tiles: list[Tile]
    n_tokens: int
    emit: Callable[[LayoutBuilder, int], None]
    describe: str = ""


def runs(ids: torch.Tensor, token: int) -> list[tuple[int, int]]:
    """Contiguous runs ``(start, length)`` of ``token`` in a 1-D id tensor."""
    pos = (ids == token).nonzero().flatten().tolist()
    out: list[tuple[int, int]] = []
    for p in pos:
        if out and out[-1][0] + out[-1][1] == p:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((p, 1))
    return out


def lm_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor, image_token_id: int, specials: set[int],
              image_runs: list[ImageRun], image_sizes: list[tuple[int, int]], answer_lens: list[int] | None = None) -> TokenLayout:
    """Layout of the language-model sequence ``[B, T]``.

    ``image_runs[k]``/``image_sizes[k]``: image ``k`` (prompt order across the batch, original
    ``(H, W)``); ``answer_lens``: appended answer tokens per row (teacher forcing), else ``None``.
    Raises :class:`ImageTokenMismatchError` when a run's length is not what the model makes."""
    B, T = input_ids.shape
    lb = LayoutBuilder()
    img = 0
    for b in range(B):
        ids = input_ids[b]
        valid = attention_mask[b].bool()
        n_ans = answer_lens[b] if answer_lens else 0
        last_valid = int(valid.nonzero().max()) if valid.any() else T - 1
        ans_start = last_valid + 1 - n_ans
        p = 0
        for start, length in runs(ids, image_token_id):
            _text_segment(lb, ids, valid, specials, p, start, ans_start, "system" if p == 0 else None)
            if img >= len(image_runs):
                raise ImageTokenMismatchError(f"row {b} has more image placeholder runs than the {len(image_runs)} image(s) given")
            run = image_runs[img]
            if length != run.n_tokens:
                H, W = image_sizes[img]
                raise ImageTokenMismatchError(
                    f"image {img}: the prompt holds {length} image tokens but the model makes {run.n_tokens} features "
                    f"for a {W}x{H} image ({run.describe})"
                )
            lb.add_image(img, image_sizes[img], run.tiles)
            lb.mark(f"image[{img}]", [])
            run.emit(lb, img)
            img += 1
            p = start + length
        _text_segment(lb, ids, valid, specials, p, T, ans_start, "prompt")
        lb.mark("last", [ans_start - 1])
        lb.end_row()
    if img != len(image_runs):
        raise ImageTokenMismatchError(f"{len(image_runs)} image(s) given but the prompts hold {img} image placeholder(s)")
    return lb.build(length=T)


def _text_segment(lb: LayoutBuilder, ids, valid, specials, a: int, z: int, ans_start: int, span: str | None) -> None:
    """Positions ``a..z-1`` of a row: padding, special tokens, or text (in ``span`` before the
    answer, in ``answer`` after)."""
    for q in range(a, z):
        name = "answer" if q >= ans_start else None
        if not bool(valid[q]):
            lb.pad(1)
        elif int(ids[q]) in specials:
            lb.special(1, span=name)
        else:
            lb.text(1, span=name or span)


__all__ = ["ImageRun", "lm_layout", "runs"]
