"""SAE quality: reconstruction and sparsity on held-out store rows, and the model's answers with
the reconstruction spliced in.

- :func:`reconstruction`: fraction of variance unexplained (FVU = ``sum |x - x_hat|^2 /
  sum |x - mean(x)|^2``), overall and per modality; mean L0; dead fraction (features that never
  fire on the rows) and dense fraction (features firing on more than ``dense`` of the rows).
- :func:`splice_effect`: yes/no accuracy and the answer's cross-entropy on question items, with vs
  without the SAE reconstruction at its site (an adapter edit; hooks removed afterwards).
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.layout import IMAGE


@torch.no_grad()
def reconstruction(sae, acts: torch.Tensor, modality: torch.Tensor | None = None, chunk: int = 4096,
                   dense: float = 0.1) -> dict:
    """Metrics of ``sae`` on rows ``acts`` ``[N, D]`` (``modality`` ``[N]`` for per-modality FVU)."""
    from .attach import _check_width

    _check_width(sae, acts)
    x = acts.float()
    mean = x.mean(0)
    err, fired, l0 = [], torch.zeros(sae.cfg.d_sae), []
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk]
        f = sae.encode(xi)
        r = sae.decode(f)
        err.append(((r - xi) ** 2).sum(1))
        act = f > 0
        fired += act.float().sum(0)
        l0.append(act.float().sum(1))
    err, l0 = torch.cat(err), torch.cat(l0)
    var = ((x - mean) ** 2).sum(1)
    out = {"fvu": float(err.sum() / var.sum()), "l0": float(l0.mean()), "n": len(x),
           "dead_fraction": float((fired == 0).float().mean()), "dense_fraction": float((fired / len(x) > dense).float().mean())}
    if modality is not None:
        for name, m in (("image", modality == IMAGE), ("text", modality != IMAGE)):
            if m.any():
                xm = x[m]
                out[f"fvu_{name}"] = float(err[m].sum() / ((xm - xm.mean(0)) ** 2).sum())
                out[f"l0_{name}"] = float(l0[m].mean())
    return out


def splice_effect(adapter, sae, site: str, items, positions: str | None = None) -> dict:
    """Accuracy (the model's choice among ``yes`` / ``no``) and the mean cross-entropy of the gold
    answer token on ``items`` (:class:`~vlinterp.core.items.Item` with image, yes/no question and
    answer), plain vs with the SAE reconstruction spliced in at ``site`` on ``positions`` (default:
    the tokens the SAE was trained on, ``vlinterp_meta["tokens"]``, else all)."""
    from ..metrics.pope import choose, yes_no_scores
    from .attach import splice_edit

    qs = [(it.image, it.prompt) for it in items]
    gold = [it.answer for it in items]

    def ce() -> float:
        losses = []
        for i in range(0, len(qs), 32):
            ch = qs[i:i + 32]
            b = adapter.prepare(images=[im for im, _ in ch], text=[t for _, t in ch])
            lg = adapter.run(b).logits
            for r in range(len(ch)):
                last = int(b.layout.span("last", r)[0])
                losses.append(float(torch.nn.functional.cross_entropy(lg[r, last].float()[None],
                                                                      torch.tensor([adapter.token_id(gold[i + r])]))))
        return float(np.mean(losses))

    plain = yes_no_scores(choose(adapter, qs, ["yes", "no"]), gold)["accuracy"]
    ce_plain = ce()
    meta = getattr(sae, "vlinterp_meta", {}) or {}
    positions = positions or meta.get("tokens") or meta.get("keep") or "all"
    with adapter.edits({site: splice_edit(sae, site, positions)}):
        spliced = yes_no_scores(choose(adapter, qs, ["yes", "no"]), gold)["accuracy"]
        ce_spliced = ce()
    return {"accuracy": plain, "accuracy_spliced": spliced, "accuracy_change": spliced - plain,
            "ce": ce_plain, "ce_spliced": ce_spliced, "ce_change": ce_spliced - ce_plain, "n": len(items), "site": site,
            "positions": positions}


__all__ = ["reconstruction", "splice_effect"]
