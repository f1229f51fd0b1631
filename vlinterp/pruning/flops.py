"""Analytical FLOPs of a LLaVA language model for a kept-token schedule (multiply-adds x 2).

Per decoder layer with ``n`` tokens: the projections and the MLP cost ``2 n P`` (``P`` = the
layer's matrix parameters) and causal attention ``2 * 2 n(n+1)/2 * H * hd`` (scores and the
weighted sum). Decode steps cost ``2 P + 4 c H hd`` per layer with ``c`` cached keys, plus the
head ``2 D V`` per generated token (prefill: the head at the last position only).
"""
from __future__ import annotations


def layer_params(cfg) -> int:
    """Matrix parameters of one decoder layer (Llama-style: q/k/v/o, gate/up/down)."""
    D, H = cfg.hidden_size, cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or D // H
    kv = getattr(cfg, "num_key_value_heads", None) or H
    return D * H * hd + 2 * D * kv * hd + H * hd * D + 3 * D * cfg.intermediate_size


def lm_flops(cfg, n_text: int, image_per_layer: list[int], decode_steps: int = 0) -> dict[str, float]:
    """``{"prefill", "decode", "total"}`` FLOPs for one sequence: ``n_text`` non-image tokens and
    ``image_per_layer[l]`` image tokens computed by layer ``l``; ``cfg`` the text config."""
    D, H = cfg.hidden_size, cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or D // H
    P = layer_params(cfg)
    pre = 0.0
    dec = 0.0
    for n_img in image_per_layer:
        n = n_text + n_img
        pre += 2 * n * P + 2 * n * (n + 1) * H * hd
        for s in range(decode_steps):
            dec += 2 * P + 4 * (n + s + 1) * H * hd
    pre += 2 * D * cfg.vocab_size
    dec += decode_steps * 2 * D * cfg.vocab_size
    return {"prefill": pre, "decode": dec, "total": pre + dec}


def tower_flops(vcfg, tokens_per_layer: list[int]) -> float:
    """Prefill FLOPs of a CLIP-style vision tower (bidirectional attention, q/k/v/o and a two-matrix
    MLP per layer) computing ``tokens_per_layer[l]`` tokens (CLS included) in layer ``l``; ``vcfg``
    the vision config. Embeddings and norms are left out (small next to the layers)."""
    D, I = vcfg.hidden_size, vcfg.intermediate_size
    P = 4 * D * D + 2 * D * I
    return float(sum(2 * n * P + 4 * n * n * D for n in tokens_per_layer))


__all__ = ["layer_params", "lm_flops", "tower_flops"]
