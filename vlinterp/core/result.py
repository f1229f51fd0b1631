"""One result type for every method: arrays + the layout they index + meta.

``viz`` and ``metrics`` accept any :class:`Result` without knowing which method made it.
Saliency results hold ``scores``: ``[n_targets, n_patches]`` patch scores for one image
(patches in :meth:`TokenLayout.image_positions` order, all tiles), one row per target
(answer token, class, text, word).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import ShapeMismatchError
from .layout import TokenLayout


@dataclass
class Result:
    """``method``: registry name; ``arrays``: named numpy arrays; ``layout``: the layout whose
    positions/patches the arrays index; ``targets``: one label per row of ``scores``;
    ``image_index``: which image of the layout the patch scores belong to; ``meta``: JSON-able."""

    method: str
    arrays: dict[str, np.ndarray]
    layout: TokenLayout | None = None
    targets: list[str] = field(default_factory=list)
    image_index: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def scores(self) -> np.ndarray:
        """``[n_targets, n_patches]`` float32 patch scores."""
        return self.arrays["scores"]

    def patch_grid(self, target: int = 0, tile: int = 0) -> np.ndarray:
        """Scores of one target on one tile's grid ``[rows, cols]``."""
        return self.layout.patch_scores(self.scores[target], self.image_index)[tile]

    def heatmap(self, target: int = 0) -> np.ndarray:
        """``[H, W]`` float32 map of one target at the original image size."""
        if self.layout is None:
            raise ShapeMismatchError(f"{self.method} result has no layout to map patch scores to the image")
        return self.layout.to_heatmap(self.scores[target], self.image_index)

    def to_json(self) -> dict:
        """JSON-ready: method, targets, per-target patch scores (or all arrays), layout grid, meta."""
        g = self.layout.images[self.image_index] if self.layout is not None and self.layout.images else None
        out = {"method": self.method, "targets": list(self.targets)}
        if "scores" in self.arrays:
            out["scores"] = np.asarray(self.scores, np.float32).round(6).tolist()
        else:  # results without patch scores (tracing): every array, rounded
            out["arrays"] = {k: np.asarray(v, np.float64).round(8).tolist() for k, v in self.arrays.items()}
        out.update({"grid": [list(t.grid) for t in g.tiles] if g else None,
                    "image_size": list(g.size) if g else None, "meta": self.meta})
        return out

    def save(self, path: str) -> None:
        """Write ``path`` (``.json``) and ``path`` with ``.npz`` beside it, atomically; refuses
        (:class:`~vlinterp.core.errors.OutputError`, before writing either) to replace a file
        vlinterp did not write."""
        from .io import atomic_path, check_output_file

        base, _ = os.path.splitext(os.fspath(path))
        for suffix in (".npz", ".json"):
            check_output_file(base + suffix)
        with atomic_path(base + ".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **self.arrays)
        with atomic_path(base + ".json") as tmp:
            with open(tmp, "wb") as f:
                f.write(json.dumps(self.to_json(), indent=1).encode())
