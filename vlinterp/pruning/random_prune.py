"""Random pruning: a uniformly random ``keep`` fraction of the image tokens, before layer ``layer``
(default 0: they never enter the language model)."""
from __future__ import annotations

import torch

from .base import Pruner, register


@register("random")
class RandomPruner(Pruner):
    def __init__(self, keep: float, layer: int = 0, seed: int = 0):
        super().__init__(keep)
        self.layer, self.seed = int(layer), int(seed)

    def at_layer(self, ctx):
        if ctx.layer != self.layer:
            return None
        g = ctx.generator or torch.Generator(device="cpu").manual_seed(self.seed)
        scores = torch.rand(ctx.image.shape, generator=g).to(ctx.h.device)
        return ctx.keep_top(scores, self.n_keep(ctx.n_image))

    def schedule(self, n_image: int, n_layers: int) -> list[int]:
        k = self.n_keep(n_image)
        return [n_image if l < self.layer else k for l in range(n_layers)]
