"""Tiny random LLaVA models of the real classes, for tests and for trying the API.

``llava``: ``LlavaForConditionalGeneration`` shaped like llava-1.5 (CLIP vision tower,
``vision_feature_layer=-2``, CLS dropped, square patch grid, 2-layer MLP projector, Llama
LM) scaled down: 32x32 images, patch 8 -> 4x4 = 16 image tokens.
``llava-next``: ``LlavaNextForConditionalGeneration`` with any-resolution tiles
(pinpoints 32x64, 64x32, 64x64) and image-newline tokens.
"""
from __future__ import annotations

import torch

from ..core.errors import ArgumentError
from .wordtok import word_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    " ASSISTANT:{% else %} {% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "</s>{% endif %}{% endfor %}"
)


def llava_config(variant: str = "llava", image_size: int = 32, patch_size: int = 8, vision_layers: int = 2,
                 vision_hidden: int = 32, lm_layers: int = 2, lm_hidden: int = 32, vocab_size: int | None = None,
                 heads: int = 2, kv_heads: int = 1, image_token_index: int = 4):
    from transformers import CLIPVisionConfig, LlamaConfig

    vocab_size = vocab_size or len(word_tokenizer())
    vc = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_hidden_layers=vision_layers,
                          num_attention_heads=heads, image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden)
    tc = LlamaConfig(hidden_size=lm_hidden, intermediate_size=lm_hidden * 2, num_hidden_layers=lm_layers,
                     num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab_size,
                     max_position_embeddings=1024, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    common = dict(vision_config=vc, text_config=tc, image_token_index=image_token_index, vision_feature_layer=-2,
                  vision_feature_select_strategy="default", projector_hidden_act="gelu")
    if variant == "llava":
        from transformers import LlavaConfig

        return LlavaConfig(**common)
    if variant == "llava-next":
        from transformers import LlavaNextConfig

        s = image_size
        return LlavaNextConfig(**common, image_grid_pinpoints=[[s, 2 * s], [2 * s, s], [2 * s, 2 * s]])
    raise ArgumentError(f"unknown llava variant {variant!r}")


def llava_processor(config, tokenizer=None):
    """The real processor class (``LlavaProcessor`` / ``LlavaNextProcessor``) with a CLIP-style
    image processor (resize shortest edge + centre crop) and our offline word tokenizer."""
    from transformers import CLIPImageProcessor

    tok = tokenizer or word_tokenizer()
    s = config.vision_config.image_size
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    common = dict(tokenizer=tok, patch_size=config.vision_config.patch_size,
                  vision_feature_select_strategy=config.vision_feature_select_strategy, chat_template=CHAT_TEMPLATE,
                  image_token="<image>", num_additional_image_tokens=1)
    if config.model_type == "llava_next":
        from transformers import LlavaNextImageProcessor, LlavaNextProcessor

        ip = LlavaNextImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s},
                                     image_grid_pinpoints=config.image_grid_pinpoints, image_mean=mean, image_std=std)
        return LlavaNextProcessor(image_processor=ip, **common)
    from transformers import LlavaProcessor

    ip = CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s}, image_mean=mean, image_std=std)
    return LlavaProcessor(image_processor=ip, **common)


def build_tiny(variant: str = "llava", seed: int = 0, attn_implementation: str = "sdpa", **cfg_kw):
    """Return ``(model, processor)``: a seeded random tiny model of the real class."""
    from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    cfg = llava_config(variant, **cfg_kw)
    cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    cls = LlavaNextForConditionalGeneration if variant == "llava-next" else LlavaForConditionalGeneration
    model = cls(cfg).eval()
    return model, llava_processor(cfg)


def save_tiny(variant: str, out_dir: str, **kw) -> str:
    """Save the tiny model + processor in the HF on-disk format (``save_pretrained``)."""
    model, proc = build_tiny(variant, **kw)
    from .base import save_pretrained_dir

    return save_pretrained_dir(out_dir, model, proc, safe_serialization=True)
