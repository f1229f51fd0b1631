"""FastV (Chen et al. 2024): after layer ``layer - 1``, keep the image tokens that received the
most attention, averaged over heads and over every (non-padding) query position."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ConfigError
from .base import Pruner


def received_attention(attn, valid_q=None):
    """Mean attention each key receives ``[B, T']`` from ``attn`` ``[B, H, T', T']``."""
    a = attn.float().mean(1)
    if valid_q is not None:
        a = a * valid_q[:, :, None]
        return a.sum(1) / valid_q.sum(1, keepdim=True).clamp(min=1)
    return a.mean(1)


class FastV(Pruner):
    """Options: ``keep``; ``layer`` (>= 1): drop before this LM layer, ranking by the attention
    of layer ``layer - 1``."""

    name = "fastv"

    @dataclass
    class Config(Pruner.Config):
        layer: int = 2

        def validate(self) -> None:
            super().validate()
            if self.layer < 1:
                raise ConfigError("fastv ranks by a previous layer's attention: layer must be >= 1")

    def wants_attention(self, layer: int) -> bool:
        return layer == self.layer

    def at_layer(self, ctx):
        if ctx.layer != self.layer:
            return None
        return ctx.keep_top(received_attention(ctx.attn), self.n_keep(ctx.n_image))

    def schedule(self, n_image: int, n_layers: int) -> list[int]:
        k = self.n_keep(n_image)
        return [n_image if l < self.layer else k for l in range(n_layers)]
