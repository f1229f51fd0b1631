"""Tiny random InternVL (``InternVLForConditionalGeneration``) with its real processor built offline:
InternViT 2 x 32 on 64 px tiles of 8 px patches (CLS + 8x8), pixel shuffle 0.5 -> 4x4 = 16 tokens
per tile, a Qwen2 LM 2 x 32; ``GotOcr2ImageProcessor`` cutting 1..6 tiles of 64 px (+ thumbnail)."""
from __future__ import annotations

from .vlm_tiny import chat_template, finish, text_kw, tokenizer


def build_tiny(variant: str = "internvl", seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as T

    named = {"context_image_token": "<IMG_CONTEXT>", "start_image_token": "<img>", "end_image_token": "</img>",
             "video_token": "<video>"}
    tok = tokenizer(list(named.values()), named)
    vc = T.InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=[64, 64], patch_size=[8, 8])
    cfg = T.InternVLConfig(vision_config=vc, text_config=T.Qwen2Config(**text_kw(tok)), image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
                           downsample_ratio=0.5, image_seq_length=16)
    model = finish(T.InternVLForConditionalGeneration, cfg, seed, attn_implementation)
    ip = T.GotOcr2ImageProcessor(size={"height": 64, "width": 64}, crop_to_patches=True, min_patches=1, max_patches=6)
    proc = T.InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=T.InternVLVideoProcessor(),
                               image_seq_length=16, chat_template=chat_template("<IMG_CONTEXT>"))
    return model, proc
