"""Token layouts of Gemma 3 (``Gemma3ForConditionalGeneration``) and PaliGemma
(``PaliGemmaForConditionalGeneration``): a SigLIP tower on the whole image resized to its square
(no crop, no pad), a fixed number of soft tokens per image.

* PaliGemma: ``image_seq_length`` tokens (``g x g``, the tower's patch grid) per image, at the
  start of the prompt; the processor puts ``<bos>`` after the last image.
* Gemma 3: the tower's ``P x P`` patches average-pooled to ``mm_tokens_per_image`` (``t x t``, 16x16
  = 256) tokens, between ``<start_of_image>`` and ``<end_of_image>``. With pan-and-scan
  (``prepare(processor_kwargs={"do_pan_and_scan": True})``) a wide or tall image also gets
  ``n`` crops, each its own run of ``t x t`` tokens after the whole image's (text between them):
  the crops' boxes come from the image processor's own ``pan_and_scan_batched`` run on a map of
  pixel coordinates, with the settings the processor applied.
"""
from __future__ import annotations

import math

import torch

from ..core.errors import ImageTokenMismatchError
from ..core.layout import LayoutBuilder, Tile
from .vlm_layout import Crop, ImageRun, crop_layouts, image_settings, whole


def _vision_grid(config) -> int:
    return config.vision_config.image_size // config.vision_config.patch_size


# ------------------------------------------------------------------ Gemma 3
def pan_and_scan_boxes(adapter, enc, size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Boxes ``(x0, y0, x1, y1)`` of the pan-and-scan crops of an ``(H, W)`` image (empty when the
    processor does not pan and scan it), from the image processor's ``pan_and_scan_batched``."""
    get = image_settings(adapter, enc)
    if not get("do_pan_and_scan"):
        return []
    H, W = size
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.int32), torch.arange(W, dtype=torch.int32), indexing="ij")
    crops = adapter.processor.image_processor.pan_and_scan_batched(
        torch.stack([ys, xs])[None], pan_and_scan_min_crop_size=get("pan_and_scan_min_crop_size"),
        pan_and_scan_max_num_crops=get("pan_and_scan_max_num_crops"),
        pan_and_scan_min_ratio_to_activate=get("pan_and_scan_min_ratio_to_activate"))
    return [(float(c[0, 1].min()), float(c[0, 0].min()), float(c[0, 1].max() + 1), float(c[0, 0].max() + 1)) for c in crops]


def gemma3_tokens_side(config) -> int:
    t = math.isqrt(int(config.mm_tokens_per_image))
    if t * t != config.mm_tokens_per_image:
        raise ImageTokenMismatchError(f"mm_tokens_per_image={config.mm_tokens_per_image} is not a square grid")
    return t


def gemma3_image_run(adapter, enc, k: int, size: tuple[int, int]) -> ImageRun:
    t = gemma3_tokens_side(adapter.config)
    boxes = pan_and_scan_boxes(adapter, enc, size)
    tiles = [Tile((t, t), whole(size), "base")] + [Tile((t, t), b, f"crop{j}") for j, b in enumerate(boxes)]

    def emit(lb: LayoutBuilder, img: int, seg: int) -> None:
        lb.image_grid(img, t, t, tile=seg)

    desc = f"{t}x{t} soft tokens" + (f" for the image and each of {len(boxes)} pan-and-scan crops" if boxes else "")
    return ImageRun(tiles, t * t * len(tiles), emit, desc, segments=[t * t] * len(tiles))


def gemma3_vision_layouts(adapter, enc, sizes):
    """One row per crop the tower sees: each image, then its pan-and-scan crops."""
    crops: list[Crop] = []
    for k, size in enumerate(sizes):
        crops.append(Crop(k, whole(size), "base"))
        crops += [Crop(k, b, f"crop{j}") for j, b in enumerate(pan_and_scan_boxes(adapter, enc, size))]
    px = enc.get("pixel_values")
    if px is not None and px.shape[0] != len(crops):
        raise ImageTokenMismatchError(f"the processor made {px.shape[0]} crops but pan-and-scan gives {len(crops)}")
    g, t = _vision_grid(adapter.config), gemma3_tokens_side(adapter.config)
    return crop_layouts(sizes, crops, (g, g), (t, t))


def gemma3_special_ids(config) -> tuple[int, ...]:
    """``<start_of_image>`` / ``<end_of_image>``."""
    return tuple(int(i) for i in (getattr(config, "boi_token_id", None), getattr(config, "eoi_token_id", None)) if i is not None)


# ---------------------------------------------------------------- PaliGemma
def paligemma_image_run(adapter, enc, k: int, size: tuple[int, int]) -> ImageRun:
    g = _vision_grid(adapter.config)
    n = int(getattr(adapter.processor, "image_seq_length", g * g))
    if n != g * g:
        raise ImageTokenMismatchError(f"the processor writes {n} image tokens but the tower makes {g}x{g} patches")

    def emit(lb: LayoutBuilder, img: int) -> None:
        lb.image_grid(img, g, g)

    return ImageRun([Tile((g, g), whole(size), "base")], g * g, emit, f"grid {g}x{g}")


def paligemma_vision_layouts(adapter, enc, sizes):
    g = _vision_grid(adapter.config)
    return crop_layouts(sizes, [Crop(k, whole(s)) for k, s in enumerate(sizes)], (g, g), (g, g))


def paligemma_position_ids(adapter, batch) -> torch.Tensor:
    """PaliGemma counts positions from 1 (``arange(T) + 1`` on every row), as its forward does."""
    ids = batch.inputs["input_ids"]
    return (torch.arange(ids.shape[1], device=ids.device) + 1).expand(ids.shape[0], -1)


__all__ = ["gemma3_image_run", "gemma3_vision_layouts", "gemma3_special_ids", "pan_and_scan_boxes",
           "paligemma_image_run", "paligemma_vision_layouts", "paligemma_position_ids"]
