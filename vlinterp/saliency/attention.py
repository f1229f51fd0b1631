"""Raw attention: the explained position's attention to the image patches, averaged over the
chosen layers and heads.

Row read: LLaVA, the position predicting each answer token (``answer[k] - 1``) in the language
model; ViT/CLIP, the CLS token of the vision tower (the same row for every target: attention
does not depend on the target). Options: ``layers`` (``None`` = all), ``heads`` (``None`` = all).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import LayersConfig, SaliencyMethod, check_layers, select_heads
from .targets import Targets


def attention_stack(adapter, t: Targets, layers, heads) -> tuple[list[int], torch.Tensor]:
    """``(layers, A [L, H', T, T])`` of row ``t.row`` of ``t.stream``, float32, on CPU."""
    layers = check_layers(adapter, layers, t.stream)
    probs = adapter.attention(t.batch, layers, t.stream)
    A = torch.stack([probs[l][t.row].float().cpu() for l in layers])
    return layers, select_heads(A, heads)


class RawAttention(SaliencyMethod):
    name = "attention"

    @dataclass
    class Config(LayersConfig):
        """``layers`` / ``heads`` averaged (``None`` = all)."""

    def compute(self, t: Targets) -> np.ndarray:
        layers, A = attention_stack(self.adapter, t, self.config.layers, self.config.heads)
        t.meta["layers"] = layers
        M = A.mean(dim=(0, 1))
        return M[torch.as_tensor(t.queries)][:, t.patches].numpy()
