"""SAEs on a diffusion model's activations (the UNet's h-space, the text encoder's output) and
steering the samples with them: method code that takes prompts and labels, never a dataset.

:func:`harvest_prompts` runs the sampler on text prompts and keeps a site's output at every step as
rows (one per spatial position: ``[B, C, h, w]`` -> ``B*h*w`` rows of ``C``), with each prompt's
label index in ``meta["labels"]``. :func:`label_features` picks one distinct feature per label.
:func:`steer_edit` adds a feature's decoder direction (and switches another off) and
:func:`swap_edit` swaps one feature for another where it fires; :func:`steer_samples` samples with
either. The shapes-world colour experiments built on these are :mod:`vlinterp.eval.sae_diffusion`.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..core.errors import ConfigError
from ..core.layout import IMAGE

SITE = "unet.mid.0"


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
def harvest_prompts(adapter, prompts: list[str], labels: list[int] | None = None, steps: int = 10, seed: int = 0,
                    guidance_scale: float = 2.0, batch_size: int = 48, site: str = SITE, progress: bool = True, meta=None):
    """An :class:`~vlinterp.sae.store.ActivationStore` of ``site``'s rows from sampling ``prompts``
    (``steps`` sampler steps; chunk ``i`` seeded ``seed * 100003 + i``; the conditional rows when
    guidance doubles the batch). ``labels``: an int per prompt, kept as ``meta["labels"]``."""
    from .store import ActivationStore

    parts = {k: [] for k in ("acts", "sample", "position", "step")}
    for i in tqdm(range(0, len(prompts), batch_size), desc=f"harvest {site} while sampling", disable=not progress):
        chunk = prompts[i:i + batch_size]
        b = adapter.prepare(text=list(chunk), seed=seed * 100003 + i)
        with adapter.capture([site]) as cache:
            adapter.sample(b, steps=steps, guidance_scale=guidance_scale, progress=False)
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
    info = {"site": site, "model": adapter.name, "family": adapter.family, "tokens": "all", "samples_done": len(prompts),
            "labels": list(labels) if labels is not None else None, "steps": steps, "complete": True, **(meta or {})}
    return ActivationStore(rows, info)


@torch.no_grad()
def label_features(sae, store, names: list[str], score: str = "rate") -> dict[str, dict]:
    """One distinct feature per label (``names[i]`` for label ``i`` of ``store.meta["labels"]``):
    ``{name: {"feature", "gap", "mean_active" (its mean activation where > 0 on that label)}}``.
    ``score="rate"``: firing-rate difference P(f > 0 | label's prompts) - P(f > 0 | others) (as
    SAVE scores features); ``"gap"``: mean-activation difference. Labels pick greedily, the most
    separable first, each from the features no other label took (two labels sharing one feature
    could not be steered apart)."""
    from .analysis import encode_rows

    if score not in ("rate", "gap"):
        raise ConfigError(f"unknown feature score {score!r}; 'rate' or 'gap'")
    F = encode_rows(sae, store.acts)
    lab = torch.as_tensor(store.meta["labels"])[store.rows["sample"]]
    X = (F > 0).float() if score == "rate" else F
    scores = {}
    for ci, c in enumerate(names):
        m = lab == ci
        if m.any():
            scores[c] = X[m].mean(0) - X[~m].mean(0)
    out, taken = {}, set()
    for c in sorted(scores, key=lambda c: -float(scores[c].max())):
        g = scores[c].clone()
        if taken:
            g[list(taken)] = -float("inf")
        k = int(g.argmax())
        taken.add(k)
        fk = F[lab == names.index(c), k]
        out[c] = {"feature": k, "gap": float(g[k]), "mean_active": float(fk[fk > 0].mean()) if (fk > 0).any() else 0.0}
    return {c: out[c] for c in names if c in out}


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
def steer_samples(adapter, sae, features: dict, target: str, prompts: list[str], sources: list[str], alpha: float = 2.0,
                  steps: int = 20, seed: int = 0, mode: str = "add", site: str | None = None, guidance_scale: float = 2.0,
                  batch_size: int = 48) -> torch.Tensor:
    """Samples ``[n, 3, S, S]`` for text ``prompts`` steered to label ``target``; ``sources[i]``: the
    label prompt ``i`` asks for, ``features``: :func:`label_features`'s output.

    ``mode="add"``: :func:`steer_edit` (target direction at every position, strength ``alpha`` x
    its mean activation; the source label's feature switched off when a chunk has one source).
    ``mode="swap"``: :func:`swap_edit` from the source's feature to the target's, gain ``alpha`` x
    the ratio of their mean activations (one source per chunk of ``batch_size``). ``site``: where
    the SAE was trained (default: its ``vlinterp_meta`` site, else ``unet.mid.0``)."""
    if mode not in ("add", "swap"):
        raise ConfigError(f"unknown steering mode {mode!r}; 'add' or 'swap'")
    f_t = features[target]
    xs = []
    for i in range(0, len(prompts), batch_size):
        chunk, src = prompts[i:i + batch_size], set(sources[i:i + batch_size])
        remove = features[next(iter(src))]["feature"] if len(src) == 1 else None
        b = adapter.prepare(text=list(chunk), seed=seed + i)
        site = site or getattr(sae, "vlinterp_meta", {}).get("site") or SITE
        if mode == "swap":
            if remove is None:
                raise ConfigError(f"swap steering needs one source label per chunk of {batch_size} prompts")
            f_s = features[next(iter(src))]
            edit = swap_edit(sae, remove, f_t["feature"], alpha * f_t["mean_active"] / max(f_s["mean_active"], 1e-6))
        else:
            edit = steer_edit(sae, f_t["feature"], alpha * f_t["mean_active"], remove)
        with adapter.edits({site: edit}):
            xs.append(adapter.sample(b, steps=steps, guidance_scale=guidance_scale, progress=False, return_tensor=True)[1].cpu())
    return torch.cat(xs)


__all__ = ["harvest_prompts", "label_features", "steer_edit", "swap_edit", "steer_samples", "SITE"]
