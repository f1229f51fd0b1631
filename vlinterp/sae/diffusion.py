"""SAEs on a diffusion UNet's h-space (the mid-block output) and colour steering with them.

:func:`harvest_hspace` runs the sampler on single-object prompts and keeps the mid-block output
at every step as rows (one per spatial position: ``[B, C, h, w]`` -> ``B*h*w`` rows of ``C``),
with the prompt's colour per row in ``meta``. :func:`colour_feature` picks, per colour, the
feature whose mean activation is highest on that colour's prompts relative to the others.
:func:`steer_colour` samples with an edit at ``unet.mid.0`` that adds the target colour feature's
decoder direction (strength ``alpha`` x its mean activation where active) and switches the prompt
colour's feature off, at every position and step; :func:`steering_success` judges the samples'
colours with the ``shapes-vit`` organism.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.layout import IMAGE
from ..data.shapes import COLOURS, PAIRS
from ..zoo.recipe_diffusion import SAMPLING

SITE = "unet.mid.0"
GUIDANCE = SAMPLING["guidance_scale"]  # sample as the organism does


def _to_rows(t: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` (UNet blocks) -> ``[B, h*w, C]``; ``[B, N, C]`` (attention outputs) as is."""
    if t.dim() == 3:
        return t
    B, C = t.shape[:2]
    return t.reshape(B, C, -1).transpose(1, 2)


