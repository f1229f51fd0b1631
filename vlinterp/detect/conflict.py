"""Inferential conflict ("Anatomy of a Lie": logical-causal failure): how much the image, rather
than the text, made the model say the claimed words.

``c_l = log P_l(words | image, prompt, prefix) - log P_l(words | prompt, prefix)``: the claimed
tokens' summed log-probability read from layer ``l`` by the logit lens with the image, minus the
same with the image removed (the prompt and the answer so far kept, text only). A grounded claim
owes its words to the image (``c`` large); a hallucination is what the text alone already
predicted. The value is ``-c_l``: ``[B, L]``, higher = more likely hallucinated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import DataError
from .base import Detector, Layer, Reduce, check_layer, reduce_tokens


class InferentialConflict(Detector):
    name = "conflict"
    needs = ("image", "text")

    @dataclass
    class Config:
        """``layer``: as :class:`~.decision.DecisionEntropy`; ``reduce``: over the claim's tokens
        (``sum``: the log-probability of the whole claim)."""

        layer: Layer = "auto"
        reduce: Reduce = "sum"

        def validate(self):
            check_layer(self.layer, "conflict")

    def read(self, run, text_run) -> np.ndarray:
        if text_run is None:
            raise DataError("conflict needs the text-only run of its claims")
        out = []
        for r, (lp, lt) in enumerate(zip(run.lens(), text_run.lens())):
            tok = run.tokens[r]
            if tok.tolist() != text_run.tokens[r].tolist():
                raise DataError(f"claim {run.claims[r].id or r}: its words tokenize differently without the image")
            k = len(tok)
            with_image = lp[:, range(k), tok]  # [L, k]
            without = lt[:, range(k), tok]
            out.append(-reduce_tokens(with_image - without, self.config.reduce).numpy())
        return np.stack(out)
