"""Hybrid pruning (the information-horizon recipe, arXiv 2512.07580): informed pruning early, random
pruning beyond the information horizon, where token information has become uniform and ranking
no longer helps.

The informed stage ``early`` is ``"visionzip"`` (default: vision side, before the language model,
with proportional attention) or ``"info"`` (the information proxy before layer ``layer``); it keeps
``keep`` of the image tokens. Before layer ``horizon`` a random ``deep`` fraction of those stays.

``horizon=None`` takes the horizon the information curve gives (:func:`information.horizon_for`,
measured once per model on shapes probe items). A horizon at or past the last layer means token
information never vanishes inside the model: then there is no random stage and the hybrid is its
informed stage alone. ``keep=1`` drops nothing (no random stage either). ``tower_layer`` goes to
the VisionZip stage (select inside the vision tower, see :mod:`.visionzip`).
"""
from __future__ import annotations

import torch

from .base import Pruner, register
from .info import InfoPruner
from .visionzip import VisionZip

EARLY = ("visionzip", "info")


@register("hybrid")
class HybridPruner(Pruner):
    def __init__(self, keep: float, early: str = "visionzip", layer: int = 2, horizon: int | None = None, deep: float = 0.5,
                 seed: int = 0, proxy: str = "combined", tower_layer: int | None = None):
        super().__init__(keep)
        if early not in EARLY:
            raise ValueError(f"hybrid: early stage must be one of {EARLY}, got {early!r}")
        self.early_name = early
        self.early = VisionZip(keep, tower_layer=tower_layer) if early == "visionzip" else InfoPruner(keep, layer, proxy)
        self.acts_on_vision = self.early.acts_on_vision
        self.layer = 0 if early == "visionzip" else int(layer)
        self.horizon = None if horizon is None else int(horizon)
        self.deep, self.seed = float(deep), int(seed)

    def bind(self, runner) -> None:
        super().bind(runner)
        if self.horizon is None:
            from .information import horizon_for

            self.horizon = horizon_for(runner.adapter)

    def _deep_layer(self) -> int | None:
        if self.keep >= 1 or self.horizon is None:
            return None
        return max(self.horizon, self.layer + 1)

    def wants_attention(self, layer: int) -> bool:
        return self.early.wants_attention(layer)

    def vision(self, runner, batch):
        return self.early.vision(runner, batch)

    def at_layer(self, ctx):
        if not self.acts_on_vision and ctx.layer == self.layer:
            return self.early.at_layer(ctx)
        if ctx.layer == self._deep_layer():
            n_now = int(ctx.image[0].sum())
            g = ctx.generator or torch.Generator(device="cpu").manual_seed(self.seed)
            return ctx.keep_top(torch.rand(ctx.image.shape, generator=g).to(ctx.h.device), int(round(self.deep * n_now)))
        return None

    def tower_schedule(self, n_image: int, n_tower_layers: int, feature_depth: int) -> list[int]:
        return self.early.tower_schedule(n_image, n_tower_layers, feature_depth)

    def schedule(self, n_image: int, n_layers: int) -> list[int]:
        k = self.n_keep(n_image)
        d = self._deep_layer()
        return [n_image if l < self.layer else (int(round(self.deep * k)) if d is not None and l >= d else k) for l in range(n_layers)]
