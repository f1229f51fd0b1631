"""Intermediate Representation Injection (IRI): reinforce the visual object information that
causal tracing shows flowing through the last token.

Fit (:meth:`IRI.fit`) on calibration scenes: trace the attention and MLP outputs at the last
token (:func:`vlinterp.tracing.trace`, image noise) for the correct answer of presence
questions, rank layers by mean recovery rate (RR), take the top ``n_sources`` layers per
component as sources (weights proportional to RR) and that component's top ``n_targets`` later
layers as targets, then pick the strength ``lam`` from a grid on the calibration POPE splits.

Apply (:meth:`IRI.edits`, :meth:`IRI.applied`): in every forward (each decoding step
included) the sources' outputs at the last position ``a_s`` ``[B, D]`` are kept, and at each
target of component ``c`` the output ``x`` at the last position becomes
``(x + lam * sum_s w_s a_s) * |x| / |x + lam * sum_s w_s a_s|`` (norm-preserving), the sum over
the earlier sources of component ``c`` (of any component when ``c`` has none; ``resid`` targets
take every earlier source), weights renormalised to sum to 1. One edit per site, so generation cost is a few hooks.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..core.errors import LayerRangeError, ShapeMismatchError, UnsupportedError
from .common import Steerer, last_index, last_position

LAMBDAS = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass
class IRI(Steerer):
    """``sources``: ``[(component, layer, weight)]``; ``targets``: ``[(component, layer)]``;
    ``lam``: injection strength; ``meta``: the calibration numbers."""

    sources: list[tuple[str, int, float]]
    targets: list[tuple[str, int]]
    lam: float = 1.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.sources = [(str(c), int(l), float(w)) for c, l, w in self.sources]
        self.targets = [(str(c), int(l)) for c, l in self.targets]
        if not self.sources or not self.targets:
            raise ValueError("IRI needs at least one source and one target layer")
        for c, _ in [(c, l) for c, l, _ in self.sources] + self.targets:
            if c not in ("attn", "mlp", "resid"):
                raise ValueError(f"IRI components are attn, mlp or resid (targets), got {c!r}")
        for c, l in self.targets:
            if not any(sl < l for _, sl, _ in self.sources):
                raise LayerRangeError(f"IRI target {c}@{l} has no source layer before it (sources {self.sources})")

    # -------------------------------------------------------------- applying
    def check(self, adapter) -> None:
        if adapter.kind != "vlm":
            raise UnsupportedError(f"IRI steers LLaVA language models, not {adapter.family}")
        L = adapter.num_layers("lm")
        for c, l in [(c, l) for c, l, _ in self.sources] + self.targets:
            if not 0 <= l < L:
                raise LayerRangeError(f"IRI layer {l} out of range: the language model has {L} layers (0..{L - 1})")

    def edits(self, adapter, lam: float | None = None) -> dict:
        """``{site: fn}`` for :meth:`Adapter.edits` / ``run(edits=...)``."""
        self.check(adapter)
        lam = self.lam if lam is None else float(lam)
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
    def to_json(self) -> dict:
        return asdict(self)

    def save(self, path: str) -> None:
        from ..viz.overlay import write_bytes_atomic

        write_bytes_atomic(path, json.dumps(self.to_json(), indent=1).encode())

    @classmethod
    def load(cls, path: str) -> "IRI":
        with open(path) as f:
            d = json.load(f)
        return cls([tuple(s) for s in d["sources"]], [tuple(t) for t in d["targets"]], d.get("lam", 1.0), d.get("meta", {}))

    # ------------------------------------------------------------------ fit
    @staticmethod
    def layer_rr(adapter, n: int = 32, split: str = "iri-calib", seed: int = 0, samples: int = 2,
                 progress: bool = False) -> dict[str, np.ndarray]:
        """Mean RR ``{component: [n_layers]}`` of the attention / MLP output at the last token,
        over the positive presence questions of ``n`` calibration scenes (answer ``yes``)."""
        from tqdm.auto import tqdm

        from ..data.questions import positive_presence
        from ..tracing import trace

        items = positive_presence(split, n, seed)
        rr = []
        for s, qa in tqdm(items, desc="IRI: tracing", disable=not progress):
            b = adapter.prepare(images=[s.pil()], text=[qa.question])
            last = b.layout.span("last", 0).tolist()
            r = trace(adapter, b, "yes", components=("attn", "mlp"), positions={"last": last}, samples=samples)
            rr.append(r.arrays["rr"][:, :, 0])
        m = np.mean(rr, 0)
        return {"attn": m[0], "mlp": m[1]}

    @classmethod
    def from_rr(cls, rr: dict[str, np.ndarray], n_sources: int = 1, n_targets: int = 1, lam: float = 1.0,
                components=("attn", "mlp")) -> "IRI":
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
            raise ValueError(f"no layer has a positive recovery rate: {rr}")
        return cls(srcs, tgts, lam, {"rr": {c: np.asarray(v).round(4).tolist() for c, v in rr.items()}})

    @classmethod
    def fit(cls, adapter, n: int = 32, split: str = "iri-calib", seed: int = 0, lambdas=LAMBDAS, n_sources: int = 1,
            n_targets: int = 1, n_eval: int = 128, max_random_drop: float = 0.01, progress: bool = False) -> "IRI":
        """Layers from the RR ranking on ``n`` calibration scenes, then ``lam`` = the grid value
        with the best calibration POPE-adversarial accuracy whose random-split accuracy drops by
        at most ``max_random_drop`` (``lam=0``, no steering, when none helps)."""
        from ..metrics.pope import pope

        rr = cls.layer_rr(adapter, n, split, seed, progress=progress)
        iri = cls.from_rr(rr, n_sources, n_targets)
        base = {k: pope(adapter, k, split, n_eval, seed + 1)["accuracy"] for k in ("adversarial", "random")}
        grid = {}
        best = (base["adversarial"], 0.0)
        for lam in lambdas:
            with iri.applied(adapter, lam):
                acc = {k: pope(adapter, k, split, n_eval, seed + 1)["accuracy"] for k in ("adversarial", "random")}
            grid[str(lam)] = acc
            if acc["random"] >= base["random"] - max_random_drop and acc["adversarial"] > best[0]:
                best = (acc["adversarial"], float(lam))
        iri.lam = best[1]
        iri.meta.update({"calibration": {"split": split, "seed": seed, "n_trace": n, "n_eval": n_eval,
                                         "unsteered": base, "grid": grid}})
        return iri


__all__ = ["IRI", "LAMBDAS"]
