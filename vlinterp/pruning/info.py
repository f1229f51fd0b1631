"""Information-metric pruning: keep the image tokens with the largest estimated information
(how much the output would change without them), estimated cheaply before layer ``layer``.

Cheap proxies, read from the previous layer: ``contribution`` (:func:`contribution`), the norm of
what each token writes into the last position through attention,
``|| sum_h a_h[last, i] W_o,h v_h,i ||`` (question-specific); ``attention``, the attention it
receives averaged over all queries (FastV's score, global); ``combined`` (default), the sum of the
two ranks among the image tokens. :mod:`vlinterp.pruning.information` measures the exact value by
removal and how well each proxy ranks tokens against it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..core.attention import key_writes
from ..core.errors import ConfigError
from .base import Pruner


def contribution(attn: torch.Tensor, attn_in: torch.Tensor, self_attn, query: int = -1) -> torch.Tensor:
    """``[B, T']`` norm of each key's write into position ``query`` of one attention layer.

    ``attn`` ``[B, H, T', T']`` probabilities, ``attn_in`` ``[B, T', D]`` the normed layer input,
    ``self_attn`` a transformers attention module with ``v_proj``/``o_proj``."""
    return key_writes(attn, attn_in, self_attn, query).float().norm(dim=-1)


def _image_rank(scores: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Rank ``[B, T']`` of each image token's score among the row's image tokens (0 = lowest)."""
    s = scores.float().masked_fill(~image, float("-inf"))
    return s.argsort(1).argsort(1).float()


def proxy_scores(ctx, proxy: str = "combined") -> torch.Tensor:
    """``[B, T']`` information proxy of each position from a :class:`~.runner.LayerCtx` that holds
    the previous layer's attention."""
    from .fastv import received_attention

    if proxy == "attention":
        return received_attention(ctx.attn)
    if proxy == "last_attention":
        return ctx.attn[:, :, -1, :].float().mean(1)
    c = contribution(ctx.attn, ctx.attn_in, ctx.prev_attn)
    if proxy == "contribution":
        return c
    if proxy == "combined":
        return _image_rank(c, ctx.image) + _image_rank(received_attention(ctx.attn), ctx.image)
    from ..core.errors import UnknownNameError

    raise UnknownNameError("information proxy", proxy, PROXIES)


PROXIES = ("attention", "last_attention", "contribution", "combined")
Proxy = Literal["attention", "last_attention", "contribution", "combined"]


class InfoPruner(Pruner):
    """Options: ``keep``; ``layer`` (>= 1): drop before this LM layer; ``proxy``: one of
    :data:`PROXIES`."""

    name = "info"

    @dataclass
    class Config(Pruner.Config):
        layer: int = 2
        proxy: Proxy = "combined"

        def validate(self) -> None:
            super().validate()
            if self.layer < 1:
                raise ConfigError("info: the information proxy reads a previous layer: layer must be >= 1")
            if self.proxy not in PROXIES:
                raise ConfigError(f"info: proxy must be one of {', '.join(PROXIES)}, got {self.proxy!r}")

    def wants_attention(self, layer: int) -> bool:
        return layer == self.layer

    def scores(self, ctx) -> torch.Tensor:
        return proxy_scores(ctx, self.proxy)

    def at_layer(self, ctx):
        if ctx.layer != self.layer:
            return None
        return ctx.keep_top(self.scores(ctx), self.n_keep(ctx.n_image))

    def schedule(self, n_image: int, n_layers: int) -> list[int]:
        k = self.n_keep(n_image)
        return [n_image if l < self.layer else k for l in range(n_layers)]
