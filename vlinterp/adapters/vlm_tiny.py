"""Shared pieces of the tiny VLMs built offline (LLaVA-OneVision, Gemma 3, PaliGemma, InternVL,
SmolVLM/Idefics3): a small chat template over the word-level tokenizer's vocabulary, the text
configs' common sizes, and saving any ``tiny:<variant>`` in the HF on-disk format."""
from __future__ import annotations

import torch

from .wordtok import word_tokenizer


def chat_template(placeholder: str) -> str:
    """``USER: <placeholder per image> text ASSISTANT:`` (the words are in the tiny vocabulary)."""
    return (
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + placeholder + " {% endif %}{% endfor %}"
        "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% else %} {% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
        "</s>{% endif %}{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
    )


def tokenizer(specials: list[str], named: dict[str, str]):
    """The offline word tokenizer with a family's special tokens (ids 0..3 are pad, unk, bos, eos)."""
    return word_tokenizer(specials=["<pad>", "<unk>", "<s>", "</s>"] + [s for s in specials if s not in ("<pad>", "<unk>", "<s>", "</s>")],
                          named=named)


def text_kw(tok, hidden: int = 32, layers: int = 2, heads: int = 2, kv_heads: int = 1) -> dict:
    """Sizes of a tiny decoder sharing the tokenizer's vocabulary."""
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv_heads, vocab_size=len(tok), max_position_embeddings=4096, pad_token_id=0,
                bos_token_id=2, eos_token_id=3)


def finish(klass, cfg, seed: int, attn_implementation: str, fixed: dict | None = None):
    """Seeded random weights of ``klass(cfg)`` with every sub-config on ``attn_implementation``
    except those ``fixed`` names (``{"text_config": "eager"}``: Gemma 2 supports no sdpa)."""
    cfg._attn_implementation = attn_implementation
    for name in ("text_config", "vision_config"):
        sub = getattr(cfg, name, None)
        if sub is not None:
            sub._attn_implementation = (fixed or {}).get(name, attn_implementation)
    torch.manual_seed(seed)
    return klass(cfg).eval()


def save_tiny(variant: str, out_dir: str, **kw) -> str:
    """Save ``tiny:<variant>`` (model + processor) with ``save_pretrained``; ``vi.load(out_dir)``
    reloads it with ``AutoProcessor`` and the model class."""
    from . import families

    spec = families.for_tiny(variant)
    model, proc = spec.build_tiny(variant, **kw)
    from .base import save_pretrained_dir

    return save_pretrained_dir(out_dir, model, proc, safe_serialization=True)


__all__ = ["chat_template", "tokenizer", "text_kw", "finish", "save_tiny"]
