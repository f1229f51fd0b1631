"""Pruner base class, the registry and spec parsing (``"hybrid:0.25"``, ``"fastv:0.5:layer=2"``).

A pruner keeps ``keep`` (a fraction of the ``N`` image tokens, rounded) and either acts on the
vision side (``acts_on_vision``: :meth:`vision` returns the image features and which grid cells
enter the language model) or before language-model layers (:meth:`at_layer` returns a keep mask
``[B, T']`` or ``None``). Pruners that rank by the previous layer's attention say so in
:meth:`wants_attention`.
"""
from __future__ import annotations

import torch

from ..core.errors import PromptError

REGISTRY: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


class Pruner:
    name = "base"
    acts_on_vision = False

    def __init__(self, keep: float):
        keep = float(keep)
        if not 0.0 <= keep <= 1.0:
            raise PromptError(f"keep ratio must be in [0, 1], got {keep}")
        self.keep = keep

    def n_keep(self, n_image: int) -> int:
        """Image tokens left after pruning: ``round(keep * N)``."""
        return int(round(self.keep * n_image))

    def bind(self, runner) -> None:
        """Check the pruner against the model (layer range) before a run; may resolve defaults."""
        layer = getattr(self, "layer", 0)
        if not 0 <= layer < runner.L:
            from ..core.errors import LayerRangeError

            raise LayerRangeError(f"{self.name}: pruning layer {layer} is outside the language model's layers 0..{runner.L - 1}")

    def wants_attention(self, layer: int) -> bool:
        return False

    def at_layer(self, ctx) -> torch.Tensor | None:
        return None

    def vision(self, runner, batch):
        raise NotImplementedError

    def schedule(self, n_image: int, n_layers: int) -> list[int]:
        """Image tokens each LM layer computes (for FLOPs accounting), ``[L]``."""
        return [self.n_keep(n_image)] * n_layers

    def tower_schedule(self, n_image: int, n_tower_layers: int, feature_depth: int) -> list[int]:
        """Tokens (CLS included) each vision-tower layer computes, ``[n_tower_layers]``: the whole
        tower, as the model's own forward runs it (also the layers after the feature layer)."""
        return [n_image + 1] * n_tower_layers

    def __repr__(self) -> str:
        return f"{self.name}:{self.keep:g}"


def make_pruner(spec: str | Pruner, **kw) -> Pruner:
    """``"name:keep[:opt=value...]"`` or a pruner. Names: see ``REGISTRY``."""
    if isinstance(spec, Pruner):
        return spec
    from . import methods  # noqa: F401  (fills REGISTRY)

    parts = str(spec).split(":")
    name = parts[0].strip().lower()
    if name not in REGISTRY:
        raise PromptError(f"unknown pruning method {name!r}; choose from {sorted(REGISTRY)}")
    keep = float(parts[1]) if len(parts) > 1 and parts[1] else 0.25
    opts = dict(kw)
    for p in parts[2:]:
        if "=" not in p:
            raise PromptError(f"pruning option {p!r} in {spec!r} is not key=value")
        k, v = p.split("=", 1)
        for cast in (int, float, str):
            try:
                opts[k] = cast(v)
                break
            except ValueError:
                continue
    return REGISTRY[name](keep, **opts)


__all__ = ["Pruner", "REGISTRY", "register", "make_pruner"]
