"""Relevancy: Chefer, Gur & Wolf 2021, "Generic attention-model explainability" (self-attention rule).

``R = I``; for each layer in order ``R += mean_h((dy/dA * A)^+) @ R``, with ``A`` the layer's
attention probabilities and ``y`` the explained scalar (LLaVA: the log-probability of answer
token ``k`` at the position predicting it; ViT: the class logit; CLIP: the image-text logit). The
explained row (LLaVA: position ``answer[k] - 1`` in the language model; ViT/CLIP: CLS of the
vision tower; SigLIP: the attention-pooling probe, whose row is ``mean_h((dy/dP * P)^+) @ R`` for
its attention ``P``, all its heads) is read at the image patches. One forward pass; one backward
per target. Each layer's own map (``arrays["layer_scores"]``) and the prompt tokens' relevance
(``arrays["text_scores"]``) are kept too (:mod:`.tokens`). Options:
``layers`` (``None`` = all), ``heads`` (``None`` = all, averaged), ``score`` (the explained
scalar, see :func:`explained_scores`; ``None`` = the family's default, :data:`DEFAULT_SCORE`).

Why log-probabilities for LLaVA: the logit of a colour word also moves with evidence shared by
every word (attention sinks, background patches that lift the whole vocabulary); its
log-probability ``logit - logsumexp(logits)`` cancels that shared part, so the map keeps what
favours this answer over the others. Pointing game of shapes-llava on held-out colour questions
(``bench saliency``, steps 0), logit -> log-probability: seed 11 (30 scenes) 0.782 -> 0.818,
seed 13 (60) 0.860 -> 0.891, seed 23 (60) 0.824 -> 0.835; higher on four and equal on one of
five more seeds; lower on seed 21 (40 scenes, not used for the choice): 0.833 -> 0.817 (all measured
before the organism's tune stage; with it, log-probability maps point 0.918 on seed 21, 0.899 / 0.964 /
0.912 on 60 scenes of seeds 11 / 13 / 23).
ViT and CLIP keep the logit (multi-label ViT heads are sigmoids, not a softmax).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError, PromptError
from .base import (LayersConfig, SaliencyMethod, attention_with_grad, check_layers, graph_from_layer, select_heads, with_pixel_grad,
                   with_probe_row)
from .targets import Targets
from .tokens import keep_layer_scores, keep_text_scores

SCORES = ("logit", "logprob")
DEFAULT_SCORE = {"vlm": "logprob", "vit": "logit", "clip": "logit"}


def chefer_relevance(attn: list[torch.Tensor], grads: list[torch.Tensor | None], abars: list | None = None) -> torch.Tensor:
    """``attn``/``grads``: per layer ``[H, T, T]`` (``None`` grad = zero) -> relevance ``[T, T]``.
    ``abars``: a list that receives each layer's ``Abar = mean_h((G * A)^+)`` ``[T, T]`` (zeros
    for a layer without gradient)."""
    T = attn[0].shape[-1]
    R = torch.eye(T, dtype=torch.float32)
    for A, G in zip(attn, grads):
        if G is None:
            if abars is not None:
                abars.append(torch.zeros(T, T))
            continue
        Abar = (G.float() * A.float()).clamp(min=0).mean(0)
        if abars is not None:
            abars.append(Abar)
        R = R + Abar @ R
    return R


def explained_scores(t: Targets, logits: torch.Tensor, score: str = "logit") -> torch.Tensor:
    """The scalars explained, ``[rows, t.n]``: ``"logit"`` is ``t.select(logits)``; ``"logprob"``
    subtracts the log-partition of the distribution the target is drawn from: language-model
    logits ``[B, T, V]`` -> ``logsumexp`` over ``V`` at each target's position ``t.queries[k]``;
    class / text logits ``[B, C]`` -> ``logsumexp`` over ``C``; sigmoid scores (SigLIP, ``t.meta["sigmoid"]``:
    texts do not compete) -> ``log sigmoid(logit)``, the log-probability that image and text match."""
    if score not in SCORES:
        raise PromptError(f"relevancy: score must be one of {SCORES}, got {score!r}")
    y = t.select(logits).float()
    if score == "logit":
        return y
    if t.meta.get("sigmoid"):
        return torch.nn.functional.logsigmoid(y)
    if logits.dim() == 3:
        q = torch.as_tensor(t.queries, device=logits.device)
        return y - torch.logsumexp(logits[:, q].float(), dim=-1)
    return y - torch.logsumexp(logits.float(), dim=-1, keepdim=True)


def relevance_maps(adapter, t: Targets, layers, heads, stream: str | None = None, rows=None, score: str = "logit"):
    """Per target ``k``: relevance ``[T, T]`` of batch row ``rows[k]`` (default ``t.row``) of
    ``stream`` (default ``t.stream``) for the scalar ``explained_scores(t, logits, score)[t.row, k]``;
    ``[T + 1, T]`` when ``t.pool`` pools ``stream`` (row ``T``: the probe's, see the module doc)."""
    layers, maps, _ = relevance_and_layers(adapter, t, layers, heads, stream, rows, score)
    return layers, maps


def relevance_and_layers(adapter, t: Targets, layers, heads, stream: str | None = None, rows=None, score: str = "logit",
                         queries=None):
    """:func:`relevance_maps` and, with ``queries`` (one position per target), each layer's own
    relevance row at that query, ``[n_targets, n_layers, T]``: row ``queries[k]`` of ``I + Abar_l``
    (with the probe's row appended when pooled), which is what ``layers=[l]`` alone gives."""
    stream = stream or t.stream
    layers = check_layers(adapter, layers, stream)
    pool = t.pool if stream == t.stream else None
    with attention_with_grad(adapter, layers, stream, pool=pool) as probs:
        out = adapter.run(with_pixel_grad(t.batch), grad=True)
    y = explained_scores(t, out.logits, score)[t.row]
    As = [probs[l] for l in layers] + ([probs["pool"]] if pool else [])
    maps, per_layer = [], []
    for k in range(t.n):
        r = t.row if rows is None else rows[k]
        grads = list(torch.autograd.grad(y[k], As, retain_graph=k < t.n - 1, allow_unused=True))
        probe = None
        if pool:
            P, G = As[-1][r, :, 0].detach().float().cpu(), grads.pop()
            probe = torch.zeros_like(P[0]) if G is None else (G[r, :, 0].float().cpu() * P).clamp(min=0).mean(0)
        attn = [select_heads(A[r].detach().cpu(), heads) for A in As[: len(layers)]]
        gs = [None if g is None else select_heads(g[r].cpu(), heads) for g in grads]
        abars: list | None = [] if queries is not None else None
        maps.append(with_probe_row(chefer_relevance(attn, gs, abars), probe))
        if abars is not None:
            q = int(queries[k])
            eye = torch.eye(maps[-1].shape[-1], dtype=torch.float32)
            per_layer.append(torch.stack([with_probe_row(eye + Ab, probe)[q] for Ab in abars]))
    return layers, maps, (torch.stack(per_layer) if per_layer else None)


def relevance_rows(adapter, t: Targets, layers, heads, score: str = "logit"):
    """Only the rows the answer needs: ``(layers, rows [n_targets, T], per_layer [n_targets, n_layers, T])``
    with ``rows[k]`` = row ``t.queries[k]`` of :func:`relevance_maps`' ``[T, T]`` map and ``per_layer``
    as :func:`relevance_and_layers` gives (streams without a pooling probe).

    Row ``q`` of ``R = (I + Abar_L) ... (I + Abar_1)`` is ``e_q`` pushed through the factors from the
    last layer down (``r += r @ Abar_l``): ``O(T^2)`` per layer instead of ``O(T^3)``, and no ``[T, T]``
    relevance matrix. Each layer's gradient is reduced to its ``Abar`` ``[T, T]`` by a tensor hook as
    the backward pass reaches it, so the ``[H, T, T]`` gradients of every layer are never held
    together. On a language model the graph starts at the first explained layer, with every
    parameter frozen (:func:`~.base.graph_from_layer`): the vision tower keeps no autograd graph."""
    stream = t.stream
    layers = check_layers(adapter, layers, stream)
    lm = adapter.kind == "vlm" and stream == "lm"
    with contextlib.ExitStack() as stack:
        if lm:
            stack.enter_context(graph_from_layer(adapter, layers[0]))
        probs = stack.enter_context(attention_with_grad(adapter, layers, stream))
        out = adapter.run(t.batch if lm else with_pixel_grad(t.batch), grad=True)
    y = explained_scores(t, out.logits, score)[t.row]
    del out
    r = t.row
    As = [probs[l] for l in layers]
    T = As[0].shape[-1]
    rows, per_layer = [], []
    for k in range(t.n):
        abars: dict[int, torch.Tensor] = {}

        def reduce(i):
            def hook(G):
                with torch.no_grad():
                    A = select_heads(As[i][r].detach(), heads)
                    abars[i] = (select_heads(G[r], heads).float() * A.float()).clamp(min=0).mean(0).cpu()

            return hook

        handles = [A.register_hook(reduce(i)) for i, A in enumerate(As)]
        try:  # the backward to the first layer's probabilities passes every later layer's: each hook fires once
            torch.autograd.grad(y[k], As[:1], retain_graph=k < t.n - 1, allow_unused=True)
        finally:
            for hd in handles:
                hd.remove()
        q = int(t.queries[k])
        e = torch.zeros(T)
        e[q] = 1.0
        v = e.clone()
        for i in reversed(range(len(layers))):
            if i in abars:
                v = v + v @ abars[i]
        rows.append(v)
        per_layer.append(torch.stack([e + abars[i][q] if i in abars else e for i in range(len(layers))]))
    return layers, torch.stack(rows), torch.stack(per_layer)


class Relevancy(SaliencyMethod):
    name = "relevancy"

    @dataclass
    class Config(LayersConfig):
        """``score``: the explained scalar, ``"logit"`` or ``"logprob"`` (``None``: the kind's default)."""

        score: str | None = None

        def validate(self) -> None:
            super().validate()
            if self.score is not None and self.score not in SCORES:
                raise ConfigError(f"score must be one of {SCORES} or None, got {self.score!r}")

    @property
    def score(self) -> str:
        """The explained scalar in use: the ``score`` option, else the family's default."""
        return self.config.score or DEFAULT_SCORE.get(self.adapter.kind, "logit")

    def compute(self, t: Targets) -> np.ndarray:
        if t.pool is None:  # only the rows the answer reads (see relevance_rows)
            layers, rows, per_layer = relevance_rows(self.adapter, t, self.config.layers, self.config.heads, score=self.score)
        else:  # a pooling probe reads every row
            layers, maps, per_layer = relevance_and_layers(self.adapter, t, self.config.layers, self.config.heads, score=self.score,
                                                           queries=t.queries)
            rows = torch.stack([R[q] for q, R in zip(t.queries, maps)])
        t.meta["layers"] = layers
        t.meta["score"] = self.score
        keep_layer_scores(t, layers, per_layer)
        keep_text_scores(self.adapter, t, rows)
        return rows[:, t.patches].numpy()
