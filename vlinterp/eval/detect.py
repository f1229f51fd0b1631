"""Hallucination detection measured (``vlinterp detect``): claims from a dataset's items, detectors
fitted on a separate split, AUROC / AUPRC per score on held-out claims.

Two kinds of claim (:mod:`vlinterp.detect.base`):

* **answers** (item kinds ``presence``, ``pope-random|popular|adversarial``): the model answers
  each yes/no question (:func:`vlinterp.metrics.pope.choose`); every "yes" is a claim that the asked
  object is present, hallucinated when the expected answer is "no";
* **mentions** (item kind ``caption``): the model captions each image greedily; every object named
  in the caption (a phrase of the vocabulary: on the shapes world ``<colour> <shape>[s]``, else the
  items' object names) is a claim, hallucinated when the image holds no such object (CHAIR's rule);
  the caption before it is the claim's ``prefix``.

:func:`evaluate` fits the detectors on the fit claims (layer choices, probes) and scores the
evaluation claims; :func:`run` does both splits from dataset specs.

>>> res = run("shapes-llava", "shapes:test", kinds=("pope-adversarial",), n=512, seed=21)
>>> print(table(res))
"""
from __future__ import annotations

import re

import numpy as np

from ..core.errors import ConfigError, DataError, UsageError
from ..core.items import Item

PRESENCE_KINDS = ("presence", "pope-random", "pope-popular", "pope-adversarial")
CAPTION_KINDS = ("caption",)
KINDS = PRESENCE_KINDS + CAPTION_KINDS
DEFAULT_DETECTORS = ("perceptual", "conflict", "decision", "margin", "ground", "sae")


# ------------------------------------------------------------------------------ claims
def _target_name(it: Item) -> str:
    t = it.meta.get("target")
    if t is None:
        raise DataError(f"item {it.id or '?'}: a presence question needs meta['target'] (the object asked about)")
    return " ".join(t) if isinstance(t, (tuple, list)) else str(t)


def answer_claims(adapter, items, batch_size: int = 32) -> list[Item]:
    """The model's "yes" answers to the presence questions ``items`` as claims (label: the expected
    answer is "no"; no label when the item has no answer)."""
    from ..metrics.pope import choose

    if not items:
        return []
    pred = choose(adapter, [(it.image, it.prompt) for it in items], ["yes", "no"], batch_size)
    out = []
    for it, p in zip(items, pred):
        if p != "yes":
            continue
        meta = dict(it.meta, prefix="", claim=_target_name(it), candidates=("yes", "no"))
        if it.answer in ("yes", "no"):
            meta["hallucinated"] = it.answer == "no"
        out.append(Item(it.image, it.prompt, "yes", it.objects, it.id, "answer", meta))
    return out


def shapes_vocabulary() -> dict[str, str]:
    """``{"red circle": "red circle", "red circles": "red circle", ...}`` for the shapes world."""
    from ..data.shapes import COLOURS, SHAPES

    vocab = {}
    for c in COLOURS:
        for s in SHAPES:
            vocab[f"{c} {s}"] = vocab[f"{c} {s}s" if not s.endswith("s") else f"{c} {s}es"] = f"{c} {s}"
    return vocab


def names_vocabulary(items) -> dict[str, str]:
    """The items' object names (and a plural with ``s``) as their own canonical names."""
    vocab = {}
    for it in items:
        for o in it.objects:
            n = o.name.lower()
            vocab[n] = vocab[n + "s"] = o.name
    return vocab


def find_mentions(caption: str, vocabulary: dict[str, str]) -> list[tuple[int, int, str]]:
    """``(first word, end word, canonical)`` of each phrase of ``vocabulary`` in ``caption`` (words
    split on spaces, punctuation stripped for matching; longest phrase first, no overlaps)."""
    words = caption.split()
    clean = [re.sub(r"^\W+|\W+$", "", w).lower() for w in words]
    by_len: dict[int, dict] = {}
    for phrase, canon in vocabulary.items():
        toks = tuple(phrase.lower().split())
        by_len.setdefault(len(toks), {})[toks] = canon
    out, i = [], 0
    while i < len(words):
        for n in sorted(by_len, reverse=True):
            canon = by_len[n].get(tuple(clean[i:i + n]))
            if canon is not None and all(clean[i:i + n]):
                out.append((i, i + n, canon))
                i += n
                break
        else:
            i += 1
    return out


