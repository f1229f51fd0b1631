"""Tiny random Qwen VL models of the real classes, with their real processors built offline.

``qwen2-vl`` (``Qwen2VLForConditionalGeneration``), ``qwen2.5-vl`` (``Qwen2_5_VLForConditionalGeneration``:
windowed vision attention, window = 2x2 merged blocks, block 1 full) and ``qwen3-vl``
(``Qwen3VLForConditionalGeneration``: learned position grid, interleaved M-RoPE, one DeepStack merger
after vision block 0): vision 2 blocks x 32, LM 2 layers x 32, patch 8, merge 2, images resized by
``smart_resize`` to 32x32 .. 64x64 pixels (4 .. 16 image tokens). The word-level tokenizer of
:mod:`.wordtok` with Qwen's named tokens (``<|image_pad|>``, ``<|vision_start|>``...) and a small
Qwen-style chat template (``<|im_start|>user ... <|im_end|> <|im_start|>assistant``).
"""
from __future__ import annotations

import torch

from .wordtok import word_tokenizer

VARIANTS = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")
QWEN_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>",
                 "<|video_pad|>", "<|im_start|>", "<|im_end|>"]
NAMED = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
         "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def qwen_tokenizer(ids: dict[str, int] | None = None):
    """The offline word tokenizer with Qwen's special tokens (``ids`` pins them, e.g. to a
    published checkpoint's ids)."""
    return word_tokenizer(specials=QWEN_SPECIALS, named=NAMED, ids=ids)


def token_ids(tok) -> dict[str, int]:
    """The config's token ids as the tokenizer assigns them."""
    c = tok.convert_tokens_to_ids
    return dict(image_token_id=c("<|image_pad|>"), video_token_id=c("<|video_pad|>"),
                vision_start_token_id=c("<|vision_start|>"), vision_end_token_id=c("<|vision_end|>"))


def qwen_config(variant: str = "qwen2.5-vl", tok=None, hidden: int = 32, layers: int = 2, vision_hidden: int = 32,
                vision_layers: int = 2, heads: int = 2, kv_heads: int = 1, patch_size: int = 8):
    """A tiny config of the real class (``mrope_section`` sums to head_dim/2; the vision output
    width equals the LM width)."""
    import transformers as T

    tok = tok or qwen_tokenizer()
    hd = hidden // heads
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
                pad_token_id=0, bos_token_id=2, eos_token_id=3)
    sec = [hd // 2 - 2 * (hd // 6), hd // 6, hd // 6]  # sums to hd/2 (16 -> [4, 2, 2])
    vision = dict(depth=vision_layers, num_heads=heads, patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2)
    if variant == "qwen2-vl":
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": sec, "rope_theta": 10000.0}
        vision.update(embed_dim=vision_hidden, hidden_size=hidden, mlp_ratio=2)
        return T.Qwen2VLConfig(text_config=text, vision_config=vision, **token_ids(tok))
    if variant == "qwen2.5-vl":
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": sec, "rope_theta": 10000.0}
        vision.update(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, out_hidden_size=hidden,
                      window_size=2 * 2 * patch_size, fullatt_block_indexes=[vision_layers - 1])
        return T.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **token_ids(tok))
    if variant == "qwen3-vl":
        text.update(head_dim=hd, rope_parameters={"rope_type": "default", "mrope_section": sec, "mrope_interleaved": True,
                                                  "rope_theta": 10000.0})
        vision.update(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, out_hidden_size=hidden,
                      num_position_embeddings=16, deepstack_visual_indexes=[0])
        return T.Qwen3VLConfig(text_config=text, vision_config=vision, **token_ids(tok))
    from ..core.errors import LoadError

    raise LoadError(f"unknown Qwen variant {variant!r}; known: {', '.join(VARIANTS)}")


def qwen_processor(config, tok=None, min_pixels: int = 32 * 32, max_pixels: int = 64 * 64, chat_template: str | None = CHAT_TEMPLATE):
    """The real processor class of ``config`` with the real ``Qwen2VLImageProcessor``
    (``smart_resize`` to multiples of ``patch * merge`` within ``[min_pixels, max_pixels]``) and
    video processor (the processors refuse ``None``)."""
    import transformers as T

    tok = tok or qwen_tokenizer()
    vc = config.vision_config
    common = dict(patch_size=vc.patch_size, merge_size=vc.spatial_merge_size, temporal_patch_size=vc.temporal_patch_size)
    ip = T.Qwen2VLImageProcessor(size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, **common)
    if config.model_type == "qwen3_vl":
        ip.image_mean, ip.image_std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
        return T.Qwen3VLProcessor(image_processor=ip, tokenizer=tok, video_processor=T.Qwen3VLVideoProcessor(**common),
                                  chat_template=chat_template)
    klass = T.Qwen2_5_VLProcessor if config.model_type == "qwen2_5_vl" else T.Qwen2VLProcessor
    return klass(image_processor=ip, tokenizer=tok, video_processor=T.Qwen2VLVideoProcessor(**common), chat_template=chat_template)


def build_tiny(variant: str = "qwen2.5-vl", seed: int = 0, attn_implementation: str = "sdpa", **cfg_kw):
    """Return ``(model, processor)``: a seeded random tiny model of the real class."""
    import transformers as T

    tok = qwen_tokenizer()
    cfg = qwen_config(variant, tok, **cfg_kw)
    cfg._attn_implementation = attn_implementation
    for sub in (cfg.text_config, cfg.vision_config):
        sub._attn_implementation = attn_implementation
    klass = {"qwen2_vl": T.Qwen2VLForConditionalGeneration, "qwen2_5_vl": T.Qwen2_5_VLForConditionalGeneration,
             "qwen3_vl": T.Qwen3VLForConditionalGeneration}[cfg.model_type]
    torch.manual_seed(seed)
    model = klass(cfg).eval()
    return model, qwen_processor(cfg, tok)


def save_tiny(variant: str, out_dir: str, **kw) -> str:
    """Save the tiny model + processor in the HF on-disk format (``save_pretrained``); ``vi.load(out_dir)``
    reloads it with ``AutoProcessor`` and the model class."""
    model, proc = build_tiny(variant, **kw)
    from .base import save_pretrained_dir

    return save_pretrained_dir(out_dir, model, proc, safe_serialization=True)


__all__ = ["VARIANTS", "build_tiny", "save_tiny", "qwen_config", "qwen_processor", "qwen_tokenizer"]
