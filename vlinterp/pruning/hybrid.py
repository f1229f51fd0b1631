"""Hybrid pruning (the information-horizon recipe, arXiv 2512.07580): informed pruning in shallow
layers (the :mod:`info` proxy before layer ``layer``, down to ``keep``), random pruning beyond the
information horizon (before layer ``horizon``, a further ``deep`` fraction of the image tokens is
kept at random), where token information has become uniform and ranking no longer helps.

``horizon=None`` takes the horizon the information curve gives (:func:`information.horizon_for`,
measured once per model on shapes probe items). A horizon at or past the last layer means token
information never vanishes inside the model: then there is no random stage and the hybrid is the
informed pruner alone. ``keep=1`` drops nothing (no random stage either)."""
from __future__ import annotations

import torch

from .base import register
from .info import InfoPruner


@register("hybrid")
class HybridPruner(InfoPruner):
    def __init__(self, keep: float, layer: int = 2, horizon: int | None = None, deep: float = 0.5, seed: int = 0,
                 proxy: str = "combined"):
        super().__init__(keep, layer, proxy)
        self.horizon = None if horizon is None else int(horizon)
        self.deep, self.seed = float(deep), int(seed)

    def bind(self, runner) -> None:
        super().bind(runner)
        if self.horizon is None:
            from .information import horizon_for

            self.horizon = horizon_for(runner.adapter)

    def at_layer(self, ctx):
        if ctx.layer == self.layer:
            return super().at_layer(ctx)
        if self.keep < 1 and self.horizon is not None and ctx.layer == max(self.horizon, self.layer + 1):
            n_now = int(ctx.image[0].sum())
            g = ctx.generator or torch.Generator(device="cpu").manual_seed(self.seed)
            return ctx.keep_top(torch.rand(ctx.image.shape, generator=g).to(ctx.h.device), int(round(self.deep * n_now)))
        return None

    def schedule(self, n_image: int, n_layers: int) -> list[int]:
        k = self.n_keep(n_image)
        h = None if self.horizon is None or self.keep >= 1 else max(self.horizon, self.layer + 1)
        return [n_image if l < self.layer else (int(round(self.deep * k)) if h is not None and l >= h else k) for l in range(n_layers)]