def mention_claims(adapter, items, vocabulary: dict[str, str] | None = None, max_new_tokens: int = 32,
                   batch_size: int = 32) -> list[Item]:
    """The objects named in the model's greedy captions of ``items`` as claims (label: no object of
    that name in the image). ``vocabulary``: phrase -> object name (default: the items' names)."""
    vocab = vocabulary or names_vocabulary(items)
    out = []
    for i in range(0, len(items), batch_size):
        ch = items[i:i + batch_size]
        texts = adapter.generate(adapter.prepare(images=[it.image for it in ch], text=[it.prompt for it in ch]),
                                 max_new_tokens=max_new_tokens).texts
        for it, cap in zip(ch, texts):
            words = cap.split()
            present = {o.name for o in it.objects}
            for j, (a, b, canon) in enumerate(find_mentions(cap, vocab)):
                said = " ".join(re.sub(r"^\W+|\W+$", "", w) for w in words[a:b])
                meta = dict(it.meta, prefix=" ".join(words[:a]), claim=canon, caption=cap, mention=j)
                if it.objects or it.answer is not None:
                    meta["hallucinated"] = canon not in present
                out.append(Item(it.image, it.prompt, said, it.objects, f"{it.id}#{j}", "mention", meta))
    return out


def make_claims(adapter, items, kind: str, vocabulary=None, max_new_tokens: int = 32) -> list[Item]:
    """Claims of ``items`` of item kind ``kind`` (see the module doc)."""
    if kind in PRESENCE_KINDS:
        return answer_claims(adapter, items)
    if kind in CAPTION_KINDS:
        return mention_claims(adapter, items, vocabulary, max_new_tokens)
    raise UsageError(f"detect has no claims for item kind {kind!r}; kinds: {', '.join(KINDS)}")


# ---------------------------------------------------------------------------- measuring
def build(specs) -> dict:
    """``{name: detector}`` from specs (``"name"`` / ``"name:k=v"``); a name twice is refused."""
    from .. import detect

    out = {}
    for s in specs:
        d = detect.create(s)
        if d.name in out:
            raise ConfigError(f"detector {d.name!r} given twice")
        out[d.name] = d
    return out


def evaluate(adapter, fit_claims, claims, detectors: dict, batch_size: int = 16, progress: bool = False) -> dict:
    """Fit ``detectors`` on ``fit_claims``, score ``claims`` and measure each score: ``{"claims",
    "hallucinated", "detectors": {name: {auroc, auprc, layer, layer_auroc, fit}}, "items": [...]}``."""
    from ..detect.base import fit_detectors, labels, read_claims
    from ..metrics.detection import auroc, separation

    fit_detectors(adapter, fit_claims, detectors, batch_size, progress)
    vals = read_claims(adapter, claims, detectors, batch_size, progress)
    y = labels(claims)
    rows, per_item = {}, {}
    for name, d in detectors.items():
        sc = d.scores(vals[name])
        r = separation(sc.values, y)
        r["layer"] = sc.layer
        if sc.layers is not None:
            r["layer_auroc"] = [auroc(sc.layers[:, l], y) for l in range(sc.layers.shape[1])]
        r["fit"] = _jsonable(sc.meta)
        rows[name] = r
        per_item[name] = sc.values
    items = [{"id": c.id, "claim": c.meta.get("claim"), "words": c.answer, "prefix": c.meta.get("prefix", ""),
              "hallucinated": bool(y[i]), "scores": {n: float(per_item[n][i]) for n in detectors}}
             for i, c in enumerate(claims)]
    return {"claims": len(claims), "hallucinated": int(y.sum()), "fit_claims": len(fit_claims),
            "fit_hallucinated": int(sum(bool(c.meta.get("hallucinated")) for c in fit_claims)),
            "detectors": rows, "items": items}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        return x.item()
    return x if x is None or isinstance(x, (str, int, float, bool)) else str(x)


