"""Raw attention: the explained position's attention to the image patches, averaged over the
chosen layers and heads.

Row read: LLaVA, the position predicting each answer token (``answer[k] - 1``) in the language
model; ViT/CLIP, the CLS token of the vision tower (the same row for every target: attention
does not depend on the target); SigLIP (no CLS), the attention-pooling probe: the rows weighted by
the probe's attention (mean over its heads; kept as ``arrays["pool_attention"]`` ``[H, T]``).
Options: ``layers`` (``None`` = all), ``heads`` (``None`` = all). Also kept (:mod:`.tokens`): each
layer's map (``arrays["layer_scores"]``) and, on a language model, the prompt tokens' share
(``arrays["text_scores"]``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import LayersConfig, SaliencyMethod, check_layers, probe_attention, select_heads, with_probe_row
from .targets import Targets
from .tokens import keep_layer_scores, keep_text_scores


def attention_stack(adapter, t: Targets, layers, heads, queries=None) -> tuple[list[int], torch.Tensor]:
    """``(layers, A [L, H', T, T])`` of row ``t.row`` of ``t.stream``, float32, on CPU; with
    ``queries`` only those rows, ``[L, H', len(queries), T]``. With a pooling probe (``t.pool``) its
    attention ``[H, T]`` goes to ``t.arrays["pool_attention"]``."""
    layers = check_layers(adapter, layers, t.stream)
    with probe_attention(adapter, t) as pool:
        probs = adapter.attention(t.batch, layers, t.stream, queries=queries)
    if "probs" in pool:
        t.arrays["pool_attention"] = pool["probs"][t.row, :, 0].float().cpu().numpy()
    A = torch.stack([probs[l][t.row].float().cpu() for l in layers])
    return layers, select_heads(A, heads)


def probe_row(t: Targets):
    """The pooling probe's attention ``[T]`` (mean over its heads), or ``None`` without a probe."""
    p = t.arrays.get("pool_attention")
    return None if p is None else torch.as_tensor(p).mean(0)


class RawAttention(SaliencyMethod):
    name = "attention"

    @dataclass
    class Config(LayersConfig):
        """``layers`` / ``heads`` averaged (``None`` = all)."""

    def compute(self, t: Targets) -> np.ndarray:
        # only the explained rows are computed, except under a pooling probe (its row mixes them all)
        rows = None if t.pool is not None else list(t.queries)
        layers, A = attention_stack(self.adapter, t, self.config.layers, self.config.heads, queries=rows)
        t.meta["layers"] = layers
        q = torch.as_tensor(t.queries) if rows is None else torch.arange(len(rows))
        per = torch.stack([with_probe_row(a.mean(0), probe_row(t))[q] for a in A], 1)  # [n, L, T]
        keep_layer_scores(t, layers, per)
        rows = per.mean(1)  # = the mean over layers and heads, read at the queries
        keep_text_scores(self.adapter, t, rows)
        return rows[:, t.patches].numpy()
