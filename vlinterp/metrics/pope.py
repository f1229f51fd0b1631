"""Answer-level metrics: POPE (object presence, yes/no) scores, computed from the model's own
greedy choice between candidate answers.

:func:`choose` compares the candidates' first-token logits at the ``last`` position (the greedy
answer when the model answers with one of them); :func:`yes_no_scores` turns answers into
accuracy, F1, yes rate and false-yes rate; :func:`presence_scores` does both for items. Edits
active around the call (steering) apply. Datasets (the shapes world's POPE splits, POPE JSON-lines
files) are read in :mod:`vlinterp.eval.pope`.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.items import Item


def _pair(item) -> tuple:
    return (item.image, item.prompt) if isinstance(item, Item) else tuple(item[:2])


def choose(adapter, items, candidates: list[str], batch_size: int = 32, progress=None) -> list[str]:
    """Greedy answer among ``candidates`` for each item (an :class:`~vlinterp.core.items.Item`, or an
    ``(image or None, prompt)`` pair); one modality per call: all items with an image, or all without.
    ``progress``: a tqdm-like bar advanced by the items answered."""
    ids = torch.tensor([adapter.token_id(c) for c in candidates])
    pairs = [_pair(it) for it in items]
    out = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        imgs = None if chunk[0][0] is None else [im for im, _ in chunk]
        b = adapter.prepare(images=imgs, text=[t for _, t in chunk])
        logits = adapter.run(b).logits
        last = torch.stack([logits[r, int(b.layout.span("last", r))] for r in range(len(chunk))]).float().cpu()
        out += [candidates[j] for j in last[:, ids].argmax(-1).tolist()]
        if progress is not None:
            progress.update(len(chunk))
    return out


def yes_no_scores(pred: list[str], gold: list[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (``yes`` = positive), yes rate, false-yes rate."""
    p = np.array([x == "yes" for x in pred])
    g = np.array([x == "yes" for x in gold])
    tp, fp, fn = int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum())
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    return {"accuracy": float((p == g).mean()), "precision": prec, "recall": rec,
            "f1": 2 * prec * rec / max(prec + rec, 1e-12), "yes_rate": float(p.mean()),
            "false_yes": float(p[~g].mean()) if (~g).any() else 0.0}


def presence_scores(adapter, items, batch_size: int = 32) -> dict[str, float]:
    """:func:`yes_no_scores` of the model's answers to yes/no ``items`` (``item.answer``: the label)."""
    pred = choose(adapter, items, ["yes", "no"], batch_size)
    return yes_no_scores(pred, [it.answer for it in items])


__all__ = ["choose", "yes_no_scores", "presence_scores"]
