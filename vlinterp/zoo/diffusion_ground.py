"""Word grounding for ``shapes-diffusion``'s second training phase (TokenCompose-style token loss).

A small pixel-space UNet trained on the denoising loss alone conditions on the prompt through
cross-attention that is nearly flat over the image: the shape word's attention is no higher on the
object than off it, so DAAM maps of the organism show nothing to measure. Phase 2 adds, for every
object word of a caption (its colour and its shape token), the token loss of TokenCompose
(Wang et al. 2023): ``1 - (attention mass inside the object's mask) / (attention mass)``, with
the word's cross-attention column averaged over heads, at every ``attn2`` module, on the mask
area-pooled to that module's grid. The denoising loss stays; only the attention is shaped.

Caption token positions are fixed by the word-level tokenizer: ``<bos> a {c} {s} [and a {c} {s}] .``
-> object 0 at positions (2, 3), object 1 at (6, 7).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.attention import diffusers_attention

WORD_POSITIONS = ((2, 3), (6, 7))  # (colour, shape) token positions of object 0 / 1


class CrossAttentionTap:
    """Context manager: while open, every ``attn2`` of ``unet`` appends its probabilities
    ``[B, heads, N, L]`` (recomputed from the module's inputs, WITH gradients) to ``self.probs``."""

    def __init__(self, unet: torch.nn.Module):
        self.mods = [m for n, m in unet.named_modules() if n.endswith(".attn2")]
        self.probs: list[torch.Tensor] = []
        self.handles = []

    def __enter__(self):
        def hook(module, args, kwargs, output):
            hs = kwargs.get("hidden_states", args[0] if args else None)
            ehs = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
            self.probs.append(diffusers_attention(module, hs, ehs))

        self.handles = [m.register_forward_hook(hook, with_kwargs=True) for m in self.mods]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        return False


def token_loss(probs: list[torch.Tensor], masks: torch.Tensor, n_obj: torch.Tensor, keep: torch.Tensor,
               eps: float = 1e-6) -> torch.Tensor:
    """Mean over (attention module, sample, object word) of ``1 - in_mask_mass / mass``.

    ``probs``: list of ``[B, heads, N, L]`` (``N = g*g``); ``masks``: ``[B, 2, S, S]`` float in
    [0, 1] (object 0 / 1); ``n_obj``: ``[B]`` objects captioned (1 or 2); ``keep``: ``[B]`` bool,
    False where the caption was dropped (no words to ground). Returns a scalar (0 if nothing to ground)."""
    terms = []
    for p in probs:
        B, _, N, _ = p.shape
        g = int(math.isqrt(N))
        m = F.adaptive_avg_pool2d(masks.float(), (g, g)).flatten(2)          # [B, 2, N]
        a = p.mean(1)                                                        # [B, N, L]
        for o, (ci, si) in enumerate(WORD_POSITIONS):
            sel = keep & (n_obj > o)
            if not sel.any():
                continue
            cols = a[sel][:, :, [ci, si]]                                    # [b, N, 2]
            inside = (cols * m[sel, o][:, :, None]).sum(1)                   # [b, 2]
            terms.append(1 - inside / (cols.sum(1) + eps))
    if not terms:
        return masks.new_zeros(())
    return torch.cat([t.flatten() for t in terms]).mean()


@torch.no_grad()
def inside_fraction(unet, te, x0: torch.Tensor, ids: torch.Tensor, masks: torch.Tensor, n_obj: torch.Tensor,
                    sched, t: torch.Tensor, gen: torch.Generator) -> float:
    """``1 - token_loss`` on one noised batch: the mean share of an object word's attention that
    falls on its object (diagnostic; the area share is what a flat map gets)."""
    noise = torch.randn(x0.shape, generator=gen)
    xt = sched.add_noise(x0, noise, t)
    with CrossAttentionTap(unet) as tap:
        unet(xt, t, encoder_hidden_states=te(ids)[0])
    keep = torch.ones(len(x0), dtype=torch.bool)
    return float(1 - token_loss(tap.probs, masks, n_obj, keep))
