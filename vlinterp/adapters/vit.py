"""ViT image classifiers: timm ``VisionTransformer`` and transformers ``ViTForImageClassification``.

:class:`VitAdapter` is the family's entry point (registered as ``vit``); it recognises
paths and builds tiny models, then hands over to one of two backends:

* :class:`~vlinterp.adapters.vit_timm.TimmVitAdapter` (``tiny:vit``, timm hub-format
  directories: ``config.json`` naming an ``architecture`` + ``model.safetensors``);
* :class:`~vlinterp.adapters.vit_hf.HfVitAdapter` (``tiny:vit-hf``, HF directories whose
  ``config.json`` has ``model_type: "vit"``);
* :class:`~vlinterp.adapters.vit_dinov2.Dinov2Adapter` (``tiny:dinov2``, ``tiny:dinov2-reg``, HF
  ``Dinov2Model`` / ``Dinov2WithRegistersModel`` directories, with or without a classifier: a
  headless one explains the CLS feature norm or the similarity to reference prototypes).

One stream, ``vision``: CLS and register tokens are ``special`` (spans ``cls`` and
``registers``), patch tokens ``image`` with ``(row, col)`` on the patch grid. Sites:
``vision.embed`` (patch embedding + position, ``[B, T, D]``), ``vision.blocks.{i}.{attn,mlp,resid}``
(``[B, T, D]``), ``vision.norm`` (final norm, ``[B, T, D]``) and ``logits`` (``[B, classes]``).
This module imports neither timm nor transformers; the backends do, when first used.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from ..core.errors import ImageError, LoadError, PromptError
from ..core.images import load_image
from ..core.layout import LayoutBuilder, Tile, TokenLayout
from .base import Adapter

TIMM_WEIGHTS = "model.safetensors"


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def timm_files(path: str) -> tuple[str, str] | None:
    """``(config.json, weights.safetensors)`` if ``path`` is a timm hub-format checkpoint:
    a directory with ``config.json`` (with an ``architecture`` key) and ``model.safetensors``,
    or a ``.safetensors`` file with such a ``config.json`` beside it; else ``None``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        cfg_path, weights = os.path.join(path, "config.json"), os.path.join(path, TIMM_WEIGHTS)
    elif os.path.isfile(path) and path.endswith(".safetensors"):
        cfg_path, weights = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json"), path
    else:
        return None
    cfg = _read_json(cfg_path) if os.path.isfile(cfg_path) else None
    if not cfg or not isinstance(cfg.get("architecture"), str) or not os.path.isfile(weights):
        return None
    return cfg_path, weights


