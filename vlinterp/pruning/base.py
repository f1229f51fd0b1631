"""Pruner base class, the registry and spec parsing (``"hybrid:0.25"``, ``"fastv:0.5:layer=2"``,
``"visionzip[keep=0.25,tower_layer=3]"``).

A pruner keeps ``keep`` (a fraction of the ``N`` image tokens, rounded) and either acts on the
vision side (``acts_on_vision``: :meth:`vision` returns the image features and which grid cells
enter the language model) or before language-model layers (:meth:`at_layer` returns a keep mask
``[B, T']`` or ``None``). Pruners that rank by the previous layer's attention say so in
:meth:`wants_attention`.

Every method is a class with a nested ``@dataclass Config`` (subclassing :class:`Pruner.Config`,
which holds ``keep``), registered in :data:`PRUNERS` by one line below. Adding a method is one new
file with its class and one registration line here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..core.errors import ConfigError, LayerRangeError
from ..core.registry import Registry

PRUNERS = Registry("pruning method", {
    "random": "vlinterp.pruning.random_prune:RandomPruner",
    "fastv": "vlinterp.pruning.fastv:FastV",
    "visionzip": "vlinterp.pruning.visionzip:VisionZip",
    "info": "vlinterp.pruning.info:InfoPruner",
    "hybrid": "vlinterp.pruning.hybrid:HybridPruner",
})
REGISTRY = PRUNERS  # the name earlier releases exported


def check_ratio(name: str, value: float, what: str = "keep ratio") -> None:
    """:class:`ConfigError` unless ``0 <= value <= 1``."""
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name + ': ' if name else ''}{what} must be in [0, 1], got {value}")


class Pruner:
    """Base of every pruning method (see the module doc)."""

    name = "base"
    acts_on_vision = False

    @dataclass
    class Config:
        """``keep``: the fraction of image tokens kept, in [0, 1]."""

        keep: float = 0.25

        def validate(self) -> None:
            check_ratio("", self.keep)

    def __init__(self, keep: float | None = None, config=None, **opts):
        """``Pruner(config=Config(...))`` (what :data:`PRUNERS` builds) or ``Pruner(keep, **opts)``."""
        if config is None:
            if keep is not None:
                opts["keep"] = keep
            fields = {f.name for f in dataclasses.fields(self.Config)}
            unknown = sorted(set(opts) - fields)
            if unknown:
                raise ConfigError(f"{self.name}: unknown option(s) {', '.join(unknown)}; options: {', '.join(sorted(fields))}")
            config = self.Config(**opts)
            config.validate()
        self.config = config
        for f in dataclasses.fields(config):
            setattr(self, f.name, getattr(config, f.name))
        self.keep = float(self.keep)

    def n_keep(self, n_image: int) -> int:
        """Image tokens left after pruning: ``round(keep * N)``."""
        return int(round(self.keep * n_image))

    def bind(self, runner) -> None:
        """Check the pruner against the model (layer range) before a run; may resolve defaults."""
        layer = getattr(self, "layer", 0)
        if not 0 <= layer < runner.L:
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


def parse_pruner(spec: str) -> tuple[str, dict[str, str]]:
    """``"hybrid:0.25"``, ``"fastv:0.5:layer=2"``, ``"visionzip[keep=0.25,tower_layer=3]"`` ->
    ``(name, {option: "value"})``: a bare number right after the name is ``keep``. Unknown names
    raise :class:`~vlinterp.core.errors.UnknownNameError` (naming the nearest)."""
    s = str(spec).strip()
    if ":" in s and not (s.endswith("]") and "[" in s):
        name, rest = s.split(":", 1)
        first, _, more = rest.partition(":")
        if first.strip() and "=" not in first:
            s = f"{name}:keep={first.strip()}" + (f",{more}" if more else "")
    try:
        return PRUNERS.parse(s)
    except ConfigError as e:
        raise ConfigError(str(e).replace(repr(s), repr(str(spec)))) from None


def make_pruner(spec, **kw) -> Pruner:
    """A pruner from a spec (see :func:`parse_pruner`; ``keep`` defaults to 0.25) or pass one
    through; ``kw`` adds options (``horizon=4``). Bad options raise :class:`ConfigError`."""
    if isinstance(spec, Pruner):
        return spec
    name, opts = parse_pruner(spec)
    return PRUNERS.create(name, **{**opts, **kw})


__all__ = ["Pruner", "PRUNERS", "REGISTRY", "make_pruner", "parse_pruner", "check_ratio"]
