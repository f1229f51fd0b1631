"""TAM, Token Activation Map (Li et al., ICCV 2025, arXiv 2506.23270), for LLaVA answer tokens.

For answer token ``k`` (id ``c_k``, predicted at position ``p_k = answer[k] - 1``):

1. Logit-lens map: ``M_k[j] = relu(lm_head(norm(h_l[j]))[c_k])`` at every image position ``j``;
   ``h_l`` is the residual stream after block ``layer`` (default the last, i.e. the model's own
   logits; ``norm`` is the final norm).
2. Estimated interference of the context (the paper's "estimated causal inference"): the context
   ``Q_k`` is the prompt tokens (span ``prompt``) and the answer tokens before ``k``, minus those
   whose id equals ``c_k``. Each context token ``q`` (id ``c_q``) has its own map
   ``M_q[j] = relu(logit_j[c_q])`` and a weight ``w_q = relu(logit_{pos q}[c_k])`` (how strongly
   the explained class is active at that text position), normalised to sum 1.
   ``I_k = sum_q w_q M_q``; the scale ``alpha = <M_k, I_k> / <I_k, I_k>`` is the least-squares
   solution of ``min_a ||M_k - a I_k||^2`` (>= 0 since both maps are >= 0; 0 if ``I_k = 0``).
3. ``TAM_k = relu(M_k - alpha I_k)``; with ``denoise=True`` (default) each tile's grid then goes
   through the paper's rank Gaussian filter (3x3 window values sorted, weighted by a Gaussian
   over rank with sigma = the window's coefficient of variation).

``arrays["raw"]`` keeps ``M_k`` and ``meta["alpha"]`` the scales. Options: ``layer``, ``denoise``,
``context``.

**ARC** (``context="arc"``, the text half of the TAM/MSEA paper): the context weights come from
rank-biased overlap instead of one logit, ``w_q = RBO_p(top-k(logit_{pos q}), top-k(logit_{p_k}))``
(:func:`vlinterp.metrics.ranking.rank_biased_overlap`, ``arc_k`` / ``arc_p``): a context token
interferes as much as what it predicts agrees, rank by rank, with what the explained position
predicts. ``meta["weights"]`` keeps the per-token weights of each answer token.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError, LayerRangeError
from .base import AnswerConfig, SaliencyMethod
from .targets import Targets


def rank_gaussian_filter(grid: np.ndarray, k: int = 3) -> np.ndarray:
    """The paper's rank Gaussian filter on a ``[rows, cols]`` map (vectorised)."""
    r, c = grid.shape
    p = k // 2
    mode = "reflect" if min(r, c) > p else "edge"
    pad = np.pad(grid.astype(np.float64), p, mode=mode)
    win = np.stack([pad[i : i + r, j : j + c] for i in range(k) for j in range(k)], -1)
    win = np.sort(win, -1)
    mean, std = win.mean(-1), win.std(-1)
    ax = np.arange(k * k) - (k * k) // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(mean > 0, std / np.where(mean > 0, mean, 1), 0)
        kern = np.exp(-(ax ** 2) / (2 * np.maximum(sigma, 1e-12)[..., None] ** 2))
    kern /= kern.sum(-1, keepdims=True)
    out = np.where(sigma > 1e-12, (win * kern).sum(-1), mean)
    return np.where(mean > 0, out, 0.0).astype(np.float32)


class TokenActivationMap(SaliencyMethod):
    name = "tam"
    kinds = ("vlm",)

    @dataclass
    class Config(AnswerConfig):
        """``layer``: the block whose residual output goes through the logit lens (``None`` = the
        last, i.e. the model's own logits); ``denoise``: the rank Gaussian filter; ``context``:
        ``logit`` (TAM's context weights) or ``arc`` (rank-biased overlap of the top-``arc_k``
        rankings, persistence ``arc_p``)."""

        layer: int | None = None
        denoise: bool = True
        context: str = "logit"
        arc_k: int = 10
        arc_p: float = 0.9

        def validate(self) -> None:
            super().validate()
            if self.context not in ("logit", "arc"):
                raise ConfigError(f"context must be logit (TAM's weights) or arc (rank-biased overlap), got {self.context!r}")
            if self.arc_k < 1:
                raise ConfigError(f"arc_k must be at least 1, got {self.arc_k}")
            if not 0 < self.arc_p < 1:
                raise ConfigError(f"arc_p must be in (0, 1), got {self.arc_p}")

    def lens_logits(self, t: Targets) -> torch.Tensor:
        """``[T, V]`` logits of every position of the explained row through the logit lens."""
        a = self.adapter
        n = a.num_layers("lm")
        layer = self.config.layer
        if layer is None or int(layer) in (-1, n - 1):
            if layer is not None and not -n <= int(layer) < n:
                raise LayerRangeError(f"layer {layer} out of range (0..{n - 1})")
            return a.run(t.batch).logits[t.row].float()
        if not -n <= int(layer) < n:
            raise LayerRangeError(f"layer {layer} out of range: the language model has {n} layers (0..{n - 1})")
        site = f"blocks.{int(layer) % n}.resid"
        out = a.run(t.batch, capture=[site])
        with torch.no_grad():
            h = out.cache[site][t.row]
            return a.module("logits")(a.module("norm")(h)).float()

    def compute(self, t: Targets) -> np.ndarray:
        logits = self.lens_logits(t).cpu()
        img = t.patches
        ids = t.batch.inputs["input_ids"][t.row].cpu()
        prompt = t.layout.span("prompt", t.row).tolist()
        answer = t.layout.span("answer", t.row).tolist()
        raw, maps, alphas, weights = [], [], [], []
        for k, (q, c) in enumerate(zip(t.queries, t.spec)):
            M = logits[img, c].clamp(min=0)
            ctx = [p for p in prompt + answer[:k] if p <= q and int(ids[p]) != c]
            alpha = 0.0
            if ctx:
                own = logits[img][:, ids[ctx]].clamp(min=0).T          # [n_ctx, n_img]
                w = self.context_weights(logits, ctx, q, c)
                weights.append(w.tolist())
                I = (w / (w.sum() + 1e-8)) @ own
                denom = float(I @ I)
                alpha = max(float(M @ I) / denom, 0.0) if denom > 0 else 0.0
            else:
                weights.append([])
            raw.append(M.numpy())
            maps.append((M - alpha * I).clamp(min=0).numpy() if ctx else M.numpy())
            alphas.append(alpha)
        scores = np.stack(maps)
        if self.config.denoise:
            scores = np.stack([self._denoise(s, t) for s in scores])
        t.arrays["raw"] = np.stack(raw).astype(np.float32)
        t.meta.update(alpha=alphas, layer=self.config.layer if self.config.layer is not None else -1,
                      context=self.config.context, weights=weights)
        return scores

    def context_weights(self, logits: torch.Tensor, ctx: list[int], q: int, c: int) -> torch.Tensor:
        """``[n_ctx]`` weights of the context positions ``ctx`` for the answer token ``c`` predicted
        at position ``q`` (``logits`` ``[T, V]``): TAM's ``relu(logit_ctx[c])`` or ARC's RBO."""
        if self.config.context == "arc":
            from ..metrics.ranking import topk_rbo

            return torch.as_tensor(topk_rbo(logits[ctx], logits[q], self.config.arc_k, self.config.arc_p), dtype=logits.dtype)
        return logits[ctx, c].clamp(min=0)

    @staticmethod
    def _denoise(s: np.ndarray, t: Targets) -> np.ndarray:
        grids = t.layout.patch_scores(s, t.image_index)
        return np.concatenate([rank_gaussian_filter(g).reshape(-1) for g in grids])
