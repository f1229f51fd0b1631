"""Intermediate Representation Injection (IRI): reinforce the visual object information that
causal tracing shows flowing through the last token.

Fit (:meth:`IRI.fit`) on presence questions whose answer is "yes": trace the attention and MLP
outputs at the last token (:func:`vlinterp.tracing.trace`, image noise) for that answer, rank layers
by mean recovery rate (RR), take the top ``n_sources`` layers per component as sources (weights
proportional to RR) and that component's top ``n_targets`` later layers as targets, then pick the
strength ``lam`` from a grid on calibration yes/no items (:func:`.select.best_accuracy`).

Apply (:meth:`IRI.edits`, :meth:`IRI.applied`): in every forward (each decoding step
included) the sources' outputs at the last position ``a_s`` ``[B, D]`` are kept, and at each
target of component ``c`` the output ``x`` at the last position becomes
``(x + lam * sum_s w_s a_s) * |x| / |x + lam * sum_s w_s a_s|`` (norm-preserving), the sum over
the earlier sources of component ``c`` (of any component when ``c`` has none; ``resid`` targets
take every earlier source), weights renormalised to sum to 1. One edit per site, so generation cost is a few hooks.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, LayerRangeError, ShapeMismatchError
from .base import SteeringMethod, progress_bar
from .common import last_index, last_position

LAMBDAS = (0.25, 0.5, 1.0, 2.0, 4.0)
COMPONENTS = ("attn", "mlp", "resid")


class IRI(SteeringMethod):
    """``sources``: ``[(component, layer, weight)]``; ``targets``: ``[(component, layer)]``; the
    strength ``config.lam``; ``meta``: the calibration numbers."""

    name = "iri"
    strengths = ("lam",)
    needs = ("presence",)

    @dataclass
    class Config:
        """``lam``: injection strength (``"auto"``: the grid value of ``lambdas`` with the best
        calibration accuracy on the adversarial yes/no items whose other groups' accuracy drops by at
        most ``max_random_drop``); ``n_sources`` / ``n_targets`` per component; ``samples``: noise
        samples per traced question."""

        lam: float | Literal["auto"] = "auto"
        lambdas: tuple[float, ...] = LAMBDAS
        n_sources: int = 1
        n_targets: int = 1
        samples: int = 2
        max_random_drop: float = 0.01

        def validate(self):
            if self.n_sources < 1 or self.n_targets < 1 or self.samples < 1:
                raise ConfigError("IRI: n_sources, n_targets and samples must be at least 1")

    def __init__(self, sources, targets, config=None, meta: dict | None = None, **opts):
        super().__init__(config, meta, **opts)
        self.sources = [(str(c), int(l), float(w)) for c, l, w in sources]
        self.targets = [(str(c), int(l)) for c, l in targets]
        if not self.sources or not self.targets:
            raise ConfigError("IRI needs at least one source and one target layer")
        for c, _ in [(c, l) for c, l, _ in self.sources] + self.targets:
            if c not in COMPONENTS:
                raise ConfigError(f"IRI components are attn, mlp or resid (targets), got {c!r}")
        for c, l in self.targets:
            if not any(sl < l for _, sl, _ in self.sources):
                raise LayerRangeError(f"IRI target {c}@{l} has no source layer before it (sources {self.sources})")

    @property
    def lam(self) -> float:
        return self.config.lam

    # -------------------------------------------------------------- applying
    def check(self, adapter) -> None:
        super().check(adapter)
        L = adapter.num_layers("lm")
        for c, l in [(c, l) for c, l, _ in self.sources] + self.targets:
            if not 0 <= l < L:
                raise LayerRangeError(f"IRI layer {l} out of range: the language model has {L} layers (0..{L - 1})")

    def edits(self, adapter) -> dict:
        """``{site: fn}`` for :meth:`Adapter.edits` / ``run(edits=...)``."""
        self.check(adapter)
        lam = float(self.config.lam)
        kept: dict[str, torch.Tensor] = {}  # site -> last-position state [B, 1, D]

        def last_at(t, layout):  # index of each row's last prompt position: shared (a view) or a gather per row
            j = last_position(t, layout)
            return (slice(None), j) if j is not None else \
                (torch.arange(t.shape[0], device=t.device), last_index(t, layout).to(t.device))

        def keep(site):
            def fn(t, layout):
                if t.shape[1] == 1:  # decoding step: the one position is the last; keep the view as is
                    kept[site] = t
                    return t
                kept[site] = t[last_at(t, layout)][:, None]
                return t

            return fn

        def inject(comp, layer):
            same = [(c, l, w) for c, l, w in self.sources if c == comp and l < layer] or \
                   [(c, l, w) for c, l, w in self.sources if l < layer]
            total = sum(w for _, _, w in same) or 1.0
            srcs = [(f"blocks.{l}.{c}", w / total) for c, l, w in same]
            one = srcs[0][0] if len(srcs) == 1 else None

            def fn(t, layout):
                try:
                    v = kept[one] if one is not None else sum(w * kept[s] for s, w in srcs)  # one source: weight 1
                except KeyError:
                    raise ShapeMismatchError("IRI: a source layer did not run before its target") from None
                if t.shape[1] == 1:  # decoding step, once per token per target: as few distinct ops as we can
                    # in situ each op costs ~7 us here (cold after the layer's matmuls), so the
                    # fewest ops win: numpy, an rms form or one stacked norm measured slower
                    y = torch.add(t, v, alpha=lam)
                    return y.mul_(torch.linalg.vector_norm(t, dim=-1, keepdim=True).div_(
                        torch.linalg.vector_norm(y, dim=-1, keepdim=True).clamp_min_(1e-12)))
                at = last_at(t, layout)
                x = t[at]
                y = x + lam * v[:, 0].to(x.dtype)
                y = y * (x.norm(dim=-1, keepdim=True) / y.norm(dim=-1, keepdim=True).clamp_min(1e-12))
                t = t.clone()
                t[at] = y
                return t

            return fn

        out = {f"blocks.{l}.{c}": keep(f"blocks.{l}.{c}") for c, l, _ in self.sources}
        for c, l in self.targets:
            site = f"blocks.{l}.{c}"
            if site in out:
                raise LayerRangeError(f"{site} is both an IRI source and a target")
            out[site] = inject(c, l)
        return out

    # ------------------------------------------------------------------- io
    def state(self) -> dict:
        return {"sources": [list(x) for x in self.sources], "targets": [list(x) for x in self.targets]}

    @classmethod
    def from_saved(cls, tensors, state, config, meta) -> "IRI":
        return cls([tuple(x) for x in state["sources"]], [tuple(x) for x in state["targets"]], config, meta)

    # ------------------------------------------------------------------ fit
    @staticmethod
    def layer_rr(adapter, items, samples: int = 2, progress: bool = False) -> dict[str, np.ndarray]:
        """Mean RR ``{component: [n_layers]}`` of the attention / MLP output at the last token for the
        answer ``"yes"``, over ``items`` (presence questions whose answer is yes)."""
        from ..tracing import trace

        rr = []
        bar = progress_bar(progress, len(items), "fitting iri: tracing")
        for it in items:
            b = adapter.prepare(images=[it.image], text=[it.prompt])
            last = b.layout.span("last", 0).tolist()
            r = trace(adapter, b, "yes", components=("attn", "mlp"), positions={"last": last}, samples=samples)
            rr.append(r.arrays["rr"][:, :, 0])
            bar.update(1)
        bar.close()
        m = np.mean(rr, 0)
        return {"attn": m[0], "mlp": m[1]}

    @classmethod
    def from_rr(cls, rr: dict[str, np.ndarray], n_sources: int = 1, n_targets: int = 1, lam: float = 1.0,
                components=("attn", "mlp"), config=None) -> "IRI":
        """Per component: sources = its top ``n_sources`` layers by RR (positive RR, not the last
        layer), weights proportional to RR; targets = its top ``n_targets`` layers after its
        latest source. A component without a positive-RR source is left alone."""
        L = len(next(iter(rr.values())))
        if L < 2:
            raise LayerRangeError("IRI needs a language model with at least two layers")
        srcs, tgts = [], []
        for c in components:
            top = sorted(((float(rr[c][l]), l) for l in range(L - 1) if rr[c][l] > 0), reverse=True)[:n_sources]
            if not top:
                continue
            hi = max(l for _, l in top)
            later = sorted(((float(rr[c][l]), l) for l in range(hi + 1, L)), reverse=True)[:n_targets]
            total = sum(r for r, _ in top)
            srcs += [(c, l, r / total) for r, l in top]
            tgts += [(c, l) for _, l in later]
        if not srcs:
            raise DataError(f"no layer has a positive recovery rate: {rr}")
        opts = {"n_sources": n_sources, "n_targets": n_targets} | ({} if config is not None else {"lam": lam})
        cfg = cls.make_config(config, **opts)
        return cls(srcs, tgts, cfg, {"rr": {c: np.asarray(v).round(4).tolist() for c, v in rr.items()}})

    @classmethod
    def fit(cls, adapter, items, config=None, calib=None, progress: bool = False) -> "IRI":
        """Layers from the RR ranking over the yes-answered presence questions of ``items``; then, with
        ``lam="auto"``, ``lam`` = :func:`.select.best_accuracy` over ``lambdas`` on ``calib`` (yes/no
        items: the adversarial group's accuracy, the others' within ``max_random_drop``; 0 when none helps)."""
        from .select import accuracies, best_accuracy, grid_scores

        cfg = cls.make_config(config)
        cls.check_kind(adapter)
        positives = [it for it in items if it.answer == "yes" and it.prompt]
        if not positives:
            raise DataError("IRI traces presence questions answered 'yes'; the probe items have none")
        rr = cls.layer_rr(adapter, positives, cfg.samples, progress)
        iri = cls.from_rr(rr, cfg.n_sources, cfg.n_targets, config=dataclasses.replace(cfg, lam=0.0))
        iri.meta["n_trace"] = len(positives)
        if cfg.lam == "auto":
            if not calib:
                raise ConfigError("IRI with lam='auto' needs calibration items (calib=...), or give lam a number")
            base, grid = grid_scores(adapter, iri, "lam", cfg.lambdas, calib, accuracies, progress)
            lam = best_accuracy(base, grid, cfg.max_random_drop)
            iri.meta["calibration"] = {"n_calib": len(calib), "unsteered": base, "grid": grid}
        else:
            lam = float(cfg.lam)
        iri.config = cls.make_config(cfg, lam=lam)
        return iri


__all__ = ["IRI", "LAMBDAS"]
