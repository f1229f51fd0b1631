"""Per-token information of visual tokens by layer, measured by removal, its cheap proxies and the
information horizon (arXiv 2512.07580).

``I_l(i)`` = total-variation distance between the next-token distributions at the last prompt
position with and without image token ``i`` hidden from layer ``l`` on (it stays in the layers
below). The curve ``mean_i I_l(i)`` falls with depth; the horizon is the first layer whose mean
information is below ``frac`` of the largest, past which ranking tokens stops mattering.

Proxies, each read from layer ``l - 1`` (what a pruner before layer ``l`` can see): ``attention``
(FastV: attention received, averaged over queries), ``last_attention`` (attention from the last
position), ``contribution`` (the norm of each token's write into the last position,
:func:`info.contribution`) and ``combined`` (rank sum of contribution and attention). Their agreement with the exact value is a per-row Spearman correlation.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .base import Pruner
from .info import PROXIES, proxy_scores
from .runner import PrunedLM


class _ProxyRecorder(Pruner):
    """Drops nothing; records every proxy before every layer ``>= 1``."""

    def __init__(self):
        super().__init__(1.0)
        self.scores: dict[int, dict[str, torch.Tensor]] = {}

    def wants_attention(self, layer: int) -> bool:
        return True

    def at_layer(self, ctx):
        if ctx.layer >= 1:
            img = ctx.image
            B = img.shape[0]
            pick = lambda s: s[img].reshape(B, -1).float()  # noqa: E731  [B, N] in grid order
            self.scores[ctx.layer] = {k: pick(proxy_scores(ctx, k)) for k in PROXIES}
        return None


def _tv(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (p_logits.float().softmax(-1) - q_logits.float().softmax(-1)).abs().sum(-1)


@torch.no_grad()
def token_information(adapter, items, layers=None, progress: bool = True) -> dict:
    """Exact information by removal and the proxies for ``items``
    (:class:`~vlinterp.core.items.Item` with an image and a prompt).

    Returns ``{"exact": [n, L, N], "proxies": {name: [n, L, N]} (layer 0: NaN), "layers": [...]}``."""
    runner = PrunedLM(adapter)
    L = runner.L
    layers = list(range(L)) if layers is None else [int(l) for l in layers]
    exact, prox = [], {k: [] for k in PROXIES}
    for it in tqdm(items, desc="token information (removal per layer)", disable=not progress):
        b = adapter.prepare(images=[it.image], text=[it.prompt])
        inputs = runner.lm_inputs(b)
        rec = _ProxyRecorder()
        base = runner.prefill(b, rec, inputs=inputs).logits  # [1, V]
        image_pos = inputs.image[0].nonzero().flatten().cpu()
        N = len(image_pos)
        T = b.inputs["input_ids"].shape[1]
        rows = b.repeat(N)
        rows_in = inputs.repeat(N)
        hide = torch.zeros(N, T, dtype=torch.bool)
        hide[torch.arange(N), image_pos] = True
        per_layer = np.full((L, N), np.nan)
        for l in layers:
            out = runner.prefill(rows, removed={l: hide}, inputs=rows_in).logits
            per_layer[l] = _tv(base.expand_as(out), out).cpu().numpy()
        exact.append(per_layer)
        for k in PROXIES:
            arr = np.full((L, N), np.nan)
            for l, s in rec.scores.items():
                arr[l] = s[k][0].cpu().numpy()
            prox[k].append(arr)
    return {"exact": np.stack(exact), "proxies": {k: np.stack(v) for k, v in prox.items()}, "layers": layers}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.argsort().argsort().astype(float), b.argsort().argsort().astype(float)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def summarise(info: dict, frac: float = 0.1) -> dict:
    """Curve, uniformity, horizon and proxy agreement from :func:`token_information`.

    ``curve[l]`` mean information; ``uniformity[l]`` normalised entropy of the information over
    tokens (1 = uniform); ``horizon`` first layer with ``curve < frac * max(curve)`` (``L`` if
    none); ``spearman[proxy][l]`` mean per-row rank correlation with the exact value."""
    ex = info["exact"]
    n, L, N = ex.shape
    curve = np.nanmean(ex, axis=(0, 2))
    p = np.clip(ex, 1e-12, None)
    p = p / p.sum(-1, keepdims=True)
    uniformity = np.nanmean(-(p * np.log(p)).sum(-1) / np.log(N), axis=0)
    top = np.nanmax(curve)
    below = [l for l in range(L) if curve[l] < frac * top]
    horizon = below[0] if below else L
    spear = {k: [float(np.nanmean([_spearman(v[r, l], ex[r, l]) for r in range(n)])) if l >= 1 else float("nan") for l in range(L)]
             for k, v in info["proxies"].items()}
    return {"curve": curve.tolist(), "uniformity": uniformity.tolist(), "horizon": int(horizon), "frac": frac, "spearman": spear}


_HORIZONS: dict[int, int] = {}


def horizon_for(adapter, items, progress: bool = False) -> int:
    """The information horizon of ``adapter`` measured on ``items`` (see :func:`summarise`); remembered
    for the model, so a ``hybrid`` pruner with ``horizon=None`` uses it."""
    h = summarise(token_information(adapter, items, progress=progress))["horizon"]
    _HORIZONS[id(adapter.model)] = h
    return h


def known_horizon(adapter) -> int | None:
    """The horizon last measured for ``adapter``'s model by :func:`horizon_for`, or ``None``."""
    return _HORIZONS.get(id(adapter.model))


__all__ = ["token_information", "summarise", "horizon_for", "known_horizon", "PROXIES"]
