"""LLaVA adapter: transformers ``LlavaForConditionalGeneration`` (llava-1.5 layout) and
``LlavaNextForConditionalGeneration`` (any-resolution tiles + newline tokens) with their processors.

Both run on the generic :class:`~vlinterp.adapters.vlm.VlmAdapter` through the ``llava`` family
entry (:mod:`vlinterp.adapters.families.llava`); ``LlavaAdapter`` is that class, kept under its
old name for code that imports it.

Streams: ``lm`` (the language-model sequence ``[B, T]``: text, image patches, specials,
padding), ``vision`` (the vision tower: one row per crop, CLS + patch grid) and
``projector`` (projector output: one row per crop, patch grid only).
"""
from __future__ import annotations

from .vlm import VlmAdapter

IMAGE_TOKEN = "<image>"

LlavaAdapter = VlmAdapter


def save_tiny(variant: str, out_dir: str, **kw) -> str:
    """Save a tiny LLaVA (``llava`` / ``llava-next``) with its processor in the HF format."""
    from .llava_tiny import save_tiny as _save

    return _save(variant, out_dir, **kw)


__all__ = ["LlavaAdapter", "IMAGE_TOKEN", "save_tiny"]
