"""Answer-level metrics on the shapes world: POPE (object presence, yes/no) with its three
negative types, computed from the model's own greedy choice between candidate answers.

:func:`choose` compares the candidates' first-token logits at the ``last`` position (the greedy
answer when the model answers with one of them); :func:`pope` returns accuracy, F1, yes rate and
false-yes rate on ``n`` held-out scenes of a split. Edits active around the call (steering)
apply.
"""
from __future__ import annotations

import numpy as np
import torch


def choose(adapter, items, candidates: list[str], batch_size: int = 32) -> list[str]:
    """Greedy answer among ``candidates`` for each ``(image or None, prompt)`` item (one
    modality per call: all items with an image, or all without)."""
    ids = torch.tensor([adapter.token_id(c) for c in candidates])
    out = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        imgs = None if chunk[0][0] is None else [im for im, _ in chunk]
        b = adapter.prepare(images=imgs, text=[t for _, t in chunk])
        logits = adapter.run(b).logits
        last = torch.stack([logits[r, int(b.layout.span("last", r))] for r in range(len(chunk))]).float().cpu()
        out += [candidates[j] for j in last[:, ids].argmax(-1).tolist()]
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


def pope(adapter, neg_type: str = "random", split: str = "test", n: int = 256, seed: int = 1) -> dict[str, float]:
    """POPE on ``n`` scenes of ``split`` (half present, half ``neg_type`` negatives:
    ``random``, ``popular`` or ``adversarial`` = the co-occurring partner)."""
    from ..data.questions import pope_split

    items = pope_split(split, n, seed, neg_type)
    pred = choose(adapter, [(s.pil(), qa.question) for s, qa in items], ["yes", "no"])
    return yes_no_scores(pred, [qa.answer for _, qa in items])


def load_pope_jsonl(path: str, image_dir: str | None = None) -> list[tuple]:
    """POPE-format file (one JSON object per line: ``image``, ``text`` (the question), ``label``
    ``yes``/``no``; ``question_id`` optional) -> ``[(PIL image, question, label)]``. Image paths
    are relative to ``image_dir`` (default: the file's folder)."""
    from ..core.errors import PromptError
    from ..data.jsonl import read_jsonl

    out = []
    for d, img in read_jsonl(path, ("image", "text", "label"), image_dir):
        label = str(d["label"]).strip().lower()
        if label not in ("yes", "no"):
            raise PromptError(f"{path}: label must be yes or no, got {d['label']!r} (question {d['text']!r})")
        out.append((img, d["text"], label))
    if not out:
        raise PromptError(f"{path}: no POPE lines")
    return out


def pope_items(adapter, items) -> dict[str, float]:
    """Scores on ``[(image, question, yes/no label)]`` items (e.g. from :func:`load_pope_jsonl`)."""
    pred = choose(adapter, [(im, q) for im, q, _ in items], ["yes", "no"])
    return yes_no_scores(pred, [a for _, _, a in items])


__all__ = ["choose", "yes_no_scores", "pope", "load_pope_jsonl", "pope_items"]
