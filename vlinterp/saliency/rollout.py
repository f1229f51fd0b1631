"""Attention rollout (Abnar & Zuidema 2020): ``R = prod_l (0.5 * mean_h A_l + 0.5 * I)``, rows
renormalised, layers multiplied from the first up; the explained row read at the image patches
(LLaVA: the position predicting each answer token; ViT/CLIP: CLS; SigLIP: the attention-pooling
probe, a last step ``probe @ R`` with no identity, the probe not being a token). Options: ``layers``
(``None`` = all, in order), ``heads``, ``residual`` (weight of the identity, default 0.5).
"""
from __future__ import annotations

import numpy as np
import torch

from .attention import attention_stack, probe_row
from .base import SaliencyMethod, with_probe_row
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
        R = with_probe_row(rollout(A, float(self.opts["residual"])), probe_row(t))
        return R[torch.as_tensor(t.queries)][:, t.patches].numpy()
