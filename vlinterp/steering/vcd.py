"""Visual contrastive decoding (VCD): contrast the next-token logits on the image against those
on a diffusion-noised copy, within an adaptive plausibility cutoff.

``logits = (1 + alpha) * l(image) - alpha * l(noised image)`` over the tokens whose probability on
the clean image is at least ``beta`` x the top token's; every other token (and the image placeholder
token) gets ``-inf``. The noised image is the processed pixels taken to step ``noise_step`` of a
1000-step DDPM linear schedule (``sqrt(abar) x + sqrt(1 - abar) eps``, seeded).

A ``logits`` edit: at each row's last position (the last prompt position, then each decoding step)
the clean logits are contrasted with those of a second, noised-image forward run inside the edit.
That inner forward gets the outer one's own inputs (recorded by a pre-hook on the model; when
``generate`` encodes the images before the prompt pass, as transformers 5.2x does, its pixels are
taken from the ``generate`` call) with the pixels noised, so :meth:`VCD.applied` is the way to switch
it on (:meth:`VCD.edits` alone raises when it fires); a guard keeps the edits from re-entering it. Under KV-cache generation the
noised branch keeps **its own cache**: it is fed the same new token at each step as the clean one,
so each step costs one more one-token forward (not a recompute of the sequence) and gives the logits
the full-recompute greedy loop gave. Captures around it also record the noised forward.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch

from ..core.errors import ConfigError, UsageError
from .base import SteeringMethod
from .common import last_index


class VCD(SteeringMethod):
    """No fitted state: ``config`` holds ``alpha``, ``beta``, ``noise_step`` and ``seed``."""

    name = "vcd"
    strengths = ("alpha", "beta")

    @dataclass
    class Config:
        """``alpha``: contrast strength; ``beta``: plausibility cutoff (share of the top token's
        probability); ``noise_step``: DDPM step of the noised image (0..999); ``seed``: its noise."""

        alpha: float = 1.0
        beta: float = 0.1
        noise_step: int = 500
        seed: int = 0

        def validate(self):
            if not 0 <= self.noise_step < 1000:
                raise ConfigError(f"vcd noise_step must be in 0..999, got {self.noise_step}")

    alpha = property(lambda self: self.config.alpha)
    beta = property(lambda self: self.config.beta)

    @classmethod
    def fit(cls, adapter, items=(), config=None, calib=None, progress: bool = False) -> "VCD":
        """Nothing to fit: the method as configured (``items`` and ``calib`` are not used)."""
        cls.check_kind(adapter)
        return cls(cls.make_config(config))

    def noised(self, px: torch.Tensor) -> torch.Tensor:
        """``px`` at DDPM step ``noise_step`` (same shape; the noise is seeded, so the same every call)."""
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        abar = float(torch.cumprod(1 - betas, 0)[self.config.noise_step])
        g = torch.Generator().manual_seed(self.config.seed)
        eps = torch.randn(tuple(px.shape), generator=g).to(px.device, px.dtype)
        return abar ** 0.5 * px + (1 - abar) ** 0.5 * eps

    def contrast(self, clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """``[B, V]`` contrasted logits from the two ``[B, V]`` logit rows."""
        a = float(self.config.alpha)
        p = clean.float().softmax(-1)
        keep = p >= float(self.config.beta) * p.max(-1, keepdim=True).values
        out = (1 + a) * clean.float() - a * noisy.float()
        return out.masked_fill(~keep, float("-inf"))

    # ------------------------------------------------------------- applying
    def _edits(self, adapter, st: dict) -> dict:
        self.check(adapter)
        model = adapter.model
        img_tok = getattr(adapter.config, "image_token_index", getattr(adapter.config, "image_token_id", None)) \
            if hasattr(adapter, "config") else None

        def noised_inputs(kw: dict) -> dict:
            """The forward's own inputs with the pixels noised and the noised branch's cache."""
            kw = dict(kw)
            key = "cache" if "cache" in kw else "past_key_values"  # the cache argument's name (transformers 5.2x: cache)
            clean_cache = kw.get(key)
            mm = kw.pop("mm_encoder_outputs", None)
            px = kw.get("pixel_values")
            if px is None and mm:  # generate encoded the images before the prompt pass: start from its pixels
                gen = st.get("generate") or {}
                if gen.get("pixel_values") is None:
                    raise UsageError("VCD: the images were pre-encoded outside adapter.generate; cannot noise them")
                enc = getattr(model, "base_model", model).get_image_features
                for k in inspect.signature(enc).parameters:
                    if k in gen and k not in kw and k not in ("kwargs", "return_dict"):
                        kw[k] = gen[k]
                px = kw["pixel_values"]
            if px is not None:  # a prompt pass: the noised branch starts over, with its own cache
                kw["pixel_values"] = self.noised(px)
                if key in kw:
                    kw[key] = None
                if clean_cache is None and not kw.get("use_cache"):  # a plain run: no cache to keep
                    kw["use_cache"] = False
            elif clean_cache is not None and st.get("cache") is not None:  # a decoding step: the noised branch's cache
                kw[key] = st["cache"]
            else:
                raise UsageError("VCD: a forward without images and no noised-branch cache to continue (VCD steers image prompts)")
            return kw

        def on_logits(t, layout):
            if st.get("inside"):  # the noised forward's own logits: left as they are
                return t
            kw = st.pop("kwargs", None)
            if kw is None:
                raise UsageError("VCD's logits edit needs the model's inputs: switch it on with `with vcd.applied(adapter)`")
            kw = noised_inputs(kw)
            st["inside"] = True
            try:
                out = model(**kw)
            finally:
                st["inside"] = False
            keep = kw.get("use_cache") is not False
            st["cache"] = (getattr(out, "cache", None) or getattr(out, "past_key_values", None)) if keep else None
            noisy = out.logits
            if noisy.shape != t.shape:
                raise UsageError(f"VCD: the noised forward gave logits {tuple(noisy.shape)} for {tuple(t.shape)}")
            rows = torch.arange(t.shape[0], device=t.device)
            idx = last_index(t, layout).to(t.device)  # [B]: last prompt position, or the one decoding position
            z = self.contrast(t[rows, idx], noisy[rows, idx])
            if img_tok is not None:  # an image placeholder in the text would break the next forward
                z[:, img_tok] = float("-inf")
            z[torch.isinf(z).all(-1), 0] = 0.0  # a row with nothing left: fall back to token 0
            t = t.clone()
            t[rows, idx] = z.to(t.dtype)
            return t

        return {"logits": on_logits}

    def edits(self, adapter) -> dict:
        """``{"logits": fn}``; it reads the inputs that :meth:`applied` records (alone it raises)."""
        return self._edits(adapter, {})

    @contextlib.contextmanager
    def applied(self, adapter):
        """Contrastive decoding for every run / generate of ``adapter`` inside the block."""
        st: dict = {}
        model = adapter.model
        generate = model.generate

        def record(module, args, kwargs):
            if not st.get("inside"):
                if args:
                    raise UsageError("VCD needs the model called with keyword inputs (as adapters call it)")
                st["kwargs"] = kwargs
            return None

        def generate_recording(*args, **kwargs):  # the prompt's inputs, for a prompt pass given pre-encoded images
            st["generate"] = kwargs
            try:
                return generate(*args, **kwargs)
            finally:
                st.pop("generate", None)

        edits = self._edits(adapter, st)
        with adapter.raw_hooks() as h:
            h.pre(model, record, with_kwargs=True)
            h.setattr(model, "generate", generate_recording)
            with adapter.edits(edits):
                yield adapter
        st.clear()


__all__ = ["VCD"]
