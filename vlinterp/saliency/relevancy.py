"""Relevancy: Chefer, Gur & Wolf 2021, "Generic attention-model explainability" (self-attention rule).

``R = I``; for each layer in order ``R += mean_h((dy/dA * A)^+) @ R``, with ``A`` the layer's
attention probabilities and ``y`` the explained scalar (LLaVA: the logit of answer token ``k`` at
the position predicting it; ViT: the class logit; CLIP: the image-text logit). The explained row
(LLaVA: position ``answer[k] - 1`` in the language model; ViT/CLIP: CLS of the vision tower) is
read at the image patches. One forward pass; one backward per target. Options: ``layers``
(``None`` = all), ``heads`` (``None`` = all, averaged).
"""
from __future__ import annotations

import numpy as np
import torch

from .base import SaliencyMethod, attention_with_grad, check_layers, select_heads, with_pixel_grad
from .targets import Targets


def chefer_relevance(attn: list[torch.Tensor], grads: list[torch.Tensor | None]) -> torch.Tensor:
    """``attn``/``grads``: per layer ``[H, T, T]`` (``None`` grad = zero) -> relevance ``[T, T]``."""
    T = attn[0].shape[-1]
    R = torch.eye(T, dtype=torch.float32)
    for A, G in zip(attn, grads):
        if G is None:
            continue
        Abar = (G.float() * A.float()).clamp(min=0).mean(0)
        R = R + Abar @ R
    return R


def relevance_maps(adapter, t: Targets, layers, heads, stream: str | None = None, rows=None):
    """Per target ``k``: relevance ``[T, T]`` of batch row ``rows[k]`` (default ``t.row``) of
    ``stream`` (default ``t.stream``) for the scalar ``t.select(logits)[t.row, k]``."""
    stream = stream or t.stream
    layers = check_layers(adapter, layers, stream)
    with attention_with_grad(adapter, layers, stream) as probs:
        out = adapter.run(with_pixel_grad(t.batch), grad=True)
    y = t.select(out.logits)[t.row]
    As = [probs[l] for l in layers]
    maps = []
    for k in range(t.n):
        r = t.row if rows is None else rows[k]
        grads = torch.autograd.grad(y[k], As, retain_graph=k < t.n - 1, allow_unused=True)
        attn = [select_heads(A[r].detach().cpu(), heads) for A in As]
        gs = [None if g is None else select_heads(g[r].cpu(), heads) for g in grads]
        maps.append(chefer_relevance(attn, gs))
    return layers, maps


class Relevancy(SaliencyMethod):
    name = "relevancy"
    defaults = {"layers": None, "heads": None, "max_new_tokens": 8}

    def compute(self, t: Targets) -> np.ndarray:
        layers, maps = relevance_maps(self.adapter, t, self.opts["layers"], self.opts["heads"])
        t.meta["layers"] = layers
        return np.stack([R[q, t.patches].numpy() for q, R in zip(t.queries, maps)])