def _from_rows(r: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dim() == 3:
        return r.reshape(like.shape)
    return r.transpose(1, 2).reshape(like.shape)


@torch.no_grad()
def harvest_hspace(adapter, n: int = 96, steps: int = 10, seed: int = 0, batch_size: int = 48, progress: bool = True,
                   site: str = SITE):
    """An :class:`~vlinterp.sae.store.ActivationStore` of h-space rows from sampling ``n``
    single-object prompts (all 24 pairs cycled) with ``steps`` sampler steps (guidance ``GUIDANCE``).
    ``meta["colour"]`` ``[n]``: colour index of sample ``i``'s prompt."""
    from ..zoo.diffusion_data import caption
    from .store import ActivationStore

    pairs = [PAIRS[(i + seed) % len(PAIRS)] for i in range(n)]
    parts = {k: [] for k in ("acts", "sample", "position", "step")}
    for i in tqdm(range(0, n, batch_size), desc="harvest h-space", disable=not progress):
        chunk = pairs[i:i + batch_size]
        b = adapter.prepare(text=[caption([p]) for p in chunk], seed=seed * 100003 + i)
        with adapter.capture([site]) as cache:
            adapter.sample(b, steps=steps, guidance_scale=GUIDANCE, progress=False)
        for s, t in enumerate(cache.steps[site]):
            r = _to_rows(t)
            r = r.view(len(chunk), 2, *r.shape[1:])[:, 1] if r.shape[0] == 2 * len(chunk) else r  # the conditional rows
            B, P, C = r.shape
            parts["acts"].append(r.reshape(-1, C).float().cpu())
            parts["sample"].append(torch.arange(i, i + B).repeat_interleave(P))
            parts["position"].append(torch.arange(P).repeat(B))
            parts["step"].append(torch.full((B * P,), s))
    rows = {k: torch.cat(v) for k, v in parts.items()}
    N = len(rows["acts"])
    rows.update({"modality": torch.full((N,), IMAGE, dtype=torch.int8), "row": torch.full((N,), -1, dtype=torch.int16),
                 "col": torch.full((N,), -1, dtype=torch.int16), "token": torch.full((N,), -1, dtype=torch.int32)})
    meta = {"site": site, "model": adapter.name, "family": adapter.family, "keep": "all", "samples_done": n,
            "colour": [COLOURS.index(p[0]) for p in pairs], "pairs": [list(p) for p in pairs], "steps": steps, "complete": True}
    return ActivationStore(rows, meta)


@torch.no_grad()
def colour_feature(sae, store, score: str = "rate") -> dict[str, dict]:
    """One distinct feature per colour: ``{"feature", "gap", "mean_active" (its mean activation
    where > 0 on that colour)}``. ``score="rate"``: firing-rate difference P(f > 0 | colour's
    prompts) - P(f > 0 | other prompts) (as SAVE scores features); ``"gap"``: mean-activation
    difference. Colours pick greedily, the most separable first, each from the features no other
    colour took (two colours sharing one feature could not be steered apart)."""
    from .analysis import encode_rows

    if score not in ("rate", "gap"):
        raise ValueError(f"unknown feature score {score!r}; 'rate' or 'gap'")
    F = encode_rows(sae, store.acts)
    col = torch.as_tensor(store.meta["colour"])[store.rows["sample"]]
    X = (F > 0).float() if score == "rate" else F
    scores = {}
    for ci, c in enumerate(COLOURS):
        m = col == ci
        if m.any():
            scores[c] = X[m].mean(0) - X[~m].mean(0)
    out, taken = {}, set()
    for c in sorted(scores, key=lambda c: -float(scores[c].max())):
        g = scores[c].clone()
        if taken:
            g[list(taken)] = -float("inf")
        k = int(g.argmax())
        taken.add(k)
        fk = F[col == COLOURS.index(c), k]
        out[c] = {"feature": k, "gap": float(g[k]), "mean_active": float(fk[fk > 0].mean()) if (fk > 0).any() else 0.0}
    return {c: out[c] for c in COLOURS if c in out}


def steer_edit(sae, add: int, strength: float, remove: int | None = None):
    """Edit for ``unet.mid.0`` ``[B, C, h, w]``: every position gets ``strength * W_dec[add]``;
    feature ``remove`` (if given) is switched off (its decoded contribution subtracted)."""
    W = sae.W_dec.detach()

    def fn(t, layout):
        r = _to_rows(t).float()
        if remove is not None:
            f = sae.encode(r.reshape(-1, r.shape[-1]))[:, remove].view(*r.shape[:2], 1)
            r = r - f * W[remove]
        r = r + float(strength) * W[add]
        return _from_rows(r.to(t.dtype), t)

    return fn


def swap_edit(sae, src: int, tgt: int, gain: float):
    """Edit for a UNet site ``[B, C, h, w]``: a feature swap. Wherever feature ``src`` fires with
    activation ``a`` (per position), its decoded contribution ``a * W_dec[src]`` is replaced by
    ``gain * a * W_dec[tgt]``; positions where ``src`` is silent are left alone."""
    W = sae.W_dec.detach()

    def fn(t, layout):
        r = _to_rows(t).float()
        a = sae.encode(r.reshape(-1, r.shape[-1]))[:, src].view(*r.shape[:2], 1)
        r = r - a * W[src] + (float(gain) * a) * W[tgt]
        return _from_rows(r.to(t.dtype), t)

    return fn


@torch.no_grad()
def steer_colour(adapter, sae, features: dict, target: str, prompts: list, alpha: float = 2.0, steps: int = 20,
                 seed: int = 0, mode: str = "add", site: str | None = None) -> torch.Tensor:
    """Samples ``[n, 3, S, S]`` for ``prompts`` (``(colour, shape)`` pairs) steered to ``target``.

    ``mode="add"``: :func:`steer_edit` (target direction at every position, strength ``alpha`` x
    its mean activation; the prompt colour's feature switched off). ``mode="swap"``:
    :func:`swap_edit` from the prompt colour's feature to the target's, gain ``alpha`` x the
    ratio of their mean activations (needs one prompt colour per chunk of 48). ``site``: where the
    SAE was trained (default: its ``vlinterp_meta`` site, else ``unet.mid.0``)."""
    from ..zoo.diffusion_data import caption

    if mode not in ("add", "swap"):
        raise ValueError(f"unknown steering mode {mode!r}; 'add' or 'swap'")
    f_t = features[target]
    xs = []
    for i in range(0, len(prompts), 48):
        chunk = prompts[i:i + 48]
        src = {p[0] for p in chunk}
        remove = features[next(iter(src))]["feature"] if len(src) == 1 else None
        b = adapter.prepare(text=[caption([p]) for p in chunk], seed=seed + i)
        site = site or getattr(sae, "vlinterp_meta", {}).get("site") or SITE
        if mode == "swap":
            if remove is None:
                raise ValueError("swap steering needs one prompt colour per chunk of 48 prompts")
            f_s = features[next(iter(src))]
            edit = swap_edit(sae, remove, f_t["feature"], alpha * f_t["mean_active"] / max(f_s["mean_active"], 1e-6))
        else:
            edit = steer_edit(sae, f_t["feature"], alpha * f_t["mean_active"], remove)
        with adapter.edits({site: edit}):
            xs.append(adapter.sample(b, steps=steps, guidance_scale=GUIDANCE, progress=False, return_tensor=True)[1].cpu())
    return torch.cat(xs)


def steering_success(adapter, sae, features: dict, judge, n_per_target: int = 16, alpha: float = 2.0, steps: int = 20,
                     seed: int = 5, progress: bool = True, mode: str = "add", site: str | None = None) -> dict:
    """For each target colour: prompts of other colours (cycled pairs), steered; the share of
    samples the judge (``shapes-vit``) sees in the target colour, and the unsteered share."""
    from ..zoo.recipe_diffusion import sample_prompts, vit_judge

    rows = {}
    hit, base_hit, total = 0, 0, 0
    for ci, target in enumerate(tqdm(COLOURS, desc="steering", disable=not progress)):
        src = COLOURS[(ci + 1) % len(COLOURS)]  # one source colour per target, so its feature can be removed
        prompts = [(src, PAIRS[j % len(PAIRS)][1]) for j in range(n_per_target)]
        x = steer_colour(adapter, sae, features, target, prompts, alpha, steps, seed, mode, site)
        x0 = sample_prompts(adapter, prompts, seed=seed, steps=steps, guidance_scale=GUIDANCE)
        got = [p is not None and p[0] == target for p in vit_judge(judge, x)]
        got0 = [p is not None and p[0] == target for p in vit_judge(judge, x0)]
        rows[target] = {"from": src, "steered": float(np.mean(got)), "unsteered": float(np.mean(got0))}
        hit, base_hit, total = hit + sum(got), base_hit + sum(got0), total + len(got)
    return {"success": hit / total, "unsteered": base_hit / total, "per_colour": rows, "alpha": alpha, "mode": mode,
            "n": total}


__all__ = ["harvest_hspace", "colour_feature", "steer_edit", "swap_edit", "steer_colour", "steering_success"]
