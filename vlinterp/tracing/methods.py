"""The tracing methods behind one registry, :data:`TRACING_METHODS` (``Registry("tracing method")``):

- ``causal``: activation patching (ROME / FCCT, :func:`~vlinterp.tracing.trace`);
- ``knockout``: attention knockout of ``FROM:TO`` edges per layer window (:func:`~vlinterp.tracing.knockout.knockout`);
- ``dla``: direct logit attribution per layer, component and head (:func:`~vlinterp.tracing.dla.dla`);
- ``relp``: relevance patching, tracing's cells scored by LRP relevance (:func:`~vlinterp.tracing.relp.relp`);
- ``parts``: tracing of the last token's attention output by the keys it reads, image / text / whole
  (:func:`~vlinterp.tracing.parts.attention_parts`).

Each entry has a dataclass ``Config`` (its options) and ``run(adapter, batch, target, object_mask=None,
object_positions=None, corruption=None, progress=False) -> Result``; ``TRACING_METHODS.create("relp",
samples=2).run(...)`` or from a CLI spec ``TRACING_METHODS.parse("knockout:edges=image:last")``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ConfigError
from ..core.registry import Registry

TRACING_METHODS = Registry("tracing method", {
    "causal": "vlinterp.tracing.methods:Causal",
    "knockout": "vlinterp.tracing.methods:Knockout",
    "dla": "vlinterp.tracing.methods:DLA",
    "relp": "vlinterp.tracing.methods:RelP",
    "parts": "vlinterp.tracing.methods:Parts",
})


def _window(window: int, mode: str) -> None:
    from .trace import WINDOW_MODES

    if int(window) < 1:
        raise ConfigError(f"window must be >= 1, got {window}")
    if mode not in WINDOW_MODES:
        raise ConfigError(f"window_mode must be one of {', '.join(WINDOW_MODES)}, got {mode!r}")


class TracingMethod:
    """Base: options in ``self.config`` (the class's ``Config``)."""

    name = "base"
    uses_corruption = False

    @dataclass
    class Config:
        def validate(self) -> None:
            pass

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()
        if hasattr(self.config, "validate"):
            self.config.validate()

    def run(self, adapter, batch, target, object_mask=None, object_positions=None, corruption=None, progress=False):
        raise NotImplementedError


@dataclass
class CellGrid:
    """The cells a patching method scores (causal tracing and RelP share them): ``components`` x layer
    windows (``window``, ``window_mode``) x position groups (``positions``), ``samples`` noise draws
    from ``seed``."""

    components: tuple[str, ...] = ("attn", "mlp", "resid")
    positions: str = "groups"
    window: int = 1
    window_mode: str = "rome"
    samples: int = 3
    seed: int = 0

    def validate(self) -> None:
        _window(self.window, self.window_mode)
        if self.samples < 1:
            raise ConfigError("samples must be >= 1")


class Causal(TracingMethod):
    """Activation patching: restore one component's clean output per (layer window, position group)."""

    name = "causal"
    uses_corruption = True

    @dataclass
    class Config(CellGrid):
        batch_size: int = 32

        def validate(self) -> None:
            super().validate()
            if self.batch_size < 1:
                raise ConfigError("samples and batch_size must be >= 1")

    def run(self, adapter, batch, target, object_mask=None, object_positions=None, corruption=None, progress=False):
        from .trace import trace

        c = self.config
        return trace(adapter, batch, target, components=c.components, positions=c.positions, window=c.window,
                     window_mode=c.window_mode, samples=c.samples, seed=c.seed, object_mask=object_mask,
                     object_positions=object_positions, corruption=corruption, batch_size=c.batch_size, progress=progress)


class Knockout(TracingMethod):
    """Attention knockout: block ``edges`` (``FROM:TO`` joined by ``+``) over each layer window."""

    name = "knockout"

    @dataclass
    class Config:
        edges: tuple[str, ...] = ("image:last", "image:question", "question:last")
        window: int = 1
        window_mode: str = "rome"
        batch_size: int = 32

        def validate(self) -> None:
            from .knockout import parse_edges

            parse_edges(list(self.edges))
            _window(self.window, self.window_mode)
            if self.batch_size < 1:
                raise ConfigError("batch_size must be >= 1")

    def run(self, adapter, batch, target, object_mask=None, object_positions=None, corruption=None, progress=False):
        from .knockout import knockout

        c = self.config
        return knockout(adapter, batch, target, edges=list(c.edges), window=c.window, window_mode=c.window_mode,
                        object_mask=object_mask, object_positions=object_positions, batch_size=c.batch_size, progress=progress)


class DLA(TracingMethod):
    """Direct logit attribution of ``logit[target] - logit[foil]`` (foil: the runner-up when empty)."""

    name = "dla"

    @dataclass
    class Config:
        foil: str = ""
        heads: bool = True

    def run(self, adapter, batch, target, object_mask=None, object_positions=None, corruption=None, progress=False):
        from .dla import dla

        return dla(adapter, batch, target, foil=self.config.foil or None, heads=self.config.heads)


class RelP(TracingMethod):
    """Relevance patching: tracing's cells scored by LRP relevance (``rules=attnlrp``: AttnLRP's
    attention rules; ``rules=none``: attribution patching)."""

    name = "relp"
    uses_corruption = True

    @dataclass
    class Config(CellGrid):
        metric: str = "prob"
        rules: str = "lrp"
        steps: int = 1  # points on the corrupted-to-clean path (1: RelP as published; 4: integrated)

        def validate(self) -> None:
            from .lrp import RULES
            from .relp import METRICS

            super().validate()
            if self.steps < 1:
                raise ConfigError(f"relp steps must be at least 1, got {self.steps}")
            if self.metric not in METRICS:
                raise ConfigError(f"relp metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
            if self.rules not in RULES:
                raise ConfigError(f"relp rules must be one of {', '.join(RULES)}, got {self.rules!r}")

    def run(self, adapter, batch, target, object_mask=None, object_positions=None, corruption=None, progress=False):
        from .relp import relp

        c = self.config
        return relp(adapter, batch, target, components=c.components, positions=c.positions, window=c.window,
                    window_mode=c.window_mode, samples=c.samples, seed=c.seed, object_mask=object_mask,
                    object_positions=object_positions, corruption=corruption, metric=c.metric, rules=c.rules,
                    steps=c.steps, progress=progress)


class Parts(TracingMethod):
    """Restore only the part of the last token's attention output that reads the image / text keys."""

    name = "parts"
    uses_corruption = True

    @dataclass
    class Config:
        samples: int = 3
        seed: int = 0

        def validate(self) -> None:
            if self.samples < 1:
                raise ConfigError("samples must be >= 1")

    def run(self, adapter, batch, target, object_mask=None, object_positions=None, corruption=None, progress=False):
        from .parts import attention_parts

        c = self.config
        return attention_parts(adapter, batch, target, samples=c.samples, seed=c.seed, corruption=corruption, progress=progress)


__all__ = ["TRACING_METHODS", "TracingMethod", "Causal", "Knockout", "DLA", "RelP", "Parts"]
