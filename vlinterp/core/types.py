"""Batch, Outputs and Generation: what adapters take and return."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .hooks import Cache
from .layout import TokenLayout


@dataclass
class Batch:
    """Model-native ``inputs`` plus one :class:`TokenLayout` per stream.

    ``layouts`` maps a stream name (``lm``, ``vision``, ``text``, ``unet``) to its layout;
    ``layout`` is the adapter's main stream (LLaVA: ``lm``; CLIP/ViT: ``vision``;
    diffusion: ``text``). ``images`` are the RGB PIL images as given (for overlays),
    ``text`` the prompts as given.
    """

    inputs: dict[str, Any]
    layouts: dict[str, TokenLayout]
    main: str
    images: list = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def layout(self) -> TokenLayout:
        return self.layouts[self.main]

    def to(self, device) -> "Batch":
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}
        return Batch(moved, self.layouts, self.main, self.images, self.text, dict(self.meta))

    def replace_inputs(self, **inputs) -> "Batch":
        """The same batch (layouts, images, text) with some model inputs swapped."""
        return Batch({**self.inputs, **inputs}, self.layouts, self.main, self.images, self.text, dict(self.meta))

    def repeat(self, n: int) -> "Batch":
        """Every row repeated ``n`` times along dim 0 (row ``r`` of copy ``k`` is row ``k * B + r``).
        Inputs named in ``meta["image_inputs"]`` hold the batch's images concatenated along dim 0
        (Qwen's ``pixel_values`` ``[n_patches, C]``, ``image_grid_thw`` ``[n_images, 3]``): they are
        repeated as a whole, so copy ``k``'s images follow copy ``k - 1``'s."""
        if n == 1:
            return self
        B = self.layout.shape[0]
        per_image = set(self.meta.get("image_inputs", ()))

        def rep(k, v):
            if not isinstance(v, torch.Tensor) or not v.dim():
                return v
            if k in per_image or v.shape[0] == B:
                return v.repeat(n, *[1] * (v.dim() - 1))
            return v

        inputs = {k: rep(k, v) for k, v in self.inputs.items()}
        return Batch(inputs, {k: l.repeat(n) for k, l in self.layouts.items()}, self.main, self.images, self.text, dict(self.meta))


@dataclass
class Outputs:
    """``logits``: LLaVA ``[B, T, V]``; ViT ``[B, classes]``; CLIP ``[n_images, n_texts]``
    (scaled cosine similarities); diffusion: the UNet's noise prediction ``[B, C, h, w]``.
    ``cache[site]`` holds captured activations (see :class:`~vlinterp.core.hooks.Cache`)."""

    logits: torch.Tensor
    cache: Cache
    raw: Any = None


@dataclass
class Generation:
    """``sequences`` ``[B, T + n]`` (prompt and new tokens), ``new_tokens`` ``[B, n]``,
    ``texts`` the decoded new tokens, ``scores`` per step logits ``[n, B, V]`` when kept."""

    sequences: torch.Tensor
    new_tokens: torch.Tensor
    texts: list[str]
    scores: torch.Tensor | None = None
