"""Tiny random SmolVLM (``SmolVLMForConditionalGeneration``) and Idefics3
(``Idefics3ForConditionalGeneration``) with their real processors built offline: a SigLIP-style
tower 2 x 32 on 64 px tiles of 8 px patches (8x8), pixel shuffle ``scale_factor=2`` -> 4x4 = 16
tokens per tile, a Llama LM 2 x 32; images resized to a longest edge of 128 px and cut into 64 px
tiles (up to 2x2 + the global image). The tokenizer holds the ``<row_r_col_c>`` tile markers."""
from __future__ import annotations

from .vlm_tiny import chat_template, finish, text_kw, tokenizer

MARKERS = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]


def build_tiny(variant: str = "smolvlm", seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as T

    named = {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
             "end_of_utterance_token": "<end_of_utterance>", "video_token": "<video>"}
    tok = tokenizer(list(named.values()) + MARKERS, named)
    smol = variant == "smolvlm"
    vc = (T.SmolVLMVisionConfig if smol else T.Idefics3VisionConfig)(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                                      num_attention_heads=2, image_size=64, patch_size=8)
    cfg = (T.SmolVLMConfig if smol else T.Idefics3Config)(vision_config=vc, text_config=T.LlamaConfig(**text_kw(tok)),
                                                          image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2)
    model = finish(T.SmolVLMForConditionalGeneration if smol else T.Idefics3ForConditionalGeneration, cfg, seed, attn_implementation)
    sizes = dict(size={"longest_edge": 128}, max_image_size={"longest_edge": 64})
    if smol:
        proc = T.SmolVLMProcessor(image_processor=T.SmolVLMImageProcessor(**sizes), tokenizer=tok,
                                  video_processor=T.SmolVLMVideoProcessor(), image_seq_len=16, chat_template=chat_template("<image>"))
    else:
        proc = T.Idefics3Processor(image_processor=T.Idefics3ImageProcessor(**sizes), tokenizer=tok, image_seq_len=16,
                                   chat_template=chat_template("<image>"))
    return model, proc
