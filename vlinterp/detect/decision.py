"""Decision entropy ("Anatomy of a Lie": decisional ambiguity): how undecided the model is when it
says the claimed words.

At each position predicting a claimed token, the entropy of the next-token distribution read from
layer ``l`` by the logit lens, ``H_l = -sum_v p_l(v) log p_l(v)`` (nats, whole vocabulary), reduced
over the claim's tokens (default ``max``: its least decided word): ``[B, L]``. Higher = more likely
hallucinated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Detector, Layer, Reduce, check_layer, reduce_tokens


class DecisionEntropy(Detector):
    name = "decision"
    @dataclass
    class Config:
        """``layer``: the one whose value scores (``"auto"``: the best on the fit claims; the whole
        trajectory is kept); ``reduce``: over the claim's tokens."""

        layer: Layer = "auto"
        reduce: Reduce = "max"

        def validate(self):
            check_layer(self.layer, "decision")

    def read(self, run, text_run) -> np.ndarray:
        out = []
        for lp in run.lens():  # [L, k, V]
            H = -(lp.exp() * lp).sum(-1)  # [L, k]
            out.append(reduce_tokens(H, self.config.reduce).numpy())
        return np.stack(out)
