"""Tiny random Gemma 3 and PaliGemma of the real classes, with their real processors built offline.

``gemma3`` (``Gemma3ForConditionalGeneration``): SigLIP 2 x 32 on 32 px images of 4 px patches
(8x8) average-pooled to ``mm_tokens_per_image=16`` (4x4) soft tokens, a Gemma 3 LM 2 x 32 with one
sliding-window layer (window 8) and one global layer, bidirectional attention inside each image;
``Gemma3ImageProcessor`` at 32 px (pan-and-scan via ``processor_kwargs``).
``paligemma`` (``PaliGemmaForConditionalGeneration``): SigLIP 2 x 32 on 32 px images of 8 px
patches (4x4 = 16 tokens), a Gemma 2 LM 2 x 32 (soft-capped attention, runs eager), the
processor's 1152 ``<locNNNN>``/``<segNNN>`` tokens in the vocabulary (sized after the processor).
"""
from __future__ import annotations

import torch

from .vlm_tiny import chat_template, finish, text_kw, tokenizer


def build_gemma3(seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as T

    named = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    tok = tokenizer(list(named.values()), named)
    c = tok.convert_tokens_to_ids
    vc = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=4, vision_use_head=False)
    tc = T.Gemma3TextConfig(**text_kw(tok), head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                            layer_types=["sliding_attention", "full_attention"])
    cfg = T.Gemma3Config(vision_config=vc, text_config=tc, image_token_id=c("<image_soft_token>"),
                         boi_token_id=c("<start_of_image>"), eoi_token_id=c("<end_of_image>"), mm_tokens_per_image=16)
    model = finish(T.Gemma3ForConditionalGeneration, cfg, seed, attn_implementation)
    w = model.model.multi_modal_projector.mm_input_projection_weight  # transformers initialises it to zeros:
    with torch.no_grad():  # random images would not reach the LM at all
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(seed)) * 0.2)
    ip = T.Gemma3ImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    proc = T.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=16, chat_template=chat_template("<start_of_image>"))
    return model, proc


def build_paligemma(seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as T

    tok = tokenizer(["<image>"], {"image_token": "<image>"})
    ip = T.SiglipImageProcessor(size={"height": 32, "width": 32})
    ip.image_seq_length = 16
    proc = T.PaliGemmaProcessor(image_processor=ip, tokenizer=tok)  # adds the loc/seg tokens to tok
    vc = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, vision_use_head=False, projection_dim=32)
    tc = T.Gemma2Config(**text_kw(tok), head_dim=16, query_pre_attn_scalar=16, sliding_window=8)
    cfg = T.PaliGemmaConfig(vision_config=vc, text_config=tc, image_token_id=proc.image_token_id, projection_dim=32)
    model = finish(T.PaliGemmaForConditionalGeneration, cfg, seed, attn_implementation, fixed={"text_config": "eager"})
    return model, proc


def build_tiny(variant: str = "gemma3", **kw):
    return build_gemma3(**kw) if variant == "gemma3" else build_paligemma(**kw)