def is_hf_vit(path: str) -> bool:
    """True if ``path`` is a transformers directory whose ``config.json`` has ``model_type: "vit"``."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return False
    cfg = _read_json(os.path.join(path, "config.json"))
    return bool(cfg) and cfg.get("model_type") == "vit"


class VitAdapter(Adapter):
    """ViT classifier behind the uniform API. ``prepare(images=[...])`` (no text) ->
    ``Batch`` with ``inputs["pixel_values"]`` ``[B, 3, H, W]``; ``run(batch).logits`` ``[B, classes]``."""

    family = "vit"
    kind = "vit"
    main_stream = "vision"
    backend = ""

    # ------------------------------------------------------------ dispatching
    @classmethod
    def can_load(cls, path) -> bool:
        from .vit_dinov2 import dinov2_model_type

        return timm_files(path) is not None or is_hf_vit(path) or dinov2_model_type(path) is not None

    @classmethod
    def from_path(cls, path, **kw) -> "VitAdapter":
        """Load a local timm hub-format checkpoint or HF ViT directory (never downloads).
        ``kw``: ``device``, ``dtype`` (``"auto"``: the checkpoint's, never fp16 on a CPU); HF also ``attn_implementation``."""
        from .dtypes import resolve_dtype

        kw["dtype"] = resolve_dtype(kw.get("dtype"), path, kw.get("device"))
        if timm_files(path) is not None:
            from .vit_timm import TimmVitAdapter

            return TimmVitAdapter.from_path(path, **kw)
        if is_hf_vit(path):
            from .vit_hf import HfVitAdapter

            return HfVitAdapter.from_path(path, **kw)
        from .vit_dinov2 import Dinov2Adapter, dinov2_model_type

        if dinov2_model_type(path) is not None:
            return Dinov2Adapter.from_path(path, **kw)
        raise LoadError(
            f"{os.fspath(path)!r} is not a ViT checkpoint: expected a timm directory (config.json with "
            f"'architecture' + {TIMM_WEIGHTS}) or an HF directory with config.json model_type 'vit', 'dinov2' "
            "or 'dinov2_with_registers'"
        )

    @classmethod
    def tiny(cls, variant: str = "vit", **kw) -> "VitAdapter":
        """Tiny random model of the real class: ``"vit"`` (timm), ``"vit-hf"``, ``"dinov2"``, ``"dinov2-reg"`` (transformers)."""
        if variant == "vit":
            from .vit_timm import TimmVitAdapter

            return TimmVitAdapter.tiny(variant, **kw)
        if variant == "vit-hf":
            from .vit_hf import HfVitAdapter

            return HfVitAdapter.tiny(variant, **kw)
        if variant in ("dinov2", "dinov2-reg"):
            from .vit_dinov2 import Dinov2Adapter

            return Dinov2Adapter.tiny(variant, **kw)
        raise LoadError(f"unknown ViT tiny variant {variant!r}; known: 'vit' (timm), 'vit-hf' (transformers), "
                        "'dinov2', 'dinov2-reg' (transformers DINOv2)")

    def save_pretrained(self, out_dir: str) -> str:
        """Save in the library's native format (timm hub format / HF ``save_pretrained``)."""
        raise NotImplementedError

    # ------------------------------------------------------------- shared API
    def class_names(self) -> list[str]:
        """One label per output class (from the checkpoint's labels, else ``class_{k}``)."""
        n = self.num_classes
        names = self._label_names()
        if isinstance(names, dict):
            names = [str(names.get(k, names.get(str(k), f"class_{k}"))) for k in range(n)]
        if names is not None and len(names) == n:
            return [str(x) for x in names]
        return [f"class_{k}" for k in range(n)]

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def _label_names(self):
        return None

    def _images(self, images, text) -> list:
        """Check arguments of ``prepare`` and return RGB PIL images."""
        if text is not None and not (isinstance(text, (list, tuple)) and len(text) == 0):
            raise PromptError(
                f"{type(self).__name__}: ViT image classifiers take no text; call prepare(images=[...]) "
                f"without text= (got text={text!r:.60})"
            )
        if images is None or (isinstance(images, (list, tuple)) and len(images) == 0):
            raise ImageError("ViT classifiers need at least one image: prepare(images=[img, ...])")
        if not isinstance(images, (list, tuple)):
            images = [images]
        return [load_image(x, name=f"images[{i}]") for i, x in enumerate(images)]

    @staticmethod
    def _layout(sizes: Sequence[tuple[int, int]], boxes: Sequence[tuple], grid: tuple[int, int], n_cls: int, n_reg: int) -> TokenLayout:
        """One row per image: ``n_cls`` CLS + ``n_reg`` register tokens (``special``), then the
        ``rows x cols`` patch grid (``image``). ``sizes`` are original ``(H, W)``; ``boxes`` the
        ``(x0, y0, x1, y1)`` of original pixels the grid covers."""
        lb = LayoutBuilder()
        rows, cols = grid
        for i, (size, box) in enumerate(zip(sizes, boxes)):
            if n_cls:
                lb.special(n_cls, span="cls", image_index=i)
            if n_reg:
                lb.special(n_reg, span="registers", image_index=i)
            lb.image_grid(i, rows, cols)
            lb.add_image(i, size, [Tile((rows, cols), tuple(float(v) for v in box))])
            lb.end_row()
        return lb.build()


def save_tiny(variant: str, out_dir: str) -> str:
    """Save ``tiny(variant)`` in its library's native on-disk format; returns ``out_dir``."""
    return VitAdapter.tiny(variant).save_pretrained(out_dir)


__all__ = ["VitAdapter", "save_tiny", "timm_files", "is_hf_vit"]
