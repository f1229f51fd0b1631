"""The grounding probe's log-odds: does the image hold the object the words claim?

The patch probe of :mod:`vlinterp.steering.ground`, fitted on items instead of a split: one
one-vs-rest logistic probe per object name (plus background) on the image tokens' residual states
at ``blocks.{layer}.resid`` (default the middle LM layer), each patch labelled with the object that
covers at least ``cover`` of it (:func:`vlinterp.metrics.coverage.mask_coverage` of the items'
object masks or boxes), fitted with :func:`vlinterp.steering.probe.fit_logistic`. A claim's
presence log-odds is the probe's maximum over its image's patches for the claimed object,
``d = max_p (W x_p + b)[claim]``, clipped to ``[-clip, clip]`` (an object name the probe never saw:
``-clip``). The value is ``-d``: ``[B, 1]``, higher = more likely hallucinated.

``W`` ``[K + 1, D]``, ``b`` ``[K + 1]`` over :attr:`GroundingProbe.names` (``K`` object names;
the last row: background).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, LayerRangeError
from .base import Detector


def image_patches(layout, k: int):
    """``[(positions [P_t], tile)]`` of image ``k``, one entry per tile."""
    g = layout.images[k]
    return [(layout.image_positions(k, tile=t), tile) for t, tile in enumerate(g.tiles)]


class GroundingProbe(Detector):
    name = "ground"
    per_layer = False
    trained = True

    @dataclass
    class Config:
        """``layer``: the LM residual layer read (``None``: the middle one); ``cover``: a patch is an
        object's when it covers that share of it; ``clip``: log-odds bound; ``max_images``: at most
        that many distinct fit images (the first ones); ``steps``: L-BFGS iterations of the fit."""

        layer: int | None = None
        cover: float = 0.15
        clip: float = 8.0
        max_images: int = 1024
        steps: int = 300

        def validate(self):
            if not 0 < self.cover <= 1:
                raise ConfigError(f"ground: cover must be in (0, 1], got {self.cover}")
            if self.clip <= 0:
                raise ConfigError(f"ground: clip must be positive, got {self.clip}")
            if self.max_images < 1 or self.steps < 1:
                raise ConfigError("ground: max_images and steps must be positive")

    def __init__(self, config=None, **opts):
        super().__init__(config, **opts)
        self.W: torch.Tensor | None = None
        self.b: torch.Tensor | None = None
        self.names: list[str] = []
        self.layer: int | None = None

    def _layer(self, adapter) -> int:
        L = adapter.num_layers("lm")
        layer = L // 2 if self.config.layer is None else int(self.config.layer)
        if not -L <= layer < L:
            raise LayerRangeError(f"ground: layer {layer} out of range (0..{L - 1})")
        return layer % L

    def sites(self, adapter) -> list[str]:
        return [f"blocks.{self.layer if self.layer is not None else self._layer(adapter)}.resid"]

    def text_sites(self, adapter) -> list[str]:
        return []

    # --------------------------------------------------------------------- fit
    @torch.no_grad()
    def patch_states(self, adapter, items, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Image-token states ``[N, D]`` of ``items`` (with their prompts) and labels ``[N]`` (index
        into :attr:`names`; ``len(names)``: background)."""
        from tqdm.auto import tqdm

        from ..metrics.coverage import mask_coverage

        site = f"blocks.{self.layer}.resid"
        index = {n: i for i, n in enumerate(self.names)}
        X, y = [], []
        for i in tqdm(range(0, len(items), 16), desc="ground: probe states", disable=not progress):
            ch = items[i:i + 16]
            b = adapter.prepare(images=[it.image for it in ch], text=[it.prompt or "describe the image." for it in ch])
            h = adapter.run(b, capture=[site]).cache[site]
            for k, it in enumerate(ch):
                row = b.layout.image_row(k)
                masks = [o.box_mask(it.size) for o in it.objects]
                for pos, tile in image_patches(b.layout, k):
                    X.append(h[row, pos.to(h.device)].float().cpu())
                    cov = mask_coverage(masks, it.size, tile.grid, tile.box).reshape(len(masks), -1)
                    lab = np.full(cov.shape[1], len(self.names))
                    if len(masks):
                        best = cov.argmax(0)
                        hit = cov.max(0) >= self.config.cover
                        lab[hit] = [index[it.objects[j].name] for j in best[hit]]
                    y.append(torch.as_tensor(lab, dtype=torch.long))
        return torch.cat(X), torch.cat(y)

    def fit(self, adapter, claims, progress: bool = False, values=None) -> "GroundingProbe":
        """Fit the probe on the images of ``claims`` (any items with images and objects; each image
        once, by item id). Labels of the claims are not used."""
        from ..steering.probe import fit_logistic

        self.check(adapter)
        self.layer = self._layer(adapter)
        seen, items = set(), []
        for it in claims:
            key = it.id or id(it.image)
            if it.image is None or key in seen:
                continue
            seen.add(key)
            items.append(it)
            if len(items) >= self.config.max_images:
                break
        self.names = sorted({o.name for it in items for o in it.objects})
        if not items or not self.names:
            raise DataError("ground: the fit items need images with objects (names and masks or boxes)")
        X, y = self.patch_states(adapter, items, progress)
        if len(torch.unique(y)) < 2:
            raise DataError("ground: the fit images need patches of objects and of background")
        W, b = fit_logistic(X, torch.nn.functional.one_hot(y, len(self.names) + 1).float(), steps=self.config.steps)
        self.W, self.b = W, b
        self.meta.update(fit_images=len(items), patches=int(len(y)), layer=self.layer, objects=len(self.names))
        return self

    # ------------------------------------------------------------------- score
    def log_odds(self, states: torch.Tensor) -> torch.Tensor:
        """``[K]`` presence log-odds of every object name from one image's patch states ``[P, D]``."""
        z = torch.addmm(self.b.to(states.device), states.float(), self.W.T.to(states.device))
        return z[:, :-1].max(0).values

    def read(self, run, text_run) -> np.ndarray:
        from .base import claim_name

        if self.W is None:
            raise ConfigError("ground: fit the probe first (detector.fit(adapter, items))")
        h = run.cache[f"blocks.{self.layer}.resid"]
        index = {n: i for i, n in enumerate(self.names)}
        clip = self.config.clip
        out = []
        for r, c in enumerate(run.claims):
            pos = torch.cat([p for p, _ in image_patches(run.batch.layout, r)])
            d = self.log_odds(h[run.batch.layout.image_row(r), pos.to(h.device)])
            j = index.get(claim_name(c))
            v = -clip if j is None else float(d[j].clamp(-clip, clip))
            out.append([-v])
        return np.asarray(out)
