"""The model's own margin: how far the claimed words beat their best alternative.

At each position predicting a claimed token, ``log p(token) - max log p(other)``, the others being
the item's ``candidates`` (``yes`` / ``no``: the yes/no margin) when the claim is a one-word answer
among them, else every other token of the vocabulary; the claim's margin is its weakest token's
(``min``). Read at the last layer (the model's own logits) by default; the logit lens gives the
trajectory. The value is ``-margin``: ``[B, L]``, higher = more likely hallucinated. This is the
baseline every other detector has to beat.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import Detector, Layer, check_layer, token_ids


class AnswerMargin(Detector):
    name = "margin"
    @dataclass
    class Config:
        """``layer``: -1 = the model's own logits (``"auto"``: the best on the fit claims);
        ``candidates``: use the item's candidate answers as the alternatives when it has them."""

        layer: Layer = -1
        candidates: bool = True

        def validate(self):
            check_layer(self.layer, "margin")

    def read(self, run, text_run) -> np.ndarray:
        out = []
        for r, lp in enumerate(run.lens()):  # [L, k, V]
            tok = run.tokens[r]
            k = len(tok)
            cands = run.claims[r].meta.get("candidates") if self.config.candidates else None
            alt = torch.full(lp.shape[-1:], True)
            if cands and k == 1:
                alt = torch.zeros(lp.shape[-1], dtype=torch.bool)
                alt[token_ids(run.adapter, cands)] = True
            m = []
            for j in range(k):
                a = alt.clone()
                a[tok[j]] = False
                other = lp[:, j][:, a].max(-1).values if a.any() else torch.full((lp.shape[0],), -float("inf"))
                m.append(lp[:, j, tok[j]] - other)
            out.append((-torch.stack(m, -1).min(-1).values).numpy())
        return np.stack(out)
