"""Token layouts of SmolVLM / Idefics3 (``SmolVLMForConditionalGeneration``,
``Idefics3ForConditionalGeneration``), from the image processor's own tiling.

The image is resized (longest edge to ``size``, then each side up to a multiple of
``max_image_size``: the aspect changes a little) and cut into ``rows x cols`` tiles of
``max_image_size``, followed by the global image (the whole image squeezed to one tile); an image
no larger than one tile is the global image alone. ``rows``/``cols`` are the image processor's
``get_number_of_image_patches``. Each tile's ``g x g`` patches are pixel-shuffled by
``scale_factor`` ``s`` into ``image_seq_len = (g/s)^2`` tokens, row-major, written as its own run
after ``<fake_token_around_image><row_r_col_c>`` (the global image after ``<global-img>``). Tile
``(r, c)`` covers original pixels ``[c W/cols, (c+1) W/cols) x [r H/rows, (r+1) H/rows)``.
"""
from __future__ import annotations

from ..core.errors import ImageTokenMismatchError
from ..core.layout import LayoutBuilder, Tile
from .vlm_layout import Crop, ImageRun, crop_layouts, image_settings, whole


def _grids(adapter) -> tuple[int, int]:
    vc = adapter.config.vision_config
    g = vc.image_size // vc.patch_size
    m = g // int(adapter.config.scale_factor)
    n = int(getattr(adapter.processor, "image_seq_len", m * m))
    if m * m != n:
        raise ImageTokenMismatchError(f"the processor writes {n} tokens per tile but the model makes {m}x{m}")
    return g, m


def tiles(adapter, enc, size: tuple[int, int]) -> list[tuple[str, tuple[float, float, float, float]]]:
    """``[(name, box)]`` of an ``(H, W)`` image's tiles in prompt order (row-major, global last)."""
    get = image_settings(adapter, enc)
    H, W = size
    keys = ("do_image_splitting", "max_image_size", "size")
    _, rows, cols = adapter.processor.image_processor.get_number_of_image_patches(H, W, {k: get(k) for k in keys})
    out = [(f"tile{r}_{c}", (c * W / cols, r * H / rows, (c + 1) * W / cols, (r + 1) * H / rows))
           for r in range(rows) for c in range(cols)]
    return out + [("global", whole(size))]


def image_run(adapter, enc, k: int, size: tuple[int, int]) -> ImageRun:
    _, m = _grids(adapter)
    ts = tiles(adapter, enc, size)

    def emit(lb: LayoutBuilder, img: int, seg: int) -> None:
        lb.image_grid(img, m, m, tile=seg)

    return ImageRun([Tile((m, m), box, name) for name, box in ts], len(ts) * m * m, emit,
                    f"{len(ts)} tile(s) of {m}x{m}", segments=[m * m] * len(ts))


def vision_layouts(adapter, enc, sizes):
    """One row per tile the tower sees (the processor's all-zero padding images are dropped by the
    model): ``g x g`` patches, ``m x m`` after the connector."""
    crops = [Crop(k, box, name) for k, size in enumerate(sizes) for name, box in tiles(adapter, enc, size)]
    g, m = _grids(adapter)
    return crop_layouts(sizes, crops, (g, g), (m, m))


def special_ids(processor) -> tuple[int, ...]:
    """``<fake_token_around_image>``, ``<global-img>`` and the ``<row_r_col_c>`` tile markers."""
    tok = processor.tokenizer
    names = [getattr(processor, "fake_image_token", "<fake_token_around_image>"),
             getattr(processor, "global_image_token", getattr(processor, "global_image_tag", "<global-img>"))]
    names += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    ids = [tok.convert_tokens_to_ids(n) for n in names]
    return tuple(int(i) for i in ids if i is not None and i != tok.unk_token_id)


__all__ = ["image_run", "vision_layouts", "tiles", "special_ids"]
