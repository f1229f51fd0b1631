"""Registry of adapter families and the ``vlinterp.load`` entry point.

Families register lazily by import path so ``import vlinterp`` stays light. Each
adapter class provides ``can_load(path) -> bool``, ``from_path(path, **kw)`` and
``tiny(variant, **kw)`` (a tiny random model of the real class, for tests).
"""
from __future__ import annotations

import importlib
import os

from ..core.errors import LoadError

# family -> "module:Class"; order is the order paths are tried in
FAMILIES: dict[str, str] = {
    "diffusion": "vlinterp.adapters.diffusion:DiffusionAdapter",
    "llava": "vlinterp.adapters.llava:LlavaAdapter",
    "qwen2-vl": "vlinterp.adapters.vlm:VlmAdapter",
    "qwen2.5-vl": "vlinterp.adapters.vlm:VlmAdapter",
    "qwen3-vl": "vlinterp.adapters.vlm:VlmAdapter",
    "llava-onevision": "vlinterp.adapters.vlm:VlmAdapter",
    "gemma3": "vlinterp.adapters.vlm:VlmAdapter",
    "paligemma": "vlinterp.adapters.vlm:VlmAdapter",
    "internvl": "vlinterp.adapters.vlm:VlmAdapter",
    "smolvlm": "vlinterp.adapters.vlm:VlmAdapter",
    "clip": "vlinterp.adapters.clip:ClipAdapter",
    "vit": "vlinterp.adapters.vit:VitAdapter",
}

# tiny:<variant> -> family
TINY: dict[str, str] = {
    "llava": "llava",
    "llava-next": "llava",
    "qwen2-vl": "qwen2-vl",
    "qwen2.5-vl": "qwen2.5-vl",
    "qwen3-vl": "qwen3-vl",
    "llava-onevision": "llava-onevision",
    "gemma3": "gemma3",
    "paligemma": "paligemma",
    "internvl": "internvl",
    "smolvlm": "smolvlm",
    "idefics3": "smolvlm",
    "clip": "clip",
    "clip-hf": "clip",
    "siglip": "clip",
    "siglip2": "clip",
    "vit": "vit",
    "vit-hf": "vit",
    "dinov2": "vit",
    "dinov2-reg": "vit",
    "diffusion": "diffusion",
    "diffusion-pixel": "diffusion",
}


def register(family: str, target: str) -> None:
    """Register an adapter class given as ``"module:Class"``."""
    FAMILIES[family] = target


def adapter_class(family: str):
    if family not in FAMILIES:
        raise LoadError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    mod, cls = FAMILIES[family].split(":")
    return getattr(importlib.import_module(mod), cls)


def load(name_or_path: str, **kw):
    """Load a model behind its adapter.

    ``name_or_path``: ``tiny:<variant>`` (one of :data:`TINY`: ``llava``, ``llava-next``, ``qwen2-vl``,
    ``qwen2.5-vl``, ``qwen3-vl``, ``llava-onevision``, ``gemma3``, ``paligemma``, ``internvl``, ``smolvlm``,
    ``idefics3``, ``clip``, ``clip-hf``, ``siglip``, ``siglip2``, ``vit``, ``vit-hf``, ``dinov2``,
    ``dinov2-reg``, ``diffusion``, ``diffusion-pixel``), a model-zoo organism name (``shapes-llava``...),
    or a local directory / checkpoint file (HF, open_clip, timm or diffusers format).
    Keyword arguments go to the family's loader (``device``, ``dtype``, ``attn_implementation``...).
    ``dtype``: a torch dtype, ``"float32"`` / ``"bfloat16"`` / ``"float16"``, or ``"auto"`` (also
    ``None``, the default): the checkpoint's own dtype, except that fp16 loads as bf16 on a CPU
    (:mod:`vlinterp.adapters.dtypes`); ``tiny:`` models and organisms without a stored dtype stay fp32.
    """
    from .dtypes import parse_dtype, resolve_dtype

    name = os.fspath(name_or_path)
    if "dtype" in kw:
        kw["dtype"] = parse_dtype(kw["dtype"])  # a bad name fails here, before anything loads
    if name.startswith("tiny:"):
        variant = name[5:]
        if variant not in TINY:
            raise LoadError(f"unknown tiny model {name!r}; known: {', '.join('tiny:' + v for v in TINY)}")
        if kw.get("dtype") == "auto":
            kw["dtype"] = None
        return adapter_class(TINY[variant]).tiny(variant, **kw)
    if not os.path.exists(name):
        raise LoadError(
            f"{name!r} is neither a local path nor a known name (tiny:<family>, or a zoo organism through "
            f"vlinterp.load: see `vlinterp zoo list`); vlinterp never downloads: pass a local directory or checkpoint"
        )
    kw["dtype"] = resolve_dtype(kw.get("dtype"), name, kw.get("device"))
    for family in FAMILIES:
        try:
            cls = adapter_class(family)
        except ModuleNotFoundError as e:  # a family whose backing library is not installed
            if e.name and e.name.startswith("vlinterp"):
                raise
            continue
        if cls.can_load(name):
            try:
                return cls.from_path(name, **kw)
            except LoadError:
                raise
            except Exception as e:
                raise LoadError(f"failed to load {name!r} as a {family} model: {type(e).__name__}: {e}") from e
    raise LoadError(
        f"{name!r}: no adapter recognises this path (expected an HF directory with config.json, a diffusers "
        "directory with model_index.json, an open_clip directory with open_clip_config.json, or a timm "
        "directory with config.json naming an 'architecture')"
    )
