"""Token layouts for LLaVA-family inputs, computed from the config, the processor and the
actual ``input_ids`` (never assuming 576 tokens or a 24x24 grid). The LM layout itself is the
generic :func:`vlinterp.adapters.vlm_layout.lm_layout`; this module gives LLaVA's image runs.

llava-1.5: each ``<image>`` run holds ``rows*cols`` patch tokens (plus CLS first when the
feature strategy is ``full``); ``rows = cols = image_size // patch_size``.
llava-next: each run holds the base tile (``g*g``) then the unpadded high-resolution grid,
row-major, with one ``image_newline`` token after each of its rows.
"""
from __future__ import annotations

import torch

from ..core.layout import LayoutBuilder, Tile, TokenLayout
from .vlm_layout import ImageRun


def crop_box(ip, width: int, height: int) -> tuple[float, float, float, float]:
    """Box of original pixels ``(x0, y0, x1, y1)`` that a CLIP-style image processor keeps:
    optional pad-to-square, resize (shortest edge or fixed size), optional centre crop."""
    W, H = float(width), float(height)
    ox, oy = 0.0, 0.0  # offset of the original inside the (padded) canvas
    if getattr(ip, "do_pad", False):
        side = max(W, H)
        ox, oy, W, H = (side - W) / 2, (side - H) / 2, side, side
    size = getattr(ip, "size", None) or {}
    if getattr(ip, "do_resize", True) and size:
        if "shortest_edge" in size:
            s = size["shortest_edge"] / min(W, H)
            sx = sy = s
        else:
            sx, sy = size["width"] / W, size["height"] / H
    else:
        sx = sy = 1.0
    rw, rh = W * sx, H * sy
    x0, y0, x1, y1 = 0.0, 0.0, rw, rh
    if getattr(ip, "do_center_crop", False) and getattr(ip, "crop_size", None):
        cw, ch = ip.crop_size["width"], ip.crop_size["height"]
        x0, y0 = (rw - cw) / 2, (rh - ch) / 2
        x1, y1 = x0 + cw, y0 + ch
    return (x0 / sx - ox, y0 / sy - oy, x1 / sx - ox, y1 / sy - oy)


def next_hires_grid(config, image_hw: tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)`` of LLaVA-NeXT's unpadded high-resolution feature grid for an image
    of original size ``(H, W)``, from transformers' own any-resolution helpers."""
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    vs, ps = config.vision_config.image_size, config.vision_config.patch_size
    g = vs // ps
    nh, nw = get_anyres_image_grid_shape(tuple(image_hw), config.image_grid_pinpoints, vs)
    dummy = torch.zeros(1, nh * g, nw * g)
    out = unpad_image(dummy, torch.tensor(image_hw))
    return int(out.shape[1]), int(out.shape[2])


def image_run(adapter, enc, k: int, size: tuple[int, int]) -> ImageRun:
    """The LM positions of image ``k`` (original ``(H, W)`` = ``size``): llava-1.5 holds the
    ``g x g`` patch grid (CLS first when the feature strategy is ``full``); llava-next the base
    grid then the unpadded high-resolution grid with one newline token after each of its rows."""
    config = adapter.config
    H, W = size
    g = config.vision_config.image_size // config.vision_config.patch_size
    full = config.vision_feature_select_strategy == "full"
    if config.model_type == "llava_next":
        hr, hc = next_hires_grid(config, (H, W))
        tiles = [Tile((g, g), (0.0, 0.0, float(W), float(H)), "base"), Tile((hr, hc), (0.0, 0.0, float(W), float(H)), "hires")]
        n, what = g * g + hr * (hc + 1) + (1 if full else 0), f"grid {g}x{g}, hires {(hr, hc)}"
    else:
        tiles = [Tile((g, g), crop_box(adapter.processor.image_processor, W, H), "base")]
        n, what, hr, hc = g * g + (1 if full else 0), f"grid {g}x{g}", 0, 0

    def emit(lb: LayoutBuilder, img: int) -> None:
        if full:
            lb.special(1, image_index=img)
        lb.image_grid(img, g, g, tile=0)
        if hr:
            lb.image_grid(img, hr, hc, tile=1, newline_per_row=True)

    return ImageRun(tiles, n, emit, what)


def vision_layouts(adapter, enc, sizes: list[tuple[int, int]]) -> dict[str, TokenLayout]:
    """``vision`` (one row per crop: CLS + patch grid) and ``projector`` (patch grid only)."""
    config, processor = adapter.config, adapter.processor
    crops = [1] * len(sizes)
    if "image_sizes" in enc and config.model_type == "llava_next":
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        crops = [int(image_size_to_num_patches(tuple(s), config.image_grid_pinpoints, config.vision_config.image_size))
                 for s in enc["image_sizes"].tolist()]
    return {"vision": vision_layout(config, processor, sizes, crops),
            "projector": vision_layout(config, processor, sizes, crops, cls=False)}


def vision_layout(config, processor, image_sizes: list[tuple[int, int]], crops_per_image: list[int], cls: bool = True) -> TokenLayout:
    """Layout of the vision tower's sequences: one row per crop fed to the tower
    (``[n_crops, 1 + g*g]``: CLS then the patch grid; ``cls=False`` for the projector output
    ``[n_crops, g*g]``). Image index = crop index in these streams."""
    g = config.vision_config.image_size // config.vision_config.patch_size
    ip = processor.image_processor
    lb = LayoutBuilder()
    k = 0
    for (H, W), n in zip(image_sizes, crops_per_image):
        for c in range(n):
            box = (0.0, 0.0, float(W), float(H)) if n > 1 else crop_box(ip, W, H)
            lb.add_image(k, (H, W), [Tile((g, g), box, "base" if c == 0 else f"crop{c}")])
            if cls:
                lb.special(1, image_index=k)
            lb.image_grid(k, g, g)
            lb.end_row()
            k += 1
    return lb.build()
