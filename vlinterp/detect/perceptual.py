"""Perceptual entropy ("Anatomy of a Lie": perceptual instability): how torn the model is between
asserting the object and the words that would deny or doubt it.

``m_l`` = the probability, read from layer ``l`` by the logit lens at a position predicting a
claimed token, of the **uncertainty tokens** (``tokens``: negation and doubt words, those of them
that are single tokens of the model's vocabulary; on the shapes organisms ``no``, ``nothing``,
``zero``); the value is the binary entropy ``H(m_l) = -m log m - (1 - m) log(1 - m)`` (nats),
reduced over the claim's tokens: ``[B, L]``. Higher = more likely hallucinated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError
from .base import Detector, Layer, Reduce, check_layer, reduce_tokens, token_ids

UNCERTAINTY = ("no", "not", "none", "nothing", "zero", "unsure", "unclear", "uncertain", "unknown", "maybe", "perhaps",
               "cannot", "can't", "hard", "difficult")


class PerceptualEntropy(Detector):
    name = "perceptual"
    @dataclass
    class Config:
        """``tokens``: the uncertainty words (those that are not single tokens are left out);
        ``layer``: as :class:`~.decision.DecisionEntropy`; ``reduce``: over the claim's tokens."""

        layer: Layer = "auto"
        tokens: tuple[str, ...] = UNCERTAINTY
        reduce: Reduce = "max"

        def validate(self):
            check_layer(self.layer, "perceptual")
            if not self.tokens:
                raise ConfigError("perceptual: give at least one uncertainty token")

    def ids(self, adapter) -> list[int]:
        ids = token_ids(adapter, self.config.tokens)
        if not ids:
            raise ConfigError(f"perceptual: none of the uncertainty tokens {', '.join(self.config.tokens)} is a single "
                              "token of this model")
        return ids

    def read(self, run, text_run) -> np.ndarray:
        ids = torch.tensor(self.ids(run.adapter))
        out = []
        for lp in run.lens():  # [L, k, V]
            m = torch.logsumexp(lp[..., ids], -1).exp().clamp(1e-12, 1 - 1e-12)  # [L, k]
            H = -(m * m.log() + (1 - m) * (1 - m).log())
            out.append(reduce_tokens(H, self.config.reduce).numpy())
        return np.stack(out)
