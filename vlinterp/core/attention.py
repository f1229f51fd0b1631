"""Attention probabilities recomputed from a module's own inputs and weights.

Fused kernels (sdpa, flash, timm's ``fused_attn``, open_clip's ``need_weights=False``)
return no probabilities. These functions recompute ``softmax(q k^T * scale + mask)`` for
one attention module from the inputs a forward hook saw, so maps are available for the
layers asked without switching the whole model to eager. Each returns ``[B, H, Tq, Tk]``
(a packed vision tower, :func:`varlen_qkv_attention`: one row ``[1, H, N, N]``).
"""
from __future__ import annotations

import torch


CHUNK_ELEMENTS = 1 << 25  # float32 scores computed at once (128 MB): longer sequences go in query chunks


def _softmax(scores: torch.Tensor, dtype) -> torch.Tensor:
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)


def _apply_mask(scores: torch.Tensor, mask, causal: bool, rows: torch.Tensor | None = None, T: int | None = None) -> torch.Tensor:
    """Mask ``scores`` ``[..., Tq, Tk]``. ``rows`` ``[Tq]``: the query positions the rows hold, out of
    ``T`` (default: all ``T = Tq`` positions in order)."""
    Tq, Tk = scores.shape[-2:]
    T = Tq if T is None else T
    if mask is not None:
        m = mask[..., :T, :Tk]
        if rows is not None and m.shape[-2] != 1:
            m = m.index_select(-2, rows.to(m.device))
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min)
        else:
            scores = scores + m.to(scores.dtype)
    elif causal and T > 1:
        q = torch.arange(T, device=scores.device) if rows is None else rows.to(scores.device)
        keep = torch.arange(Tk, device=scores.device)[None, :] <= (q[:, None] + (Tk - T))
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return scores


def _query_rows(queries, T: int, device) -> torch.Tensor | None:
    """``queries`` (ints, negative from the end) -> LongTensor ``[nq]`` of positions in ``0..T-1``."""
    if queries is None:
        return None
    q = torch.as_tensor(queries, dtype=torch.long).flatten()
    return (q % T).to(device)


