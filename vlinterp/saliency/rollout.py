"""Attention rollout (Abnar & Zuidema 2020): ``R = prod_l (0.5 * mean_h A_l + 0.5 * I)``, rows
renormalised, layers multiplied from the first up; the explained row read at the image patches
(LLaVA: the position predicting each answer token; ViT/CLIP: CLS). Options: ``layers``
(``None`` = all, in order), ``heads``, ``residual`` (weight of the identity, default 0.5).
"""
from __future__ import annotations

import numpy as np
import torch

from .attention import attention_stack
from .base import SaliencyMethod
from .targets import Targets


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
    defaults = {"layers": None, "heads": None, "residual": 0.5, "max_new_tokens": 8}

    def compute(self, t: Targets) -> np.ndarray:
        layers, A = attention_stack(self.adapter, t, self.opts["layers"], self.opts["heads"])
        t.meta["layers"] = layers
        R = rollout(A, float(self.opts["residual"]))
        return R[torch.as_tensor(t.queries)][:, t.patches].numpy()
