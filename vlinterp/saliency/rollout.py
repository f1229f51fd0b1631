"""Attention rollout (Abnar & Zuidema 2020): ``R = prod_l (0.5 * mean_h A_l + 0.5 * I)``, rows
renormalised, layers multiplied from the first up; the explained row read at the image patches
(LLaVA: the position predicting each answer token; ViT/CLIP: CLS; SigLIP: the attention-pooling
probe, a last step ``probe @ R`` with no identity, the probe not being a token). Options: ``layers``
(``None`` = all, in order), ``heads``, ``residual`` (weight of the identity, default 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError
from .attention import attention_stack, probe_row
from .base import LayersConfig, SaliencyMethod, with_probe_row
from .targets import Targets
from .tokens import keep_text_scores


def rollout(A: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """``A`` ``[L, H, T, T]`` -> rollout ``[T, T]``."""
    T = A.shape[-1]
    eye = torch.eye(T, dtype=A.dtype)
    R = eye.clone()
    for layer in A:
        a = (1 - residual) * layer.mean(0) + residual * eye
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        R = a @ R
    return R


class Rollout(SaliencyMethod):
    name = "rollout"

    @dataclass
    class Config(LayersConfig):
        """``residual``: weight of the identity added to each layer's attention, in [0, 1]."""

        residual: float = 0.5

        def validate(self) -> None:
            super().validate()
            if not 0.0 <= self.residual <= 1.0:
                raise ConfigError(f"option 'residual' must be in [0, 1], got {self.residual!r}")

    def compute(self, t: Targets) -> np.ndarray:
        layers, A = attention_stack(self.adapter, t, self.config.layers, self.config.heads)
        t.meta["layers"] = layers
        R = with_probe_row(rollout(A, self.config.residual), probe_row(t))
        rows = R[torch.as_tensor(t.queries)]
        keep_text_scores(self.adapter, t, rows)
        return rows[:, t.patches].numpy()
