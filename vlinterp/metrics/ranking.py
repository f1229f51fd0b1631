"""Similarity of two rankings: rank-biased overlap (Webber, Moffat & Zobel, TOIS 2010).

``RBO@k(A, B; p) = (1 - p) / (1 - p^k) * sum_{d=1..k} p^(d-1) |A[:d] & B[:d]| / d``: the
agreement of the two top-``d`` prefixes, weighted geometrically toward the top (``p`` near 1: a
patient reader looks deep; small ``p``: only the first ranks count), normalised so that two
identical top-``k`` lists read 1 and two disjoint ones 0. ARC (:mod:`vlinterp.saliency.tam`)
weights context tokens by it.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.errors import ConfigError


def rank_biased_overlap(a, b, p: float = 0.9) -> float:
    """RBO of two rankings ``a``, ``b`` (sequences of ids, best first, truncated to the shorter)."""
    if not 0 < p < 1:
        raise ConfigError(f"rank-biased overlap needs 0 < p < 1, got {p}")
    a, b = list(a), list(b)
    k = min(len(a), len(b))
    if k == 0:
        return 0.0
    seen_a, seen_b, overlap, total = set(), set(), 0, 0.0
    for d in range(k):
        x, y = a[d], b[d]
        if x == y:
            overlap += 1
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        total += p ** d * overlap / (d + 1)
    return float((1 - p) / (1 - p ** k) * total)


def topk_rbo(logits: torch.Tensor, ref: torch.Tensor, k: int = 10, p: float = 0.9) -> np.ndarray:
    """``[N]`` RBO of the top-``k`` ranking of each row of ``logits`` ``[N, V]`` with that of ``ref`` ``[V]``."""
    if k < 1:
        raise ConfigError(f"rank-biased overlap needs k >= 1, got {k}")
    r = ref.topk(min(k, ref.shape[-1])).indices.tolist()
    rows = logits.topk(min(k, logits.shape[-1]), -1).indices.tolist()
    return np.array([rank_biased_overlap(x, r, p) for x in rows], np.float64)


__all__ = ["rank_biased_overlap", "topk_rbo"]
