"""Hybrid pruning (the information-horizon recipe, arXiv 2512.07580): informed pruning early, random
pruning beyond the information horizon, where token information has become uniform and ranking
no longer helps.

The informed stage ``early`` is ``"visionzip"`` (default: vision side, before the language model,
with proportional attention) or ``"info"`` (the information proxy before layer ``layer``); it keeps
``keep`` of the image tokens. Before layer ``horizon`` a random ``deep`` fraction of those stays.

``horizon=None`` takes the horizon the information curve gives, measured for this model beforehand
(:func:`.information.horizon_for` on items, or :func:`vlinterp.eval.prune.horizon_for` on shapes
probe items, as the CLI does); an unmeasured model raises :class:`ConfigError`. A horizon at or past the last layer means token
information never vanishes inside the model: then there is no random stage and the hybrid is its
informed stage alone. ``keep=1`` drops nothing (no random stage either). ``tower_layer`` goes to
the VisionZip stage (select inside the vision tower, see :mod:`.visionzip`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..core.errors import ConfigError
from .base import Pruner, check_ratio
from .info import InfoPruner, Proxy
from .visionzip import VisionZip

EARLY = ("visionzip", "info")


class HybridPruner(Pruner):
    """Options: ``keep``; ``early`` (``visionzip`` or ``info``); ``layer`` (the ``info`` stage's
    layer); ``horizon`` (the random stage's layer; ``None``: the model's measured horizon);
    ``deep`` (share of the early stage's tokens the random stage keeps); ``seed``; ``proxy`` (the
    ``info`` stage's); ``tower_layer`` (the ``visionzip`` stage's)."""

    name = "hybrid"

    @dataclass
    class Config(Pruner.Config):
        early: Literal["visionzip", "info"] = "visionzip"
        layer: int = 2
        horizon: int | None = None
        deep: float = 0.5
        seed: int = 0
        proxy: Proxy = "combined"
        tower_layer: int | None = None

        def validate(self) -> None:
            super().validate()
            if self.early not in EARLY:
                raise ConfigError(f"hybrid: early stage must be one of {', '.join(EARLY)}, got {self.early!r}")
            check_ratio("hybrid", self.deep, "deep")
            if self.horizon is not None and self.horizon < 0:
                raise ConfigError(f"hybrid: horizon must be a layer (>= 0), got {self.horizon}")

    def __init__(self, keep: float | None = None, config=None, **opts):
        super().__init__(keep, config, **opts)
        c = self.config
        self.early_name = c.early
        self.early = (VisionZip(config=VisionZip.Config(keep=c.keep, tower_layer=c.tower_layer)) if c.early == "visionzip"
                      else InfoPruner(config=InfoPruner.Config(keep=c.keep, layer=c.layer, proxy=c.proxy)))
        self.early.config.validate()
        self.acts_on_vision = self.early.acts_on_vision
        self.layer = 0 if c.early == "visionzip" else int(c.layer)

    def bind(self, runner) -> None:
        super().bind(runner)
        if self.horizon is None:
            from .information import known_horizon

            self.horizon = known_horizon(runner.adapter)
            if self.horizon is None:
                raise ConfigError("hybrid needs its horizon layer: give horizon=L, or measure it first with "
                                  "vlinterp.eval.prune.horizon_for(adapter) (`vlinterp prune info` prints it)")
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
