"""Mean-difference steering vectors (VTI-style): the direction from hallucinated to correct
last-token states, added at chosen layers in every forward (each decoding step included).

Fit on a probe set of POPE questions (negatives of the adversarial type, where the designed
prior makes the organism say "yes" to absent partners): collect the residual state at the last
prompt token of layers ``layers``; ``d_l = mean(h_l | answered right) - mean(h_l | hallucinated)``
(optionally the top principal direction of the per-pair differences, as VTI does); apply
``h_l += alpha * |h_l| * d_l / |d_l|`` at the last position (``positions="last"``) or every position.
``alpha < 0`` steers toward hallucination (a sanity check).

``protect``: groups of answer words (e.g. the colour words, the count words) whose answers the steering
must leave alone. The direction loses its component along every within-group difference of those
words' effective readouts (``norm gain * lm_head.weight[word]``, each group centred), so at the last
layer adding it cannot change which word of a group wins (the final RMSNorm rescales all logits alike);
at earlier layers it only removes the direct path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..core.errors import ConfigError, DataError, LayerRangeError
from .base import SteeringMethod, progress_bar
from .common import add_direction

ALPHAS = (0.05, 0.1, 0.15, 0.2, 0.3)


class MeanDiff(SteeringMethod):
    """``vectors``: ``{layer: [D]}`` unit directions; ``config.alpha``: strength (relative to the state's norm)."""

    name = "meandiff"
    strengths = ("alpha",)
    needs = ("presence",)

    @dataclass
    class Config:
        """``layers``: LM layers steered (default: the upper half); ``alpha``: strength (``"auto"``:
        :func:`.select.least_false_yes` over ``alphas`` on the calibration items, each other group's
        accuracy within ``max_drop``); ``pca``: the top principal direction of the right - wrong pairs
        instead of the mean difference; ``positions``: ``last`` (the last prompt position and each
        decoding step) or ``all``; ``protect``: groups of answer words the direction must not reorder."""

        layers: tuple[int, ...] | None = None
        alpha: float | Literal["auto"] = "auto"
        pca: bool = False
        positions: Literal["last", "all"] = "last"
        alphas: tuple[float, ...] = ALPHAS
        max_drop: float = 0.01
        protect: tuple[tuple[str, ...], ...] | None = None

        def validate(self):
            if self.positions not in ("last", "all"):
                raise ConfigError(f"meandiff positions must be last or all, got {self.positions!r}")

    def __init__(self, vectors: dict[int, torch.Tensor], config=None, meta: dict | None = None, unit: bool = False, **opts):
        """``unit``: the vectors are unit already (a loaded fit: normalising again would move their last bits)."""
        super().__init__(config, meta, **opts)
        if not vectors:
            raise ConfigError("MeanDiff needs at least one layer vector")
        self.vectors = {int(l): v.float() if unit else torch.nn.functional.normalize(v.float(), dim=0) for l, v in vectors.items()}

    @property
    def alpha(self):
        return self.config.alpha

    @classmethod
    def fit(cls, adapter, items, config=None, calib=None, progress: bool = False) -> "MeanDiff":
        """Probe ``items``: yes/no questions with answers (POPE, adversarial negatives); states of the
        questions the model answers right vs wrongly (hallucinated "yes" on negatives, "no" on
        positives). ``alpha="auto"``: chosen on ``calib`` (see :class:`Config`)."""
        from .select import select_least_false_yes

        cfg = cls.make_config(config)
        cls.check_kind(adapter)
        L = adapter.num_layers("lm")
        layers = list(range(L // 2, L)) if cfg.layers is None else [int(l) for l in cfg.layers]
        for l in layers:
            if not 0 <= l < L:
                raise LayerRangeError(f"layer {l} out of range (0..{L - 1})")
        items = [it for it in items if it.answer in ("yes", "no") and it.prompt]
        ids = torch.tensor([adapter.token_id("yes"), adapter.token_id("no")])
        states = {l: [] for l in layers}
        right = []
        bar = progress_bar(progress, len(items), "fitting meandiff: probe states")
        with torch.no_grad():
            for i in range(0, len(items), 32):
                ch = items[i:i + 32]
                b = adapter.prepare(images=[it.image for it in ch], text=[it.prompt for it in ch])
                out = adapter.run(b, capture=[f"blocks.{l}.resid" for l in layers])
                last = torch.tensor([int(b.layout.span("last", r)[0]) for r in range(len(ch))])
                lg = out.logits[torch.arange(len(ch)), last][:, ids]
                pred = ["yes" if a > c else "no" for a, c in lg.tolist()]
                right += [p == it.answer for p, it in zip(pred, ch)]
                for l in layers:
                    states[l].append(out.cache[f"blocks.{l}.resid"][torch.arange(len(ch)), last].float())
                bar.update(len(ch))
        bar.close()
        right = torch.tensor(right, dtype=torch.bool)
        if right.all() or (~right).all():
            raise DataError(f"the probe set has {'no wrong' if right.all() else 'no right'} answers; use more items")
        vec = {}
        for l in layers:
            h = torch.cat(states[l])
            d = h[right].mean(0) - h[~right].mean(0)
            if cfg.pca:  # top principal direction of (right - wrong) pairings, signed like the mean difference
                diffs = h[right][:, None] - h[~right][None]
                u = torch.linalg.svd(diffs.reshape(-1, h.shape[1]) - 0, full_matrices=False).Vh[0]
                d = u * torch.sign(u @ d)
            vec[l] = d
        if cfg.protect:
            Q = readout_basis(adapter, cfg.protect)
            vec = {l: d - Q @ (Q.T @ d.to(Q.dtype)) for l, d in vec.items()}
        md = cls(vec, cls.make_config(cfg, layers=tuple(layers), alpha=0.0 if cfg.alpha == "auto" else float(cfg.alpha)),
                 {"n": len(items), "right": float(right.float().mean())})
        if cfg.alpha == "auto":
            if not calib:
                raise ConfigError("meandiff with alpha='auto' needs calibration items (calib=...), or give alpha a number")
            select_least_false_yes(md, adapter, "alpha", cfg.alphas, calib, cfg.max_drop, progress)
        return md

    def edits(self, adapter) -> dict:
        self.check(adapter)
        a = float(self.config.alpha)
        L = adapter.num_layers("lm")
        for l in self.vectors:
            if not 0 <= l < L:
                raise LayerRangeError(f"layer {l} out of range (0..{L - 1})")
        return {f"blocks.{l}.resid": add_direction(v, a, self.config.positions) for l, v in self.vectors.items()}

    def tensors(self) -> dict:
        return {str(l): v for l, v in self.vectors.items()}

    @classmethod
    def from_saved(cls, tensors, state, config, meta) -> "MeanDiff":
        return cls({int(k): v for k, v in tensors.items()}, config, meta, unit=True)


def effective_readouts(adapter, words) -> torch.Tensor:
    """``gain * lm_head.weight[word]`` ``[len(words), D]`` (``gain``: :func:`norm_gain` of the final norm) for single-token ``words``: the
    direction in the last residual state that raises each word's logit."""
    model = adapter.model
    W = model.get_output_embeddings().weight.detach().float()
    lm = getattr(model, "model", model)
    lm = getattr(lm, "language_model", lm)
    norm = getattr(lm, "norm", None)
    g = norm_gain(norm, W.shape[1]) if norm is not None else torch.ones(W.shape[1])
    return W[[adapter.token_id(w) for w in words]] * g


def norm_gain(norm, dim: int) -> torch.Tensor:
    """The elementwise gain ``[dim]`` of a final norm: a LayerNorm's ``weight``; for an RMS norm, what
    the module itself makes of a unit-RMS input (all ones), so that every flavour is right: LLaMA /
    Qwen's ``weight * x``, and Gemma / Gemma 2 / Gemma 3's (and PaliGemma's) ``(1 + weight) * x``,
    whose weights start at zero."""
    if isinstance(norm, torch.nn.LayerNorm):
        return norm.weight.detach().float() if norm.weight is not None else torch.ones(dim)
    p = next(norm.parameters(), None)
    x = torch.ones(1, dim, dtype=p.dtype if p is not None else torch.float32, device=p.device if p is not None else "cpu")
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 0.0)) or 0.0)
    with torch.no_grad():  # x / sqrt(mean(x^2) + eps): undo the eps so LLaMA's gain is its weight
        return norm(x)[0].detach().float().cpu() * (1.0 + eps) ** 0.5


def readout_basis(adapter, groups) -> torch.Tensor:
    """Orthonormal ``[D, r]`` basis of the within-group differences of the words' effective readouts
    (:func:`effective_readouts`, centred per group); ``groups``: lists of single-token words."""
    cols = []
    for group in groups:
        if len(group) < 2:
            raise ConfigError(f"a protected group needs at least two words, got {list(group)}")
        R = effective_readouts(adapter, group)
        cols.append((R - R.mean(0, keepdim=True)).T)
    U, S, _ = torch.linalg.svd(torch.cat(cols, 1), full_matrices=False)  # centring costs a rank per group
    return U[:, S > S[0] * 1e-5]


__all__ = ["MeanDiff", "effective_readouts", "norm_gain", "readout_basis"]
