"""Visual token pruning for LLaVA models, applied for real: dropped image tokens leave the sequence
and the KV cache; kept ones keep their positions.

Methods (one file each, one registry): ``random``, ``fastv``, ``visionzip``, ``info``, ``hybrid``.
``make_pruner("hybrid:0.25")``; ``PrunedLM(adapter).generate(batch, pruner)``. Analysis:
:mod:`.information` (per-token information by removal, proxies, the horizon), :mod:`.flops`
(analytical prefill/decode FLOPs), :mod:`.bench` (retention, latency and FLOPs ratios).
"""
from .base import REGISTRY, Pruner, make_pruner
from .runner import LayerCtx, Prefill, PrunedLM

__all__ = ["Pruner", "REGISTRY", "make_pruner", "PrunedLM", "Prefill", "LayerCtx"]
