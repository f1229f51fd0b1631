"""FCCT position groups from a token layout.

Seven groups (Fine-grained Cross-modal Causal Tracing): ``early-visual``, ``object-visual``,
``late-visual`` (image patch tokens before / on / after the object), ``early-text``,
``text-object``, ``late-text`` (non-image tokens before / on / after the object word, or
before / after the image when no object word is given) and ``last``. Without an object
mask, ``object-visual`` is empty and the image tokens split at the middle of the image span.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.errors import ShapeMismatchError
from ..core.layout import IMAGE, PAD, TokenLayout

GROUPS = ("early-visual", "object-visual", "late-visual", "early-text", "text-object", "late-text", "last")


def _cell_share(pix: np.ndarray, box, grid, r: int, c: int) -> float:
    """Share of cell ``(r, c)`` of a ``grid`` laid over ``box`` (original pixels) that ``pix`` covers
    (0 for a cell wholly outside the image: the processor's padding)."""
    H, W = pix.shape
    rows, cols = grid
    bx0, by0, bx1, by1 = box
    ys = slice(max(0, int(np.floor(by0 + (by1 - by0) * r / rows))), min(H, int(np.ceil(by0 + (by1 - by0) * (r + 1) / rows))))
    xs = slice(max(0, int(np.floor(bx0 + (bx1 - bx0) * c / cols))), min(W, int(np.ceil(bx0 + (bx1 - bx0) * (c + 1) / cols))))
    region = pix[ys, xs]
    return float(region.mean()) if region.size else 0.0


def patch_mask(layout: TokenLayout, mask, image_index: int = 0) -> np.ndarray:
    """Boolean mask over image ``image_index``'s positions (``image_positions`` order), each position
    judged in its own tile: the tile's grid laid over the tile's crop box (LLaVA-NeXT's base and
    high-resolution grids, InternVL's and SmolVLM's tiles and thumbnail, Qwen's merged grid).

    ``mask``: a boolean ``[rows, cols]`` patch mask of the first (base) tile, a pixel mask ``[H, W]`` at
    the original image size (a patch is in when >= half of its pixels are), or a box ``(x0, y0, x1, y1)``
    in original pixels. Raises :class:`ShapeMismatchError` on a wrong shape or a box outside the image."""
    g = layout.images[image_index]
    rows, cols = g.tiles[0].grid
    H, W = g.size
    m = np.asarray(mask)
    if m.ndim == 1 and m.size == 4:
        x0, y0, x1, y1 = (float(v) for v in m)
        if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
            raise ShapeMismatchError(f"box {tuple(m.tolist())} is outside the {W}x{H} image (x0<x1<=W, y0<y1<=H)")
        pix = np.zeros((H, W), bool)
        pix[int(np.floor(y0)):int(np.ceil(y1)), int(np.floor(x0)):int(np.ceil(x1))] = True
        m = pix
    if m.ndim != 2:
        raise ShapeMismatchError(f"object mask must be [rows, cols]={rows, cols}, [H, W]={H, W} or a box; got shape {m.shape}")
    pos = layout.image_positions(image_index)
    b = g.batch_row
    tiles, rr, cc = layout.tile[b, pos], layout.row[b, pos], layout.col[b, pos]
    grids = {t: (g.tiles[t].grid if 0 <= t < len(g.tiles) else None) for t in set(tiles.tolist())}
    if m.shape == (rows, cols) and (rows, cols) != (H, W):
        grid = m.astype(bool)
        if all(gr == (rows, cols) for gr in grids.values()):  # every tile on the base grid: read it directly
            return np.array([bool(grid[r, c]) if r >= 0 and c >= 0 else False for r, c in zip(rr, cc)])
        # other grids: the base tile's cells painted onto its box in original pixels, then judged per tile
        pix = np.zeros((H, W), bool)
        bx0, by0, bx1, by1 = g.tiles[0].box
        for r, c in zip(*np.nonzero(grid)):
            ys = slice(max(0, int(np.floor(by0 + (by1 - by0) * r / rows))), min(H, int(np.ceil(by0 + (by1 - by0) * (r + 1) / rows))))
            xs = slice(max(0, int(np.floor(bx0 + (bx1 - bx0) * c / cols))), min(W, int(np.ceil(bx0 + (bx1 - bx0) * (c + 1) / cols))))
            pix[ys, xs] = True
        m = pix
    elif m.shape != (H, W):
        raise ShapeMismatchError(f"object mask shape {m.shape} matches neither the patch grid {(rows, cols)} nor the image {(H, W)}")
    pix = m.astype(np.float64)
    return np.array([t in grids and grids[t] is not None and r >= 0 and c >= 0
                     and _cell_share(pix, g.tiles[t].box, grids[t], r, c) >= 0.5 for t, r, c in zip(tiles, rr, cc)])


def position_groups(layout: TokenLayout, object_mask=None, object_positions=None, row: int = 0, image_index: int | None = None) -> dict[str, torch.Tensor]:
    """``{group: LongTensor positions}`` for the seven FCCT groups of row ``row``.

    ``object_mask``: see :func:`patch_mask`; ``object_positions``: positions of the object word
    in the text (the ``text-object`` group)."""
    mod = layout.modality[row]
    T = len(mod)
    imgs = [i for i, g in enumerate(layout.images) if g.batch_row == row] if image_index is None else [image_index]
    img_pos = np.concatenate([layout.image_positions(i).numpy() for i in imgs]) if imgs else np.zeros(0, np.int64)
    obj = np.zeros(len(img_pos), bool)
    if object_mask is not None:
        if not imgs:
            raise ShapeMismatchError("an object mask was given but this layout row has no image")
        obj = np.concatenate([patch_mask(layout, object_mask, i) for i in imgs])
    last = layout.span("last", row).numpy()
    out: dict[str, np.ndarray] = {}
    if obj.any():
        first = img_pos[obj].min()
        out["early-visual"] = img_pos[~obj & (img_pos < first)]
        out["object-visual"] = img_pos[obj]
        out["late-visual"] = img_pos[~obj & (img_pos > first)]
    else:
        half = len(img_pos) // 2
        srt = np.sort(img_pos)
        out["early-visual"], out["object-visual"], out["late-visual"] = srt[:half], np.zeros(0, np.int64), srt[half:]
    other = np.array([p for p in range(T) if mod[p] not in (IMAGE, PAD) and p not in set(last.tolist()) and p not in set(img_pos.tolist())], np.int64)
    tobj = np.asarray(object_positions if object_positions is not None else [], np.int64)
    if tobj.size:
        if tobj.min() < 0 or tobj.max() >= T:
            raise ShapeMismatchError(f"object_positions {tobj.tolist()} outside the sequence (length {T})")
        rest = other[~np.isin(other, tobj)]
        out["early-text"], out["text-object"], out["late-text"] = rest[rest < tobj.min()], tobj, rest[rest > tobj.min()]
    else:
        split = img_pos.min() if len(img_pos) else T
        out["early-text"], out["text-object"], out["late-text"] = other[other < split], np.zeros(0, np.int64), other[other > split]
    out["last"] = last
    return {k: torch.as_tensor(np.sort(out[k]), dtype=torch.long) for k in GROUPS}


def text_positions(adapter, batch, phrase: str, row: int = 0) -> list[int]:
    """Positions of ``phrase``'s tokens in the language-model sequence of ``row`` (its last
    occurrence, e.g. the object words of a question): the ``text-object`` group or the positions
    for text noise. Raises :class:`PromptError` when the phrase is not in the prompt."""
    from ..core.errors import PromptError

    ids = batch.inputs.get("input_ids")
    tok = getattr(adapter, "tokenizer", None)
    if ids is None or tok is None:
        raise PromptError(f"{adapter.family}: no token ids to search for {phrase!r}")
    seq = ids[row].tolist()
    for cand in (" " + phrase.strip(), phrase.strip()):
        want = tok(cand, add_special_tokens=False)["input_ids"]
        if not want or getattr(tok, "unk_token_id", None) in want:
            continue
        for start in range(len(seq) - len(want), -1, -1):
            if seq[start:start + len(want)] == want:
                return list(range(start, start + len(want)))
    raise PromptError(f"{phrase!r} does not occur in the prompt's tokens")


__all__ = ["GROUPS", "position_groups", "patch_mask", "text_positions"]
