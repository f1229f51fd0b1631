"""Integrated gradients over the image tokens a VLM's language model reads.

Where the processor tiles the image or packs its patches into rows (LLaVA-NeXT, OneVision,
Qwen2/2.5/3-VL, InternVL, SmolVLM) there is no single ``[3, H, W]`` crop whose pixels a straight
path could scale, and the path from the original image runs through the processor's resize, which
has no gradient. Here the path runs where every family meets: the rows of the first decoder
layer's input at the explained image's token positions (site ``inputs_embeds``, every tile's
tokens, ``image_positions`` order), from the rows the model makes of the *baseline image* (the
config's ``baseline``: normalised pixel value or tensor like ``pixel_values``, processed as the
image was) to the image's own rows. captum's ``IntegratedGradients`` attributes the explained
scalar to those ``[P, D]`` rows; a token's score is the sum of its row's attributions over ``D``
(signed, or of ``|attr|`` with ``absolute=True``), so the scores sum to ``f(image) - f(baseline)``
up to captum's convergence delta (kept in ``arrays``/``meta`` as for pixel IG). Text rows stay the
image's; so do Qwen3-VL's DeepStack features, which the tower adds to later LM layers beside the
input rows (on that family the path moves the input rows only).

The edit goes through the adapter's hook session (``adapter.run(edits=...)``); captum's batches of
path points run one forward pass per point (a packed or tiled batch does not repeat along dim 0).
"""
from __future__ import annotations

import numpy as np
import torch

from ..adapters.base import Batch
from .targets import Targets

SITE = "inputs_embeds"
PAD_SAFE_ZERO = 1e-6  # an all-zero baseline image on a family whose model drops all-zero images as padding (SmolVLM)


def _with_pixels(t: Targets, pixel_values) -> Batch:
    inputs = dict(t.batch.inputs)
    inputs["pixel_values"] = pixel_values
    b = t.batch
    return Batch(inputs, b.layouts, b.main, b.images, b.text, b.meta)


def image_rows(adapter, t: Targets, baseline=None) -> torch.Tensor:
    """``[P, D]``: the first decoder layer's input at image ``t.image_index``'s token positions,
    for the batch as prepared (``baseline=None``) or with its ``pixel_values`` replaced by the
    baseline (a number: every value; a tensor: itself)."""
    batch = t.batch
    if baseline is not None:
        x = batch.inputs["pixel_values"]
        base = baseline.to(x.device, x.dtype).expand_as(x) if isinstance(baseline, torch.Tensor) else torch.full_like(x, float(baseline))
        if getattr(getattr(adapter, "spec", None), "zero_image_is_padding", False) and not base.any():
            base = torch.full_like(x, PAD_SAFE_ZERO)
        batch = _with_pixels(t, base)
    out = adapter.run(batch, capture=SITE)
    return out.cache[SITE][t.row, t.patches.to(out.cache[SITE].device)].detach()


def token_forward(adapter, t: Targets):
    """``f(e) -> [k, n_targets]`` for image-token rows ``e`` ``[k, P, D]``: the batch as prepared
    with those rows written at the image's positions of ``inputs_embeds``, one forward per row."""
    pos = t.patches

    def f(e: torch.Tensor) -> torch.Tensor:
        outs = []
        for rows in e:
            def put(x, layout, rows=rows):
                x = x.clone()
                x[t.row, pos.to(x.device)] = rows.to(x.dtype)
                return x
            outs.append(t.select(adapter.run(t.batch, edits={SITE: put}, grad=True).logits).float())
        return torch.cat(outs)

    return f


def token_ig(adapter, t: Targets, baseline, n_steps: int, internal_batch_size: int, absolute: bool) -> np.ndarray:
    """Per-token IG scores ``[n_targets, P]`` (``P`` image tokens of every tile); convergence deltas
    go to ``t.arrays["convergence_delta"]`` / ``t.meta``."""
    from captum.attr import IntegratedGradients

    x = image_rows(adapter, t)[None].float()
    x0 = image_rows(adapter, t, baseline)[None].float()
    ig = IntegratedGradients(token_forward(adapter, t))
    rows, deltas = [], []
    for k in range(t.n):
        attr, delta = ig.attribute(x, baselines=x0, target=k, n_steps=n_steps, internal_batch_size=internal_batch_size,
                                   return_convergence_delta=True)
        a = attr[0].detach().float()
        rows.append((a.abs() if absolute else a).sum(-1).cpu().numpy())
        deltas.append(float(delta.sum()))
    t.arrays["convergence_delta"] = np.asarray(deltas, np.float32)
    t.meta.update(convergence_delta=deltas, ig_space="tokens", site=SITE)
    return np.stack(rows)
