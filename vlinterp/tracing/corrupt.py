"""Corruptions for causal tracing: each turns the clean run into a corrupted one through edits.

Every corruption ends as an edit at an embedding site, so the rest of the forward (and the
restorations) is shared: image corruptions replace or perturb ``vision.embed`` (the vision
tower's patch embeddings ``[Rv, Tv, D]``), text noise perturbs ``embed`` (the language model's
token embeddings ``[B, T, D]``).

- :class:`ImageNoise` Gaussian noise of ``scale`` x the empirical std, in patch-embedding space
  (default, ROME's 3 sigma) or on the processed pixels (``space="pixel"``).
- :class:`Blur` a Gaussian blur of the processed pixels (deterministic).
- :class:`Interchange` a second image in place of the first (deterministic; resized to the
  first image's size so the patch grids match).
- :class:`TextNoise` Gaussian noise on chosen text-token embeddings.

One registry, :data:`CORRUPTIONS` (``noise``, ``pixel-noise``, ``blur``, ``text-noise``,
``interchange``); options are each class's dataclass ``Config``; :func:`make_corruption` builds one
from a spec (``"blur:sigma=2"``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..core.errors import ConfigError, PromptError, ShapeMismatchError, UnsupportedError
from ..core.images import load_image
from ..core.layout import IMAGE
from ..core.registry import Registry

CORRUPTIONS = Registry("corruption", {
    "noise": "vlinterp.tracing.corrupt:ImageNoise",
    "pixel-noise": "vlinterp.tracing.corrupt:PixelNoise",
    "blur": "vlinterp.tracing.corrupt:Blur",
    "text-noise": "vlinterp.tracing.corrupt:TextNoise",
    "interchange": "vlinterp.tracing.corrupt:Interchange",
})


def tile_like(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``z`` (one run's tensor) repeated to ``t``'s shape for a batch repeated ``n`` times: along
    dim 0 (``[n*R, T, D]``), or along the sequence for a packed stream whose images were repeated
    (Qwen's vision tower: ``[1, n*N, D]``)."""
    return z.to(t.dtype).repeat(*[a // b for a, b in zip(t.shape, z.shape)])


def _repeat_rows(repl: torch.Tensor):
    return lambda t, layout: tile_like(repl, t)


class Corruption:
    """Base: ``edits(plan, sample) -> {site: fn}`` producing the corrupted run for one sample.
    Options live in the class's dataclass ``Config`` (``self.config``, its fields also attributes)."""

    kind = "base"
    stochastic = True
    Config = None

    def _configure(self, config=None, **opts) -> None:
        if self.Config is None:
            return
        if config is None:
            known = {f.name for f in dataclasses.fields(self.Config)}
            unknown = sorted(set(opts) - known)
            if unknown:
                raise ConfigError(f"corruption {self.kind!r}: unknown option(s) {', '.join(unknown)}; options: {', '.join(sorted(known))}")
            config = self.Config(**opts)
        config.validate()
        self.config = config
        for f in dataclasses.fields(config):
            setattr(self, f.name, getattr(config, f.name))

    def edits(self, plan, sample: int) -> dict:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind}


class _PixelCorruption(Corruption):
    """Corrupts ``pixel_values`` and replays the result as a ``vision.embed`` replacement."""

    def pixels(self, plan, px: torch.Tensor, sample: int) -> torch.Tensor:
        raise NotImplementedError

    def edits(self, plan, sample):
        px = plan.batch.inputs.get("pixel_values")
        if not isinstance(px, torch.Tensor):
            raise UnsupportedError(f"{plan.adapter.family}: no pixel_values in the batch to corrupt")
        b = plan.batch.replace_inputs(pixel_values=self.pixels(plan, px, sample))
        with torch.no_grad():
            emb = plan.adapter.run(b, capture=["vision.embed"]).cache["vision.embed"].clone()
        return {"vision.embed": _repeat_rows(emb)}


def _positive(what: str, v: float) -> None:
    if not v > 0:
        raise ConfigError(f"{what} must be > 0, got {v}")


class ImageNoise(_PixelCorruption):
    """Gaussian noise on the image: ``scale`` x std of the patch embeddings (``space="embed"``)
    or of the processed pixel values (``space="pixel"``)."""

    kind = "noise"

    @dataclass
    class Config:
        scale: float = 3.0
        space: Literal["embed", "pixel"] = "embed"

        def validate(self) -> None:
            _positive("noise scale", self.scale)
            if self.space not in ("embed", "pixel"):
                raise ConfigError(f"noise space must be 'embed' or 'pixel', got {self.space!r}")

    def __init__(self, scale: float | None = None, space: str | None = None, config=None):
        opts = {k: v for k, v in (("scale", scale), ("space", space)) if v is not None}
        self._configure(config, **opts)
        self.scale = float(self.scale)

    def describe(self):
        return {"kind": self.kind, "scale": self.scale, "space": self.space}

    def _z(self, plan, shape, sample):
        g = torch.Generator().manual_seed(plan.seed * 1000003 + sample)
        return torch.randn(tuple(shape), generator=g, dtype=torch.float32)

    def pixels(self, plan, px, sample):
        z = self._z(plan, px.shape, sample).to(px.device, px.dtype)
        return px + z * (self.scale * float(px.float().std()))

    def edits(self, plan, sample):
        if self.space == "pixel":
            return super().edits(plan, sample)
        emb = plan.clean["vision.embed"]
        img = torch.as_tensor(plan.batch.layouts["vision"].modality == IMAGE, device=emb.device)[..., None]
        std = float(emb[img.expand_as(emb)].float().std())
        z = self._z(plan, emb.shape, sample).to(emb.device, emb.dtype) * (self.scale * std) * img
        return {"vision.embed": lambda t, layout: t + tile_like(z, t)}


class PixelNoise(ImageNoise):
    """:class:`ImageNoise` on the processed pixel values (``space="pixel"``)."""

    @dataclass
    class Config(ImageNoise.Config):
        space: Literal["embed", "pixel"] = "pixel"


class Blur(_PixelCorruption):
    """Gaussian blur of the processed pixels with std ``sigma`` (in processed pixels)."""

    kind = "blur"
    stochastic = False

    @dataclass
    class Config:
        sigma: float = 4.0

        def validate(self) -> None:
            _positive("blur sigma", self.sigma)

    def __init__(self, sigma: float | None = None, config=None):
        self._configure(config, **({} if sigma is None else {"sigma": sigma}))
        self.sigma = float(self.sigma)

    def describe(self):
        return {"kind": self.kind, "sigma": self.sigma}

    def pixels(self, plan, px, sample):
        from torchvision.transforms.functional import gaussian_blur

        k = 2 * math.ceil(3 * self.sigma) + 1
        flat = px.reshape(-1, *px.shape[-3:])
        k = min(k, 2 * (min(flat.shape[-2:]) // 2) - 1)
        return gaussian_blur(flat.float(), [k, k], [self.sigma, self.sigma]).to(px.dtype).reshape(px.shape)


class Interchange(_PixelCorruption):
    """The corrupted run sees ``image`` (path, PIL or array) instead of the clean image."""

    kind = "interchange"
    stochastic = False

    def __init__(self, image):
        self.image = load_image(image)

    def describe(self):
        return {"kind": self.kind, "size": list(self.image.size)}

    def pixels(self, plan, px, sample):
        size = plan.batch.images[0].size if plan.batch.images else self.image.size
        img = self.image.resize(size)
        text = plan.batch.meta.get("prompts") or plan.batch.text or None
        other = plan.adapter.prepare(images=[img], text=text) if plan.adapter.kind == "vlm" else plan.adapter.prepare(images=[img])
        px2 = other.inputs["pixel_values"]
        if px2.shape != px.shape:
            raise ShapeMismatchError(f"interchange image gives pixel_values {tuple(px2.shape)}, the clean image {tuple(px.shape)}")
        return px2.to(px.device, px.dtype)


class TextNoise(Corruption):
    """Gaussian noise (``scale`` x the std of the text-token embeddings) on ``positions`` of the
    language-model sequence (e.g. the object word's tokens)."""

    kind = "text-noise"

    @dataclass
    class Config:
        scale: float = 3.0

        def validate(self) -> None:
            _positive("text-noise scale", self.scale)

    def __init__(self, positions, scale: float | None = None, config=None):
        self._configure(config, **({} if scale is None else {"scale": scale}))
        self.scale = float(self.scale)
        self.positions = torch.as_tensor(list(positions), dtype=torch.long).reshape(-1)
        if self.positions.numel() == 0:
            raise PromptError("text noise needs at least one token position to corrupt")

    def describe(self):
        return {"kind": self.kind, "scale": self.scale, "positions": self.positions.tolist()}

    def edits(self, plan, sample):
        if "embed" not in plan.adapter.site_table or "lm" not in plan.batch.layouts:
            raise UnsupportedError(f"{plan.adapter.family}: text noise needs a language model with an 'embed' site")
        emb = plan.clean["embed"]
        lay = plan.batch.layouts["lm"]
        T = emb.shape[1]
        if self.positions.min() < 0 or self.positions.max() >= T:
            raise ShapeMismatchError(f"text-noise positions {self.positions.tolist()} outside the sequence (length {T})")
        if (lay.modality[0, self.positions.numpy()] == IMAGE).any():
            raise PromptError("text-noise positions include image tokens; corrupt the image with ImageNoise instead")
        txt = torch.as_tensor((lay.modality != IMAGE) & (lay.modality != 0), device=emb.device)[..., None]
        std = float(emb[txt.expand_as(emb)].float().std())
        g = torch.Generator().manual_seed(plan.seed * 1000003 + sample)
        z = torch.zeros(tuple(emb.shape))
        z[:, self.positions] = torch.randn((emb.shape[0], len(self.positions), emb.shape[2]), generator=g)
        z = (z * self.scale * std).to(emb.device, emb.dtype)
        return {"embed": lambda t, layout: t + z.repeat(t.shape[0] // z.shape[0], 1, 1)}


NEEDS = {"text-noise": "positions", "interchange": "image"}  # what a corruption takes beyond its options


def make_corruption(spec, noise: float | None = None, positions=None, image=None) -> Corruption:
    """A :class:`Corruption` from a spec (``"noise"``, ``"blur:sigma=2"``, see :data:`CORRUPTIONS`)
    or pass one through. ``noise``: the scale of the noise corruptions (unless the spec gives one);
    ``positions``: the token positions ``text-noise`` corrupts; ``image``: ``interchange``'s image."""
    if isinstance(spec, Corruption):
        return spec
    name, opts = CORRUPTIONS.parse("noise" if spec is None else spec)
    if noise is not None and name in ("noise", "pixel-noise", "text-noise"):
        opts.setdefault("scale", noise)
    args = ()
    if name == "text-noise":
        if positions is None:
            raise PromptError("text-noise needs the token positions to corrupt (e.g. the object word)")
        args = (positions,)
    elif name == "interchange":
        if image is None:
            raise PromptError("interchange needs a second image")
        args = (image,)
    return CORRUPTIONS.create(name, *args, **opts)


__all__ = ["Corruption", "ImageNoise", "PixelNoise", "Blur", "Interchange", "TextNoise", "make_corruption", "CORRUPTIONS",
           "NEEDS"]
