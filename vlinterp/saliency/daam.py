"""DAAM-style word heat maps (Tang et al. 2023, "What the DAAM") from UNet cross-attention.

While the sampler runs (``adapter.sample``: ``steps`` DDIM steps, ``guidance_scale``; for a
batch made from images, img2img from the batch's timestep), every cross-attention site
``unet.xattn.{k}`` (``layers`` selects ``k``; ``None`` = all) gives probabilities
``[B, heads, h'*w', L]``. For each word, the columns of its token positions (span
``word:<w>`` of the text layout) are summed, heads averaged, the ``h' x w'`` map bilinearly
upsampled to the latent grid ``h x w`` of the ``unet`` layout, and maps averaged over sites and
steps. With classifier-free guidance only the conditional rows are used.

Scores: ``[n_words, h*w]`` on the ``unet`` layout's grid of sample ``image_index`` (its heat map
has the generated image's size); ``arrays["image"]`` is that generated image ``[S, S, 3]`` uint8.
``target``: a word or list of words (``None`` = every word of the prompt).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .base import SaliencyMethod, check_layers, positive
from .targets import Targets


class DAAM(SaliencyMethod):
    name = "daam"
    kinds = ("diffusion",)

    @dataclass
    class Config:
        """``steps``: sampler steps; ``guidance_scale``: classifier-free guidance (1 = none);
        ``layers``: cross-attention sites ``unet.xattn.{k}`` (``None`` = all)."""

        steps: int = 10
        guidance_scale: float = 1.0
        layers: tuple[int, ...] | None = None

        def validate(self) -> None:
            positive(self, "steps", "guidance_scale")

    def compute(self, t: Targets) -> np.ndarray:
        a, b = self.adapter, t.batch
        sites = a.attention_sites("xattn")
        c = self.config
        layers = check_layers(a, c.layers, "xattn")
        h, w = t.layout.grid(t.image_index)
        cols = {word: torch.as_tensor(p) for word, p in t.meta["word_positions"].items()}
        acc = torch.zeros(t.n, h, w, dtype=torch.float64)
        count = [0]
        B = b.inputs["input_ids"].shape[0]
        cfg = c.guidance_scale != 1.0

        def make(k: int, site: str):
            grid = a.xattn_grid(k, b)

            def hook(module, args, kwargs, output):
                with torch.no_grad():
                    p = a._attention_probs(site, module, args, kwargs, output)
                    r = 2 * t.row + 1 if cfg and p.shape[0] == 2 * B else t.row
                    p = p[r].float()                                    # [H, N, L]
                    m = torch.stack([p[:, :, cols[word].to(p.device)].sum(-1).mean(0) for word in t.labels])
                    m = F.interpolate(m.view(t.n, 1, *grid), size=(h, w), mode="bilinear", align_corners=False)
                    acc.add_(m[:, 0].double().cpu())
                    count[0] += 1

            return hook

        with a.raw_hooks() as hooks:
            for k in layers:
                hooks.forward(sites[k], make(k, sites[k]), with_kwargs=True)
            images = a.sample(b, steps=c.steps, guidance_scale=c.guidance_scale, progress=False)
        t.arrays["image"] = np.asarray(images[t.row], np.uint8)
        t.meta.update(layers=layers, calls=count[0])
        return (acc / max(count[0], 1)).reshape(t.n, h * w).numpy()
