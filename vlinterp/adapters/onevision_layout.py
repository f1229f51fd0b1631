"""Token layouts of LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``), from the
processor's outputs (``image_sizes``, ``batch_num_images``) and the model's own any-resolution
helpers.

* An image alone in its prompt (``batch_num_images == 1``): the base crop (the whole image
  resized to the tower's square, ``g x g`` features) then the high-resolution grid: the image
  resized into the best ``image_grid_pinpoints`` canvas (aspect kept, centred, padded) and cut
  into tiles; the model unpads the tiles' joined feature map, shrinks it bilinearly when it
  holds more than ``anyres_max_N`` tiles' worth (``vision_aspect_ratio``) and writes one newline
  token after each of its rows. Both LM tiles cover the whole original image.
* An image sharing its prompt with others: one crop (padded to a square, centred) of ``g x g``
  features and one newline token after it.
* ``vision`` / ``projector``: one row per crop the tower sees (base, then the canvas tiles
  row-major; or the padded square), each with its own box of original pixels.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..core.errors import ImageTokenMismatchError
from ..core.layout import LayoutBuilder, Tile
from .vlm_layout import Crop, ImageRun, crop_layouts, whole


def _grid(config) -> int:
    return config.vision_config.image_size // config.vision_config.patch_size


def _multi(enc, k: int) -> bool:
    """Whether image ``k`` shares its prompt with other images (the processor's ``batch_num_images``)."""
    counts = enc.get("batch_num_images")
    if counts is None:
        return False
    a = 0
    for n in (int(v) for v in counts.tolist()):
        if k < a + n:
            return n != 1
        a += n
    return False


def hires_grid(config, size: tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)`` of the high-resolution feature map the model keeps for an ``(H, W)`` image:
    transformers' own ``get_anyres_image_grid_shape`` and ``unpad_image``, then the
    ``anyres_max_N`` shrink of ``pack_image_features``."""
    from transformers.models.llava_onevision.modeling_llava_onevision import get_anyres_image_grid_shape, unpad_image

    g = _grid(config)
    nh, nw = get_anyres_image_grid_shape(tuple(size), config.image_grid_pinpoints, config.vision_config.image_size)
    h, w = unpad_image(torch.zeros(1, nh * g, nw * g), torch.tensor(size)).shape[1:]
    max_tiles = int(config.vision_aspect_ratio.strip("anyres_max_"))
    ratio = math.sqrt(h * w / (max_tiles * g**2))
    if ratio > 1.1:
        h, w = int(h // ratio), int(w // ratio)
    return int(h), int(w)


def square_box(size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Original pixels of the image padded (centred) to a square."""
    H, W = size
    s = max(H, W)
    x0, y0 = (s - W) // 2, (s - H) // 2
    return (-float(x0), -float(y0), float(s - x0), float(s - y0))


def canvas_tiles(processor, size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Boxes (original pixels) of the high-resolution tiles, in the order the processor cuts them:
    the image resized into the best pinpoint canvas (``get_patch_output_size``), centred, padded,
    cut row-major into tower-sized squares."""
    from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
    from transformers.image_utils import ChannelDimension

    ip = processor.image_processor
    H, W = size
    bh, bw = select_best_resolution((H, W), ip.image_grid_pinpoints)
    nh, nw = get_patch_output_size(np.zeros((H, W, 1), np.uint8), (bh, bw), ChannelDimension.LAST)
    px, py = (bw - nw) // 2, (bh - nh) // 2
    S = (ip.crop_size or {}).get("height") or ip.size["height"]
    boxes = []
    for y in range(0, bh, S):
        for x in range(0, bw, S):
            boxes.append(((x - px) * W / nw, (y - py) * H / nh, (x + S - px) * W / nw, (y + S - py) * H / nh))
    return boxes


def image_run(adapter, enc, k: int, size: tuple[int, int]) -> ImageRun:
    config = adapter.config
    g = _grid(config)
    if _multi(enc, k):
        def emit_one(lb: LayoutBuilder, img: int) -> None:
            lb.image_grid(img, g, g)
            lb.special(1, image_index=img)

        return ImageRun([Tile((g, g), square_box(size), "base")], g * g + 1, emit_one, f"one padded crop {g}x{g} + newline")
    rows, cols = hires_grid(config, size)

    def emit(lb: LayoutBuilder, img: int) -> None:
        lb.image_grid(img, g, g, tile=0)
        lb.image_grid(img, rows, cols, tile=1, newline_per_row=True)

    tiles = [Tile((g, g), whole(size), "base"), Tile((rows, cols), whole(size), "hires")]
    return ImageRun(tiles, g * g + rows * (cols + 1), emit, f"base {g}x{g}, hires {rows}x{cols} + newlines")


def vision_layouts(adapter, enc, sizes):
    """One row per crop: the padded square of a multi-image prompt's image, or the base crop and
    the canvas tiles (as many as the model's ``image_size_to_num_patches``)."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    config = adapter.config
    crops: list[Crop] = []
    for k, size in enumerate(sizes):
        if _multi(enc, k):
            crops.append(Crop(k, square_box(size), "base"))
            continue
        tiles = canvas_tiles(adapter.processor, size)
        n = image_size_to_num_patches(tuple(size), config.image_grid_pinpoints, config.vision_config.image_size)
        if n != len(tiles) + 1:
            raise ImageTokenMismatchError(f"image {k}: the processor cuts {len(tiles)} tiles but the model takes {n - 1}")
        crops.append(Crop(k, whole(size), "base"))
        crops += [Crop(k, b, f"tile{j}") for j, b in enumerate(tiles)]
    g = _grid(config)
    cls = getattr(config.vision_config, "model_type", "") == "clip_vision_model"
    return crop_layouts(sizes, crops, (g, g), (g, g), cls=cls, projector_cls=cls and config.vision_feature_select_strategy == "full")


__all__ = ["image_run", "vision_layouts", "hires_grid", "canvas_tiles", "square_box"]
