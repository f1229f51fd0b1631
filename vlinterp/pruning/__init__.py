"""Visual token pruning for every VLM family (LLaVA, LLaVA-NeXT, Qwen2/2.5/3-VL, OneVision, Gemma 3,
PaliGemma, InternVL, SmolVLM), applied for real: dropped image tokens leave the sequence
and the KV cache; kept ones keep their positions (Qwen: their 3-D M-RoPE ids). VisionZip needs a
CLS tower, one crop per image and a one-to-one projector (llava-1.5); elsewhere it says why not.

Methods (one file each, one registry :data:`PRUNERS`): ``random``, ``fastv``, ``visionzip``,
``info``, ``hybrid``. ``make_pruner("hybrid:0.25")`` / ``PRUNERS.create("fastv", keep=0.5, layer=2)``;
``PrunedLM(adapter).generate(batch, pruner)``. Analysis: :mod:`.information` (per-token information
by removal, proxies, the horizon), :mod:`.flops` (analytical prefill/decode FLOPs). The benchmark
over datasets is :mod:`vlinterp.eval.prune`.
"""
from .base import PRUNERS, REGISTRY, Pruner, make_pruner, parse_pruner
from .runner import LayerCtx, Prefill, PrunedLM

__all__ = ["Pruner", "PRUNERS", "REGISTRY", "make_pruner", "parse_pruner", "PrunedLM", "Prefill", "LayerCtx"]
