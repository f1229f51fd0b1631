"""Token layouts for LLaVA-family inputs, computed from the config, the processor and the
actual ``input_ids`` (never assuming 576 tokens or a 24x24 grid).

llava-1.5: each ``<image>`` run holds ``rows*cols`` patch tokens (plus CLS first when the
feature strategy is ``full``); ``rows = cols = image_size // patch_size``.
llava-next: each run holds the base tile (``g*g``) then the unpadded high-resolution grid,
row-major, with one ``image_newline`` token after each of its rows.
"""
from __future__ import annotations

import torch

from ..core.errors import ImageTokenMismatchError
from ..core.layout import LayoutBuilder, Tile, TokenLayout


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


def _runs(ids: torch.Tensor, token: int) -> list[tuple[int, int]]:
    """Contiguous runs ``(start, length)`` of ``token`` in a 1-D id tensor."""
    pos = (ids == token).nonzero().flatten().tolist()
    runs: list[tuple[int, int]] = []
    for p in pos:
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return runs


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


def lm_layout(config, processor, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_sizes: list[tuple[int, int]],
              answer_lens: list[int] | None = None) -> TokenLayout:
    """Layout of the language-model sequence ``[B, T]``.

    ``image_sizes``: original ``(H, W)`` per image, in prompt order across the batch.
    ``answer_lens``: number of appended answer tokens per row (teacher forcing), else ``None``.
    Spans: ``prompt`` (text after the last image, before the answer), ``system`` (text before
    the first image), ``answer``, ``last`` (the position whose logits predict the first answer token).
    """
    tok_id = config.image_token_index if hasattr(config, "image_token_index") else config.image_token_id
    is_next = config.model_type == "llava_next"
    g = config.vision_config.image_size // config.vision_config.patch_size
    full = config.vision_feature_select_strategy == "full"
    ip = processor.image_processor
    specials = set(getattr(processor.tokenizer, "all_special_ids", []))
    B, T = input_ids.shape
    lb = LayoutBuilder()
    img = 0
    for b in range(B):
        ids = input_ids[b]
        valid = attention_mask[b].bool()
        runs = _runs(ids, tok_id)
        n_ans = answer_lens[b] if answer_lens else 0
        last_valid = int(valid.nonzero().max()) if valid.any() else T - 1
        ans_start = last_valid + 1 - n_ans
        p = 0
        for start, length in runs:
            _text_segment(lb, ids, valid, specials, p, start, ans_start, "system" if p == 0 else None)
            if img >= len(image_sizes):
                raise ImageTokenMismatchError(f"row {b} has more <image> placeholder runs than the {len(image_sizes)} image(s) given")
            H, W = image_sizes[img]
            if is_next:
                hr, hc = next_hires_grid(config, (H, W))
                expect = g * g + hr * (hc + 1) + (1 if full else 0)
                tiles = [Tile((g, g), (0.0, 0.0, float(W), float(H)), "base"), Tile((hr, hc), (0.0, 0.0, float(W), float(H)), "hires")]
            else:
                expect = g * g + (1 if full else 0)
                tiles = [Tile((g, g), crop_box(ip, W, H), "base")]
            if length != expect:
                raise ImageTokenMismatchError(
                    f"image {img}: the prompt holds {length} image tokens but the model makes {expect} features "
                    f"for a {W}x{H} image (grid {g}x{g}{', hires ' + str((hr, hc)) if is_next else ''})"
                )
            lb.add_image(img, (H, W), tiles)
            lb.mark(f"image[{img}]", [])
            if full:
                lb.special(1, image_index=img)
            lb.image_grid(img, g, g, tile=0)
            if is_next:
                lb.image_grid(img, hr, hc, tile=1, newline_per_row=True)
            img += 1
            p = start + length
        _text_segment(lb, ids, valid, specials, p, T, ans_start, "prompt")
        lb.mark("last", [ans_start - 1])
        lb.end_row()
    if img != len(image_sizes):
        raise ImageTokenMismatchError(f"{len(image_sizes)} image(s) given but the prompts hold {img} <image> placeholder(s)")
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
