"""Integrated gradients and occlusion on the input pixels, by captum.

The explained scalar (see :mod:`.targets`) is a function of ``pixel_values`` (the processed
image, one per prompt); captum's ``IntegratedGradients`` / ``Occlusion`` attribute it, and the
pixel attributions are pooled to the patch grid: the signed mean over channels and each patch cell
of the processed input (``absolute=True``: mean of ``|attr|``). Signed is the default: on
shapes-vit (12 held-out scenes, 38 labels) the pointing game is 0.68 (occlusion) / 0.71 (IG)
signed against 0.48 / 0.52 absolute, since an occluder that *raises* a class score (a grey square
that looks like an object) is not evidence for it.

``ig``: baseline ``baseline`` (a number in normalised pixel space, default 0 = the dataset mean
colour, or a tensor like ``pixel_values``), ``n_steps``, ``internal_batch_size``; captum's
convergence delta (sum of attributions minus ``f(x) - f(baseline)``) per target is kept in
``arrays["convergence_delta"]`` and ``meta``.
``occlusion``: windows of ``window`` x ``window`` patches moved by ``stride`` patches, filled with
``baseline``; ``perturbations_per_eval`` forward passes batched. On a VLM whose processor tiles the
image or packs its patches, the windows occlude the original image instead
(:mod:`.occlusion_image`). ``ig`` there integrates over the image tokens the language model reads
instead (:mod:`.ig_tokens`: the processor's resizing has no gradient, so no pixel path reaches
them); option ``space``: ``auto`` (that choice), ``pixels`` or ``tokens`` (any VLM).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.errors import ConfigError, UnsupportedError
from .base import AnswerConfig, SaliencyMethod, pixel_forward, pixels, pool_pixels, positive, tiled_input
from .targets import Targets


@dataclass
class PixelConfig(AnswerConfig):
    """``baseline``: the reference input, a number in normalised pixel space (0 = the dataset mean
    colour) or a tensor like ``pixel_values``; ``absolute``: pool ``|attr|`` instead of signed values."""

    baseline: Any = 0.0
    absolute: bool = False

    def validate(self) -> None:
        super().validate()
        b = self.baseline
        if isinstance(b, str):
            try:
                self.baseline = float(b)
            except ValueError:
                raise ConfigError(f"option 'baseline' must be a number or a tensor, got {b!r}") from None
        elif isinstance(b, bool) or not isinstance(b, (int, float, torch.Tensor)):
            raise ConfigError(f"option 'baseline' must be a number or a tensor, got {type(b).__name__}")


def _baseline(x: torch.Tensor, b) -> torch.Tensor:
    if isinstance(b, torch.Tensor):
        return b.to(x.device, x.dtype).expand_as(x)
    return torch.full_like(x, float(b))


class IntegratedGradientsMethod(SaliencyMethod):
    name = "ig"

    @dataclass
    class Config(PixelConfig):
        """``n_steps``: points on the straight path; ``internal_batch_size``: of them per forward pass;
        ``space``: ``pixels`` (the processed crop), ``tokens`` (a VLM's image tokens at the LM
        input, :mod:`.ig_tokens`) or ``auto`` (tokens where the image is tiled or packed)."""

        n_steps: int = 32
        internal_batch_size: int = 16
        space: str = "auto"

        def validate(self) -> None:
            super().validate()
            positive(self, "n_steps", "internal_batch_size")
            if self.space not in ("auto", "pixels", "tokens"):
                raise ConfigError(f"option 'space' must be auto, pixels or tokens, got {self.space!r}")

    def compute(self, t: Targets) -> np.ndarray:
        from captum.attr import IntegratedGradients

        c = self.config
        vlm = self.adapter.kind == "vlm" and t.stream == "lm"
        if c.space == "tokens" and not vlm:
            raise UnsupportedError("ig space=tokens integrates over a VLM's image tokens; this model has none")
        if c.space == "tokens" or (c.space == "auto" and vlm and tiled_input(t)):
            from .ig_tokens import token_ig

            return token_ig(self.adapter, t, c.baseline, c.n_steps, c.internal_batch_size, c.absolute)
        x = pixels(t).detach().to(self.adapter.device)  # captum compares f(x) with x's attributions: one device
        ig = IntegratedGradients(pixel_forward(self.adapter, t, grad=True))
        base = _baseline(x, c.baseline)
        rows, deltas = [], []
        for k in range(t.n):
            attr, delta = ig.attribute(x, baselines=base, target=k, n_steps=c.n_steps,
                                       internal_batch_size=c.internal_batch_size,
                                       return_convergence_delta=True)
            rows.append(pool_pixels(attr[0], t, c.absolute))
            deltas.append(float(delta.sum()))
        t.arrays["convergence_delta"] = np.asarray(deltas, np.float32)
        t.meta["convergence_delta"] = deltas
        return np.stack(rows)


class OcclusionMethod(SaliencyMethod):
    name = "occlusion"

    @dataclass
    class Config(PixelConfig):
        """``window`` x ``window`` patches moved by ``stride`` patches; ``perturbations_per_eval``
        occluded copies per forward pass."""

        window: int = 1
        stride: int = 1
        perturbations_per_eval: int = 8

        def validate(self) -> None:
            super().validate()
            positive(self, "window", "stride", "perturbations_per_eval")

    def compute(self, t: Targets) -> np.ndarray:
        from captum.attr import Occlusion

        c = self.config
        if self.adapter.kind == "vlm" and tiled_input(t):  # tiles / packed patches: occlude the original image
            from .occlusion_image import occlude

            return occlude(self.adapter, t, c.window, c.stride, c.baseline, c.absolute)
        x = pixels(t).detach().to(self.adapter.device)  # captum compares f(x) with x's attributions: one device
        rows_, cols = t.layout.grid(t.image_index)
        C, H, W = x.shape[1:]
        ph, pw = H // rows_, W // cols
        c = self.config
        w, s = c.window, c.stride
        occ = Occlusion(pixel_forward(self.adapter, t, grad=False))
        base = c.baseline
        base = base.to(x.device, x.dtype) if isinstance(base, torch.Tensor) else float(base)
        rows = []
        for k in range(t.n):
            attr = occ.attribute(x, sliding_window_shapes=(C, w * ph, w * pw), strides=(C, s * ph, s * pw),
                                 baselines=base, target=k, perturbations_per_eval=c.perturbations_per_eval)
            rows.append(pool_pixels(attr[0], t, c.absolute))
        return np.stack(rows)
