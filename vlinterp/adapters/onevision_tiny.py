"""Tiny random LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``) with its real processor
built offline: SigLIP tower 2 x 32 on 32 px crops of 8 px patches (4x4 = 16 features per crop),
a Qwen2 LM 2 x 32, pinpoints up to 96x96 px and ``anyres_max_4`` (so large canvases are shrunk as
in the published ``anyres_max_9``), ``vision_feature_select_strategy="full"`` (SigLIP has no CLS)."""
from __future__ import annotations

from .vlm_tiny import chat_template, finish, text_kw, tokenizer

PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64], [32, 96], [96, 32], [64, 96], [96, 64], [96, 96]]


def build_tiny(variant: str = "llava-onevision", seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as T

    tok = tokenizer(["<image>", "<video>"], {"image_token": "<image>", "video_token": "<video>"})
    c = tok.convert_tokens_to_ids
    vc = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, vision_use_head=False)
    cfg = T.LlavaOnevisionConfig(vision_config=vc, text_config=T.Qwen2Config(**text_kw(tok)), image_token_id=c("<image>"),
                                 video_token_id=c("<video>"), vision_feature_layer=-1, vision_feature_select_strategy="full",
                                 image_grid_pinpoints=PINPOINTS, vision_aspect_ratio="anyres_max_4")
    model = finish(T.LlavaOnevisionForConditionalGeneration, cfg, seed, attn_implementation)
    ip = T.LlavaOnevisionImageProcessor(size={"height": 32, "width": 32}, image_grid_pinpoints=PINPOINTS)
    proc = T.LlavaOnevisionProcessor(image_processor=ip, tokenizer=tok, video_processor=T.LlavaOnevisionVideoProcessor(),
                                     num_image_tokens=16, vision_feature_select_strategy="full",
                                     vision_aspect_ratio="anyres_max_4", chat_template=chat_template("<image>"))
    return model, proc
