"""The language-model token layout shared by every VLM family, from the actual ``input_ids``.

Each image is one run of the family's image token, or several runs separated by other tokens when
the processor splits an image into tiles written apart (SmolVLM/Idefics3 tiles between
``<fake_token_around_image><row_r_col_c>`` markers, Gemma 3 pan-and-scan crops); images come in
prompt order across the batch. The family's ``image_run`` says how many positions each run must
hold and writes them (patch grid, CLS, newline tokens...). Everything else is text, special tokens or padding; named spans:
``system`` (text before the first image), ``prompt`` (text after the last image, before the
answer), ``answer`` (teacher-forced answer tokens), ``last`` (the position predicting the first
answer token).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..core.errors import ImageTokenMismatchError
from ..core.layout import LayoutBuilder, Tile, TokenLayout


@dataclass
class ImageRun:
    """The LM positions of one image: ``tiles`` (geometry for heat maps), ``n_tokens`` (the run
    length the model expects), ``emit(lb, image_index)`` writes them; ``describe`` names the grid
    in error messages. An image written as several runs gives their lengths in ``segments``
    (``sum(segments) == n_tokens``) and ``emit(lb, image_index, segment)`` writes one run."""

    tiles: list[Tile]
    n_tokens: int
    emit: Callable[..., None]
    describe: str = ""
    segments: list[int] | None = None


@dataclass
class Crop:
    """One image the vision tower sees (a tile, a crop, a thumbnail, a padded square): the original
    image it comes from, the box of original pixels it covers ``(x0, y0, x1, y1)`` (may reach
    past the image where the processor padded) and a name."""

    image: int
    box: tuple[float, float, float, float]
    name: str = "base"


def whole(size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The box of a whole ``(H, W)`` image."""
    return (0.0, 0.0, float(size[1]), float(size[0]))


def crop_layouts(sizes: list[tuple[int, int]], crops: list[Crop], vision_grid: tuple[int, int],
                 projector_grid: tuple[int, int], cls: bool = False, projector_cls: bool = False) -> dict[str, TokenLayout]:
    """``vision`` and ``projector`` layouts of a tower that sees one crop per row: row ``k`` is
    ``crops[k]`` (image index ``k`` in these streams, its size the original image's, one tile over
    the crop's box, ``images[k].source`` the original image): ``[n_crops, (1 +) rows * cols]``
    (``cls``: a CLS token first)."""
    out = {}
    for stream, grid, has_cls in (("vision", vision_grid, cls), ("projector", projector_grid, projector_cls)):
        lb = LayoutBuilder()
        for k, c in enumerate(crops):
            lb.add_image(k, sizes[c.image], [Tile(tuple(grid), c.box, c.name)], source=c.image)
            if has_cls:
                lb.special(1, image_index=k)
            lb.image_grid(k, grid[0], grid[1])
            lb.end_row()
        out[stream] = lb.build()
    return out


def image_settings(adapter, enc) -> Callable[[str], Any]:
    """``get(name)``: an image-processor setting as the processor applied it to this batch: the
    call's keyword arguments (``prepare(processor_kwargs=...)``) over the processor class's
    defaults (Gemma 3's ``do_pan_and_scan=False``, InternVL's ``crop_to_patches=True``) over the
    image processor's own attributes."""
    proc = adapter.processor
    ip = proc.image_processor
    call = dict(getattr(enc, "call_kwargs", None) or {})
    merged = proc._merge_kwargs(tokenizer_init_kwargs=proc.tokenizer.init_kwargs, **call)["images_kwargs"]

    def get(name: str):
        v = merged.get(name)
        return getattr(ip, name, None) if v is None else v

    return get


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
        seg = 0  # runs of the current image already laid out
        for start, length in runs(ids, image_token_id):
            _text_segment(lb, ids, valid, specials, p, start, ans_start, "system" if p == 0 else None)
            q = start
            while q < start + length:  # adjacent placeholders make one run: split it image by image
                if img >= len(image_runs):
                    raise ImageTokenMismatchError(f"row {b} has more image tokens than the {len(image_runs)} image(s) given make")
                run = image_runs[img]
                segs = run.segments or [run.n_tokens]
                if start + length - q < segs[seg]:
                    H, W = image_sizes[img]
                    what = f"run {seg + 1} of {len(segs)} of " if len(segs) > 1 else ""
                    raise ImageTokenMismatchError(
                        f"image {img}: {what}the prompt holds {start + length - q} image tokens but the model makes "
                        f"{segs[seg]} features for a {W}x{H} image ({run.describe})"
                    )
                if seg == 0:
                    lb.add_image(img, image_sizes[img], run.tiles)
                    lb.mark(f"image[{img}]", [])
                if run.segments:
                    run.emit(lb, img, seg)
                else:
                    run.emit(lb, img)
                q += segs[seg]
                seg += 1
                if seg == len(segs):
                    img, seg = img + 1, 0
            p = start + length
        if seg:
            raise ImageTokenMismatchError(f"row {b} ends inside image {img}: {seg} of its {len(image_runs[img].segments)} runs are in the prompt")
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


__all__ = ["ImageRun", "Crop", "crop_layouts", "image_settings", "lm_layout", "runs", "whole"]
