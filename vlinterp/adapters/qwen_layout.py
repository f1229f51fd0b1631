"""Token layouts and positions of the Qwen VL families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), from the
processor's own outputs: ``image_grid_thw`` ``[n_images, 3]`` (temporal, patch rows, patch columns
after ``smart_resize``) and the model's ``spatial_merge_size`` ``m`` (2: each LM image token is
one ``m x m`` block of patches).

* LM: image ``k``'s run holds ``t * (h/m) * (w/m)`` tokens, row-major over the merged grid; its
  tile covers the whole original image (the processor resizes the full image, no crop, no pad),
  so ``to_heatmap`` maps cell ``(r, c)`` to original pixels ``[c W/(w/m), (c+1) W/(w/m)) x
  [r H/(h/m), (r+1) H/(h/m))`` (``smart_resize`` only rounds the size to a multiple of ``14 m`` /
  ``16 m``).
* ``vision`` (packed, one row ``[1, N]``, N = all images' patches): the order the vision blocks
  see. The processor orders each image's patches ``m x m`` block by block (row-major blocks,
  row-major inside a block); Qwen2.5-VL then regroups the blocks into attention windows
  (``window_index``) before its first block. Each position carries its image and patch
  ``(row, col)``.
* ``projector`` (packed, ``[1, N / m^2]``): the merger's output rows, one per ``m x m`` block, in
  the blocks' order (Qwen2.5-VL: window order; the model restores row-major order after it).
"""
from __future__ import annotations

import torch

from ..core.layout import LayoutBuilder, Tile, TokenLayout
from .vlm_layout import ImageRun


def merge_size(adapter) -> int:
    return int(adapter.config.vision_config.spatial_merge_size)


def image_run(adapter, enc, k: int, size: tuple[int, int]) -> ImageRun:
    """Image ``k``'s LM run: the merged grid ``(h/m, w/m)`` of ``image_grid_thw[k]``."""
    t, h, w = (int(v) for v in enc["image_grid_thw"][k].tolist())
    m = merge_size(adapter)
    rows, cols = h // m, w // m
    H, W = size

    def emit(lb: LayoutBuilder, img: int) -> None:
        for _ in range(t):
            lb.image_grid(img, rows, cols)

    return ImageRun([Tile((rows, cols), (0.0, 0.0, float(W), float(H)), "base")], t * rows * cols, emit,
                    f"image_grid_thw {[t, h, w]}, merge {m}: grid {rows}x{cols}")


def unit_order(adapter, grid: torch.Tensor, windowed: bool) -> list[int]:
    """Global ``m x m``-block indices in the order the vision blocks see them: row-major, or
    Qwen2.5-VL's attention windows (transformers' own ``get_vision_window_index``)."""
    m = merge_size(adapter)
    n = int(sum(t * (h // m) * (w // m) for t, h, w in grid.tolist()))
    if not windowed:
        return list(range(n))
    from transformers.vision_utils import get_vision_window_index

    vc = adapter.config.vision_config
    index, _ = get_vision_window_index(grid.cpu(), spatial_merge_size=m, window_size=vc.window_size, patch_size=vc.patch_size)
    return [int(i) for i in index.tolist()]


def vision_layouts(adapter, enc, sizes: list[tuple[int, int]], windowed: bool = False) -> dict[str, TokenLayout]:
    """The packed ``vision`` (patches) and ``projector`` (merged blocks) layouts, one row each."""
    lbv, lbp = LayoutBuilder(), LayoutBuilder()
    grid = enc.get("image_grid_thw")
    if grid is None or not len(sizes):
        return {"vision": lbv.build(), "projector": lbp.build()}
    m = merge_size(adapter)
    units: list[tuple[int, int, int]] = []  # global block index -> (image, block row, block col)
    for i, ((t, h, w), (H, W)) in enumerate(zip(grid.tolist(), sizes)):
        box = (0.0, 0.0, float(W), float(H))
        lbv.add_image(i, (H, W), [Tile((h, w), box, "base")])
        lbp.add_image(i, (H, W), [Tile((h // m, w // m), box, "base")])
        units += [(i, r, c) for _ in range(t) for r in range(h // m) for c in range(w // m)]
    for u in unit_order(adapter, grid, windowed):
        i, r, c = units[u]
        lbp.patch(i, r, c)
        for j in range(m * m):
            lbv.patch(i, r * m + j // m, c * m + j % m)
    return {"vision": lbv.build(), "projector": lbp.build()}


def windowed_vision_layouts(adapter, enc, sizes):
    """:func:`vision_layouts` in Qwen2.5-VL's attention-window order."""
    return vision_layouts(adapter, enc, sizes, windowed=True)


def mrope_position_ids(adapter, batch) -> torch.Tensor:
    """``[3, B, T]`` M-RoPE ids (temporal, row, column) as the model's forward computes them: its
    own ``get_rope_index`` when the batch has images, else ``0..T-1`` on all three axes."""
    inp = batch.inputs
    ids = inp["input_ids"]
    grid = inp.get("image_grid_thw")
    if grid is None:
        return torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1).expand(3, ids.shape[0], -1)
    mm = inp.get("mm_token_type_ids")
    if mm is None:
        mm = (ids == adapter.image_token_id).long()
    inner = getattr(adapter.model, "model", adapter.model)
    pos, _ = inner.get_rope_index(ids, mm_token_type_ids=mm, image_grid_thw=grid, attention_mask=inp.get("attention_mask"))
    return pos


def vision_special_ids(config) -> tuple[int, ...]:
    """``<|vision_start|>`` / ``<|vision_end|>``: laid out as special tokens."""
    return tuple(int(i) for i in (getattr(config, "vision_start_token_id", None), getattr(config, "vision_end_token_id", None)) if i is not None)


__all__ = ["image_run", "vision_layouts", "windowed_vision_layouts", "mrope_position_ids", "vision_special_ids", "unit_order"]
