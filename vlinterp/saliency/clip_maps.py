"""CLIP text-token scores for an image (``clip_text``).

Chefer's relevancy rule (see :mod:`.relevancy`) in the TEXT tower: the explained scalar is the
image-text logit of the image and text ``t_k``; the relevance row of the pooled position (EOT,
span ``last`` of the text layout) is read at the text's word tokens (span ``prompt``; specials
and padding score 0). (Image maps for a text are the generic methods on a CLIP batch:
``relevancy``, ``rollout``, ``gradcam``, ``ig``... with ``target`` = the text.)

The Result is not a patch map: ``arrays["scores"]`` is ``[n_targets, T]`` over the text layout's
positions (``T`` = padded text length), ``layout`` is ``None`` (no heat map), and ``meta`` holds
``kind="text_tokens"``, per target its ``tokens`` (strings) and ``positions``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import NaNError
from ..core.result import Result
from .base import SaliencyMethod, _jsonable
from .relevancy import relevance_maps


def _token_strings(adapter, ids) -> list[str]:
    tok = getattr(adapter.backend, "tokenizer", None) or getattr(getattr(adapter.backend, "processor", None), "tokenizer", None)
    out = []
    for i in ids:
        try:
            out.append(tok.decode([int(i)]).strip())
        except Exception:  # a tokenizer without decode: show the id
            out.append(str(int(i)))
    return out


class ClipTextRelevancy(SaliencyMethod):
    name = "clip_text"
    kinds = ("clip",)

    @dataclass
    class Config:
        """``layers`` / ``heads`` of the text tower (``None`` = all)."""

        layers: tuple[int, ...] | None = None
        heads: tuple[int, ...] | None = None

    def attribute(self, batch, target=None, image_index: int = 0) -> Result:
        t = self.resolve(batch, target, image_index)
        text = t.batch.layouts["text"]
        T = text.shape[1]
        rows = list(t.spec)
        layers, maps = relevance_maps(self.adapter, t, self.config.layers, self.config.heads, stream="text", rows=rows)
        scores = np.zeros((t.n, T), np.float32)
        tokens, positions = [], []
        for k, (r, R) in enumerate(zip(rows, maps)):
            eot = int(text.span("last", r)[-1])
            pos = text.span("prompt", r)
            scores[k, pos.numpy()] = R[eot, pos].numpy()  # a numpy index: a 1-element tensor would index as a scalar
            positions.append(pos.tolist())
            tokens.append(_token_strings(self.adapter, t.batch.inputs["input_ids"][r, pos]))
        if not np.all(np.isfinite(scores)):
            raise NaNError("clip_text produced NaN or Inf scores")
        meta = {"method": self.name, "family": "clip", "model": self.adapter.name, "options": _jsonable(self.opts),
                "target": t.spec, "image_index": int(image_index), "kind": "text_tokens", "layers": layers,
                "tokens": tokens, "positions": positions, "stream": "text"}
        return Result(self.name, {"scores": scores}, None, list(t.labels), 0, meta)