def probs_in_chunks(q: torch.Tensor, k: torch.Tensor, scale: float, mask_fn, out_dtype, cap=None) -> torch.Tensor:
    """``softmax(q k^T * scale)`` ``[B, H, Tq, Tk]`` computed ``rows`` at a time so the float32
    scores never exceed :data:`CHUNK_ELEMENTS` (a 600-token LLaVA prompt with 32 heads would hold
    several copies of ``[B, 32, 600, 600]`` at once). ``mask_fn(scores, lo, hi)`` masks rows ``lo:hi``."""
    B, H, Tq, _ = q.shape
    Tk = k.shape[-2]
    step = max(1, CHUNK_ELEMENTS // max(1, B * H * Tk))
    if step >= Tq:
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        if cap:
            scores = torch.tanh(scores / cap) * cap
        return _softmax(mask_fn(scores, 0, Tq), out_dtype)
    out = torch.empty(B, H, Tq, Tk, dtype=out_dtype, device=q.device)
    kt = k.transpose(-1, -2)
    for lo in range(0, Tq, step):
        hi = min(Tq, lo + step)
        scores = torch.matmul(q[:, :, lo:hi], kt) * scale
        if cap:
            scores = torch.tanh(scores / cap) * cap
        out[:, :, lo:hi] = _softmax(mask_fn(scores, lo, hi), out_dtype)
    return out


def hf_self_attention(module, args, kwargs, queries=None) -> torch.Tensor:
    """transformers attention with ``q_proj``/``k_proj`` (Llama, Mistral, Qwen, CLIP, ViT...).

    Handles optional ``q_norm``/``k_norm`` (per head: Qwen3, Gemma 3; over the whole projection:
    InternViT), rotary ``position_embeddings``, grouped KV heads, logit soft-capping (Gemma 2's
    ``attn_logit_softcapping``) and the layer's mask (4D float/bool, or ``None`` with a causal
    module): the mask the layer really receives, so bidirectional blocks (Gemma 3's image tokens,
    PaliGemma's prefix) and sliding windows come out as the model computes them.

    ``queries`` (positions, negative from the end): only those query rows, ``[B, H, nq, T]``; the
    queries are projected at those positions only. Long sequences are computed in query chunks
    (:func:`probs_in_chunks`)."""
    h = kwargs.get("hidden_states", args[0] if args else None)
    B, T, _ = h.shape
    rows = _query_rows(queries, T, h.device)
    hd = getattr(module, "head_dim", None) or module.q_proj.out_features // module.num_heads
    hq = h if rows is None else h.index_select(1, rows)
    Tq = hq.shape[1]
    q, k = module.q_proj(hq), module.k_proj(h)
    qn, kn = getattr(module, "q_norm", None), getattr(module, "k_norm", None)
    full_width = qn is not None and getattr(qn, "weight", None) is not None and qn.weight.shape[-1] == q.shape[-1] != hd
    if full_width:
        q, k = qn(q), kn(k)
    q, k = q.view(B, Tq, -1, hd), k.view(B, T, -1, hd)
    if qn is not None and not full_width:
        q, k = qn(q), kn(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    pe = kwargs.get("position_embeddings")
    if pe is not None:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        cos, sin = pe
        k = apply_rotary_pos_emb(k, k, cos, sin)[0]
        if rows is not None and cos.dim() >= 2 and cos.shape[-2] == T:
            cos, sin = cos.index_select(-2, rows), sin.index_select(-2, rows)
        q = apply_rotary_pos_emb(q, q, cos, sin)[0]
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)
    scale = getattr(module, "scaling", None) or getattr(module, "scale", None) or hd**-0.5
    cap = getattr(module, "attn_logit_softcapping", None)
    mask = kwargs.get("attention_mask")
    causal = bool(getattr(module, "is_causal", False))
    all_rows = torch.arange(T, device=h.device) if rows is None else rows

    def mask_fn(scores, lo, hi):
        return _apply_mask(scores, mask, causal, all_rows[lo:hi], T)

    return probs_in_chunks(q, k, scale, mask_fn, q.dtype, cap)


def key_writes(probs: torch.Tensor, attn_in: torch.Tensor, module, query: int = -1) -> torch.Tensor:
    """``[B, Tk, D]``: what each key writes into query row ``query`` of one attention layer,
    ``W_O (sum over heads of p_qj v_j)``, without ``o_proj``'s bias: the rows sum to the layer's output
    at that query less the bias. ``probs`` ``[B, H, Tq, Tk]`` (e.g. :func:`hf_self_attention`, also
    with ``queries``), ``attn_in`` ``[B, Tk, D]`` the layer's normed input, ``module`` a transformers
    attention with ``v_proj``/``o_proj``."""
    B, T, _ = attn_in.shape
    H = probs.shape[1]
    hd = getattr(module, "head_dim", None) or module.v_proj.out_features // H
    v = module.v_proj(attn_in).view(B, T, -1, hd)
    if v.shape[2] != H:
        v = v.repeat_interleave(H // v.shape[2], dim=2)
    w = probs[:, :, query, :].permute(0, 2, 1)[..., None].to(v.dtype) * v  # [B, Tk, H, hd]
    return torch.nn.functional.linear(w.reshape(B, T, H * hd), module.o_proj.weight)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def varlen_qkv_attention(module, args, kwargs) -> torch.Tensor:
    """Packed variable-length self-attention (the vision blocks of Qwen2-VL, Qwen2.5-VL, Qwen3-VL):
    one ``qkv`` projection over ``hidden_states`` ``[N, D]`` holding several sequences (images, or
    Qwen2.5-VL's attention windows) split at ``cu_seqlens`` ``[n + 1]``, rotary
    ``position_embeddings`` ``(cos, sin)`` ``[N, head_dim]`` applied rotate-half in float32 as the
    model does. Returns ``[1, H, N, N]`` over the packed row: each sequence's ``[H, t, t]``
    probabilities on the diagonal, exact zeros between sequences (they never attend to each other)."""
    h = args[0] if args else kwargs["hidden_states"]
    cu = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
    pe = kwargs.get("position_embeddings", args[2] if len(args) > 2 else None)
    N, H = h.shape[0], module.num_heads
    q, k, _ = module.qkv(h).reshape(N, 3, H, -1).permute(1, 0, 2, 3).unbind(0)  # [N, H, hd]
    if pe is not None:
        cos, sin = (t.unsqueeze(-2).float() for t in pe)
        q = (q.float() * cos + _rotate_half(q.float()) * sin).to(h.dtype)
        k = (k.float() * cos + _rotate_half(k.float()) * sin).to(h.dtype)
    q, k = q.transpose(0, 1), k.transpose(0, 1)  # [H, N, hd]
    scale = getattr(module, "scaling", None) or q.shape[-1] ** -0.5
    out = q.new_zeros(1, H, N, N)
    bounds = [int(b) for b in cu.tolist()]
    for a, z in zip(bounds[:-1], bounds[1:]):
        out[0, :, a:z, a:z] = _softmax(torch.matmul(q[:, a:z], k[:, a:z].transpose(-1, -2)) * scale, q.dtype)
    return out


def timm_attention(module, x: torch.Tensor) -> torch.Tensor:
    """timm ``Attention`` (``qkv`` linear, optional ``q_norm``/``k_norm``) on input ``x`` ``[B, N, C]``."""
    B, N, _ = x.shape
    qkv = module.qkv(x).reshape(B, N, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    q, k = module.q_norm(q), module.k_norm(k)
    return _softmax((q * module.scale) @ k.transpose(-2, -1), q.dtype)


def mha_attention(module: torch.nn.MultiheadAttention, q_in, k_in, attn_mask=None) -> torch.Tensor:
    """``nn.MultiheadAttention`` (open_clip) probabilities, per head, for batch-first inputs."""
    E, H = module.embed_dim, module.num_heads
    w, b = module.in_proj_weight, module.in_proj_bias
    q = torch.nn.functional.linear(q_in, w[:E], None if b is None else b[:E])
    k = torch.nn.functional.linear(k_in, w[E : 2 * E], None if b is None else b[E : 2 * E])
    B, Tq, Tk, hd = q.shape[0], q.shape[1], k.shape[1], E // H
    q = q.view(B, Tq, H, hd).transpose(1, 2)
    k = k.view(B, Tk, H, hd).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) * hd**-0.5
    scores = _apply_mask(scores, attn_mask, causal=False) if attn_mask is not None else scores
    return _softmax(scores, q.dtype)


def diffusers_attention(attn, hidden_states, encoder_hidden_states=None) -> torch.Tensor:
    """diffusers ``Attention`` (self or cross): ``[B, H, N_query, N_key]``."""
    ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    if hidden_states.dim() == 4:  # [B, C, h, w] -> [B, hw, C]
        B, C, hh, ww = hidden_states.shape
        hidden_states = hidden_states.view(B, C, hh * ww).transpose(1, 2)
    if attn.norm_cross is not None and encoder_hidden_states is not None:
        ctx = attn.norm_encoder_hidden_states(ctx)
    q = attn.head_to_batch_dim(attn.to_q(hidden_states))
    k = attn.head_to_batch_dim(attn.to_k(ctx))
    probs = attn.get_attention_scores(q, k, None)
    B = hidden_states.shape[0]
    return probs.view(B, attn.heads, probs.shape[1], probs.shape[2])
