"""Token layouts: what every sequence position is.

A :class:`TokenLayout` describes a batch of sequences of length ``T``: for each
position its modality (``pad``, ``text``, ``image``, ``special``), and for image
positions the image index, tile and ``(row, col)`` on that tile's patch grid. Each
image keeps its :class:`ImageGeometry`: the original size and, per tile, the box of
original pixels the tile's patch grid covers, so per-patch scores map back to a heat
map at the original image size. Layouts are always built from the model config and
the actual inputs (see :class:`LayoutBuilder`); nothing assumes 576 tokens or 24x24.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import LayoutError, ShapeMismatchError

MODALITIES = ("pad", "text", "image", "special")
PAD, TEXT, IMAGE, SPECIAL = range(4)


@dataclass
class Tile:
    """One patch grid of an image: ``grid=(rows, cols)``; ``box=(x0, y0, x1, y1)`` in
    original-image pixels (floats, may extend past the image when the processor padded)."""

    grid: tuple[int, int]
    box: tuple[float, float, float, float]
    name: str = "base"


@dataclass
class ImageGeometry:
    """Where image ``i`` lives: its batch row, original ``(H, W)`` and its tiles. In a stream whose
    rows are crops of the prompt's images (a VLM's ``vision``/``projector`` streams), ``source`` is
    the index of the original image the crop comes from (``None`` elsewhere)."""

    batch_row: int
    size: tuple[int, int]
    tiles: list[Tile] = field(default_factory=list)
    source: int | None = None


class TokenLayout:
    """Per-position description of a batch.

    Arrays (numpy, shape ``[B, T]``): ``modality`` (codes in :data:`MODALITIES`),
    ``image_index``, ``tile``, ``row``, ``col`` (``-1`` where not applicable).
    ``spans[name][b]`` holds the positions of a named span in row ``b``.
    """

    def __init__(self, modality, image_index, tile, row, col, images, spans):
        self.modality = np.asarray(modality, dtype=np.int8)
        self.image_index = np.asarray(image_index, dtype=np.int32)
        self.tile = np.asarray(tile, dtype=np.int32)
        self.row = np.asarray(row, dtype=np.int32)
        self.col = np.asarray(col, dtype=np.int32)
        self.images: list[ImageGeometry] = list(images)
        self.spans: dict[str, list[np.ndarray]] = spans

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple[int, int]:
        """``(B, T)``."""
        return tuple(self.modality.shape)  # type: ignore[return-value]

    @property
    def num_images(self) -> int:
        return len(self.images)

    def modalities(self, b: int = 0) -> list[str]:
        """Modality name of every position of row ``b`` (length ``T``)."""
        return [MODALITIES[c] for c in self.modality[b]]

    def counts(self, b: int = 0) -> dict[str, int]:
        """Number of positions per modality in row ``b``."""
        return {name: int((self.modality[b] == code).sum()) for code, name in enumerate(MODALITIES)}

    def _check_image(self, i: int) -> ImageGeometry:
        if not 0 <= i < len(self.images):
            raise LayoutError(f"image_index {i} out of range: this layout has {len(self.images)} image(s)")
        return self.images[i]

    def image_row(self, i: int) -> int:
        """Batch row holding image ``i``."""
        return self._check_image(i).batch_row

    def grid(self, i: int = 0, tile: int = 0) -> tuple[int, int]:
        """``(rows, cols)`` of tile ``tile`` (0 = base) of image ``i``."""
        g = self._check_image(i)
        if not 0 <= tile < len(g.tiles):
            raise LayoutError(f"tile {tile} out of range: image {i} has {len(g.tiles)} tile(s)")
        return g.tiles[tile].grid

    def image_positions(self, i: int = 0, tile: int | None = None) -> torch.Tensor:
        """Positions (LongTensor ``[n]``) of image ``i``'s patch tokens in its row, tile by
        tile, row-major within a tile. Newline/separator tokens are not included."""
        g = self._check_image(i)
        b = g.batch_row
        sel = (self.image_index[b] == i) & (self.modality[b] == IMAGE)
        if tile is not None:
            sel &= self.tile[b] == tile
        pos = np.nonzero(sel)[0]
        order = np.lexsort((self.col[b, pos], self.row[b, pos], self.tile[b, pos]))
        return torch.as_tensor(pos[order], dtype=torch.long)

    def span(self, name: str, b: int = 0) -> torch.Tensor:
        """Positions (LongTensor) of a named span in row ``b``: ``image[i]``, ``image``,
        ``text``, ``special``, ``prompt``, ``answer``, ``last`` or any span an adapter added."""
        m = re.fullmatch(r"image\[(\d+)\]", name)
        if m:
            i = int(m.group(1))
            if self.image_row(i) != b:
                raise LayoutError(f"image[{i}] is in batch row {self.image_row(i)}, not row {b}")
            return self.image_positions(i)
        if name in ("text", "image", "special", "pad"):
            code = MODALITIES.index(name)
            return torch.as_tensor(np.nonzero(self.modality[b] == code)[0], dtype=torch.long)
        if name not in self.spans:
            raise LayoutError(
                f"unknown span {name!r}; known: image[i], image, text, special, pad, {', '.join(sorted(self.spans))}"
            )
        return torch.as_tensor(self.spans[name][b], dtype=torch.long)

    def span_names(self) -> list[str]:
        return sorted(self.spans) + [f"image[{i}]" for i in range(self.num_images)]

    # ---------------------------------------------------------------- heatmaps
    def patch_scores(self, scores, image_index: int = 0) -> list[np.ndarray]:
        """Split ``scores`` into one ``[rows, cols]`` array per tile of image ``image_index``.

        ``scores`` may be: a length-``T`` vector over the image's row (image positions are
        picked out), a vector over the image's patches (all tiles concatenated in
        :meth:`image_positions` order), or a ``[rows, cols]`` array for a one-tile image.
        """
        g = self._check_image(image_index)
        s = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, np.float32)
        if not np.all(np.isfinite(s)):
            raise ShapeMismatchError("scores contain NaN or Inf")
        sizes = [r * c for r, c in (t.grid for t in g.tiles)]
        if s.ndim == 2 and len(g.tiles) == 1 and tuple(s.shape) == g.tiles[0].grid:
            return [s.astype(np.float32)]
        s = s.reshape(-1)
        T = self.shape[1]
        if s.size == T and s.size != sum(sizes):
            s = s[self.image_positions(image_index).numpy()]
        if s.size != sum(sizes):
            raise ShapeMismatchError(
                f"scores have {s.size} values; image {image_index} has {sum(sizes)} patches "
                f"(tiles {[t.grid for t in g.tiles]}) and rows have {T} positions"
            )
        out, k = [], 0
        for t, n in zip(g.tiles, sizes):
            out.append(s[k : k + n].reshape(t.grid).astype(np.float32))
            k += n
        return out

    def to_heatmap(self, scores, image_index: int = 0, tiles: str = "all") -> np.ndarray:
        """Map per-patch ``scores`` to a float32 heat map ``[H, W]`` at the original image size.

        Each tile's grid is bilinearly upsampled into its box; where tiles overlap (LLaVA-NeXT
        base image + high-resolution tiles) the maps are averaged. ``tiles="base"`` uses the
        base tile only. Pixels covered by no tile are 0.
        """
        g = self._check_image(image_index)
        grids = self.patch_scores(scores, image_index)
        H, W = g.size
        acc = np.zeros((H, W), np.float64)
        cnt = np.zeros((H, W), np.float64)
        use = range(1) if tiles == "base" else range(len(g.tiles))
        for k in use:
            t, grid = g.tiles[k], grids[k]
            x0, y0, x1, y1 = t.box
            bw, bh = max(int(round(x1 - x0)), 1), max(int(round(y1 - y0)), 1)
            up = torch.nn.functional.interpolate(
                torch.from_numpy(grid)[None, None], size=(bh, bw), mode="bilinear", align_corners=False
            )[0, 0].numpy()
            ix0, iy0 = int(round(x0)), int(round(y0))
            sx0, sy0 = max(0, -ix0), max(0, -iy0)
            dx0, dy0 = max(0, ix0), max(0, iy0)
            dx1, dy1 = min(W, ix0 + bw), min(H, iy0 + bh)
            if dx1 <= dx0 or dy1 <= dy0:
                continue
            acc[dy0:dy1, dx0:dx1] += up[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0]
            cnt[dy0:dy1, dx0:dx1] += 1
        return np.where(cnt > 0, acc / np.maximum(cnt, 1), 0.0).astype(np.float32)

    # ------------------------------------------------------------------- misc
    def repeat(self, n: int) -> "TokenLayout":
        """Layout of a batch made of each row repeated ``n`` times (``[B*n, T]``)."""
        rep = lambda a: np.repeat(a, n, axis=0)  # noqa: E731
        images = []
        for g in self.images:
            for k in range(n):
                images.append(ImageGeometry(g.batch_row * n + k, g.size, list(g.tiles), None if g.source is None else g.source * n + k))
        # image indices must follow the new numbering: image i of row b -> i*n + k
        idx = rep(self.image_index)
        k = np.tile(np.arange(n), self.shape[0])[:, None]
        idx = np.where(idx >= 0, idx * n + k, -1)
        spans = {name: [v for v in rows for _ in range(n)] for name, rows in self.spans.items()}
        return TokenLayout(rep(self.modality), idx, rep(self.tile), rep(self.row), rep(self.col), images, spans)

    def to_dict(self, b: int | None = None) -> dict:
        """JSON-ready summary: per-modality counts per row, and per image its row, size and tiles."""
        rows = range(self.shape[0]) if b is None else [b]
        return {
            "shape": list(self.shape),
            "counts": [self.counts(r) for r in rows],
            "images": [
                {
                    "batch_row": g.batch_row,
                    "size": list(g.size),
                    "num_positions": int(len(self.image_positions(i))),
                    **({"source": g.source} if g.source is not None else {}),
                    "tiles": [{"name": t.name, "grid": list(t.grid), "box": [float(v) for v in t.box]} for t in g.tiles],
                }
                for i, g in enumerate(self.images)
            ],
            "spans": {n: [list(map(int, self.spans[n][r])) for r in rows] for n in self.spans},
        }

    def __repr__(self) -> str:
        B, T = self.shape
        return f"TokenLayout(B={B}, T={T}, images={len(self.images)}, counts[0]={self.counts(0) if B else {}})"


class LayoutBuilder:
    """Builds a :class:`TokenLayout` row by row, segment by segment.

    >>> lb = LayoutBuilder(); lb.special(1); lb.image_grid(0, rows=2, cols=2); lb.text(3); lb.end_row()
    """

    def __init__(self):
        self._rows: list[dict[str, list]] = []
        self._spans: list[dict[str, list[int]]] = []
        self._images: dict[int, ImageGeometry] = {}
        self._new_row()

    def _new_row(self):
        self._rows.append({k: [] for k in ("modality", "image_index", "tile", "row", "col")})
        self._spans.append({})

    @property
    def _cur(self):
        return self._rows[-1]

    @property
    def pos(self) -> int:
        """Next position in the current row."""
        return len(self._cur["modality"])

    def _push(self, mod, n, img=-1, tile=-1, row=-1, col=-1, span: str | None = None):
        start = self.pos
        c = self._cur
        for _ in range(n):
            c["modality"].append(mod)
            c["image_index"].append(img)
            c["tile"].append(tile)
            c["row"].append(row)
            c["col"].append(col)
        if span:
            self.mark(span, range(start, start + n))

    def mark(self, name: str, positions) -> None:
        """Add ``positions`` of the current row to span ``name``."""
        self._spans[-1].setdefault(name, []).extend(int(p) for p in positions)

    def pad(self, n: int):
        self._push(PAD, n)

    def text(self, n: int, span: str | None = None):
        self._push(TEXT, n, span=span)

    def special(self, n: int = 1, span: str | None = None, image_index: int = -1):
        self._push(SPECIAL, n, img=image_index, span=span)

    def image_grid(self, image_index: int, rows: int, cols: int, tile: int = 0, newline_per_row: bool = False):
        """Patch tokens of one tile, row-major; optionally one newline token after each grid row."""
        for r in range(rows):
            for c in range(cols):
                self._push(IMAGE, 1, img=image_index, tile=tile, row=r, col=c)
            if newline_per_row:
                self._push(SPECIAL, 1, img=image_index, tile=tile, row=r)

    def patch(self, image_index: int, row: int, col: int, tile: int = 0):
        """One patch token at ``(row, col)`` of a tile's grid, for sequences whose patches are not
        row-major (Qwen's 2x2 merge blocks and attention windows)."""
        self._push(IMAGE, 1, img=image_index, tile=tile, row=row, col=col)

    def add_image(self, image_index: int, size: tuple[int, int], tiles: list[Tile], source: int | None = None):
        self._images[image_index] = ImageGeometry(len(self._rows) - 1, tuple(size), list(tiles), source)

    def end_row(self):
        self._new_row()

    def build(self, pad_side: str = "right", length: int | None = None) -> TokenLayout:
        rows = [r for r in self._rows if r["modality"]] or [self._rows[0]]
        spans_rows = self._spans[: len(rows)]
        T = max(len(r["modality"]) for r in rows) if length is None else length
        B = len(rows)
        arrs = {k: np.full((B, T), PAD if k == "modality" else -1, np.int32) for k in rows[0]}
        spans: dict[str, list[np.ndarray]] = {}
        names = set().union(*[s.keys() for s in spans_rows]) | {"last"}
        for name in names:
            spans[name] = []
        for b, r in enumerate(rows):
            n = len(r["modality"])
            if n > T:
                raise LayoutError(f"row {b} has {n} positions, more than the sequence length {T}")
            off = T - n if pad_side == "left" else 0
            for k, v in r.items():
                arrs[k][b, off : off + n] = v
            for name in names:
                if name == "last" and "last" not in spans_rows[b]:
                    spans[name].append(np.array([off + n - 1]))
                else:
                    spans[name].append(np.array(spans_rows[b].get(name, []), dtype=np.int64) + off)
        images = [self._images[i] for i in sorted(self._images)]
        if sorted(self._images) != list(range(len(images))):
            raise LayoutError(f"image indices must be 0..n-1, got {sorted(self._images)}")
        return TokenLayout(arrs["modality"], arrs["image_index"], arrs["tile"], arrs["row"], arrs["col"], images, spans)
