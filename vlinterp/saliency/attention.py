"""Raw attention: the explained position's attention to the image patches, averaged over the
chosen layers and heads.

Row read: LLaVA, the position predicting each answer token (``answer[k] - 1``) in the language
model; ViT/CLIP, the CLS token of the vision tower (the same row for every target: attention
does not depend on the target); SigLIP (no CLS), the attention-pooling probe: the rows weighted by
the probe's attention (mean over its heads; kept as ``arrays["pool_attention"]`` ``[H, T]``).
Options: ``layers`` (``None`` = all), ``heads`` (``None`` = all).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import LayersConfig, SaliencyMethod, check_layers, probe_attention, select_heads, with_probe_row
from .targets import Targets


def attention_stack(adapter, t: Targets, layers, heads) -> tuple[list[int], torch.Tensor]:
    """``(layers, A [L, H', T, T])`` of row ``t.row`` of ``t.stream``, float32, on CPU. With a
    pooling probe (``t.pool``) its attention ``[H, T]`` goes to ``t.arrays["pool_attention"]``."""
    layers = check_layers(adapter, layers, t.stream)
    with probe_attention(adapter, t) as pool:
        probs = adapter.attention(t.batch, layers, t.stream)
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
        layers, A = attention_stack(self.adapter, t, self.config.layers, self.config.heads)
        t.meta["layers"] = layers
        M = with_probe_row(A.mean(dim=(0, 1)), probe_row(t))
        return M[torch.as_tensor(t.queries)][:, t.patches].numpy()
