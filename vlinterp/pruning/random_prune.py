"""Random pruning: a uniformly random ``keep`` fraction of the image tokens, before layer ``layer``
(default 0: they never enter the language model)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import ConfigError
from .base import Pruner


class RandomPruner(Pruner):
    """Options: ``keep``; ``layer`` (drop before this LM layer, 0 = never enter it); ``seed``
    (used when the run gives no generator)."""

    name = "random"

    @dataclass
    class Config(Pruner.Config):
        layer: int = 0
        seed: int = 0

        def validate(self) -> None:
            super().validate()
            if self.layer < 0:
                raise ConfigError(f"random: layer must be >= 0, got {self.layer}")

    def at_layer(self, ctx):
        if ctx.layer != self.layer:
            return None
        g = ctx.generator or torch.Generator(device="cpu").manual_seed(self.seed)
        scores = torch.rand(ctx.image.shape, generator=g).to(ctx.h.device)
        return ctx.keep_top(scores, self.n_keep(ctx.n_image))

    def schedule(self, n_image: int, n_layers: int) -> list[int]:
        k = self.n_keep(n_image)
        return [n_image if l < self.layer else k for l in range(n_layers)]