def vocabulary_for(ds, items) -> dict[str, str]:
    """The shapes world's phrases for a shapes dataset, else the items' object names."""
    from .datasets.shapes import ShapesDataset

    return shapes_vocabulary() if isinstance(ds, ShapesDataset) else names_vocabulary(items)


def run(model, dataset: str = "shapes:test", kinds=("pope-adversarial", "caption"), detectors=DEFAULT_DETECTORS,
        n: int = 512, seed: int = 21, fit_dataset: str = "shapes:detect-fit", fit_n: int = 1024, fit_seed: int = 0,
        batch_size: int = 16, max_new_tokens: int = 32, progress: bool = False, load_options: dict | None = None) -> dict:
    """Claims of each item kind in ``kinds`` from ``dataset`` (``n`` / ``seed``) and from
    ``fit_dataset`` (``fit_n`` / ``fit_seed``); per kind, fresh ``detectors`` fitted on the fit claims
    and measured on the others. Returns ``{"model", "dataset", "fit_dataset", "tasks": {kind: ...}}``."""
    from .. import load
    from .datasets import open_dataset

    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise UsageError(f"detect has no claims for item kind(s) {', '.join(bad)}; kinds: {', '.join(KINDS)}")
    build(detectors)  # every spec checked before any loading
    ds, fds = open_dataset(dataset), open_dataset(fit_dataset)
    drawn = {}
    for kind in kinds:  # every item read and checked before the model loads
        items, fit_items = ds.items(kind=kind, n=n, seed=seed), fds.items(kind=kind, n=fit_n, seed=fit_seed)
        ids = {it.id for it in items if it.id}
        if any(it.id in ids for it in fit_items):
            raise UsageError(f"the fit and evaluation items of {kind!r} overlap: give a separate fit dataset")
        drawn[kind] = (items, fit_items)
    m = load(model, **(load_options or {})) if isinstance(model, str) else model
    out = {"model": model if isinstance(model, str) else m.name, "dataset": dataset, "fit_dataset": fit_dataset, "n": n,
           "seed": seed, "fit_n": fit_n, "fit_seed": fit_seed, "tasks": {}}
    for kind, (items, fit_items) in drawn.items():
        vocab = vocabulary_for(ds, items + fit_items) if kind in CAPTION_KINDS else None
        claims = make_claims(m, items, kind, vocab, max_new_tokens)
        fit_claims = make_claims(m, fit_items, kind, vocab, max_new_tokens)
        if not claims:
            raise DataError(f"no claims to score among the {len(items)} {kind} items (the model said no / named nothing)")
        res = evaluate(m, fit_claims, claims, build(detectors), batch_size, progress)
        res["items_asked"] = len(items)
        out["tasks"][kind] = res
    return out


def table(res: dict) -> str:
    """Per task: one line per detector with AUROC, AUPRC and the layer it read."""
    lines = []
    for kind, t in res["tasks"].items():
        lines.append(f"{kind}: {t['claims']} claims ({t['hallucinated']} hallucinated) from {t['items_asked']} items; "
                     f"fitted on {t['fit_claims']} ({t['fit_hallucinated']} hallucinated)")
        lines.append(f"  {'detector':<12} {'AUROC':>7} {'AUPRC':>7}  layer  per-layer AUROC")
        for name, r in t["detectors"].items():
            lay = "-" if r["layer"] is None else str(r["layer"])
            traj = " ".join(f"{v:.3f}" for v in r.get("layer_auroc", []))
            lines.append(f"  {name:<12} {r['auroc']:>7.3f} {r['auprc']:>7.3f}  {lay:>5}  {traj}")
    return "\n".join(lines)


__all__ = ["answer_claims", "mention_claims", "make_claims", "find_mentions", "shapes_vocabulary", "names_vocabulary",
           "evaluate", "run", "table", "build", "KINDS", "PRESENCE_KINDS", "CAPTION_KINDS", "DEFAULT_DETECTORS"]
