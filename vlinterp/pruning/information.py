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
    """Exact information by removal and the proxies for ``items`` = ``[(image, prompt)]``.

    Returns ``{"exact": [n, L, N], "proxies": {name: [n, L, N]} (layer 0: NaN), "layers": [...]}``."""
    runner = PrunedLM(adapter)
    L = runner.L
    layers = list(range(L)) if layers is None else [int(l) for l in layers]
    exact, prox = [], {k: [] for k in PROXIES}
    for image, prompt in tqdm(items, desc="token information", disable=not progress):
        b = adapter.prepare(images=[image], text=[prompt])
        feats = runner.features(b.inputs["pixel_values"])
        rec = _ProxyRecorder()
        base = runner.prefill(b, rec, feats=feats).logits  # [1, V]
        image_pos = (b.inputs["input_ids"][0] == runner.image_token).nonzero().flatten()
        N = len(image_pos)
        T = b.inputs["input_ids"].shape[1]
        rows = b.repeat(N)
        hide = torch.zeros(N, T, dtype=torch.bool)
        hide[torch.arange(N), image_pos] = True
        per_layer = np.full((L, N), np.nan)
        for l in layers:
            out = runner.prefill(rows, removed={l: hide}, feats=feats.repeat(N, 1, 1)).logits
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


def probe_items(n: int = 8, seed: int = 101, split: str = "val") -> list:
    """``[(image, question)]`` from the shapes world: presence, colour and count questions in turn."""
    from ..data.questions import count_questions, presence_question
    from ..data.shapes import make_split, scene_rng

    out = []
    for s in make_split(split, n, seed):
        rng = scene_rng(split, seed, s.index, 5)
        o = s.objects[int(rng.integers(len(s.objects)))]
        kind = s.index % 3
        if kind == 0:
            q = presence_question(o.colour, o.shape)
        elif kind == 1:
            q = f"what color is the {o.shape}?"
        else:
            cq = count_questions(s, rng)
            q = cq[int(rng.integers(len(cq)))].question
        out.append((s.pil(), q))
    return out


_HORIZONS: dict[int, int] = {}


def horizon_for(adapter, n: int = 8, seed: int = 101, progress: bool = False) -> int:
    """The information horizon of ``adapter`` on ``n`` shapes probe items (cached per model)."""
    key = id(adapter.model)
    if key not in _HORIZONS:
        _HORIZONS[key] = summarise(token_information(adapter, probe_items(n, seed), progress=progress))["horizon"]
    return _HORIZONS[key]


__all__ = ["token_information", "summarise", "probe_items", "horizon_for", "PROXIES"]
