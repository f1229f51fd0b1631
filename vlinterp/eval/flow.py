"""Information-flow methods on items and datasets: attention knockout, direct logit attribution and
relevance patching (:data:`vlinterp.tracing.TRACING_METHODS`), one item or a sweep.

- :func:`flow_item`: one :class:`~vlinterp.core.items.Item` through any tracing method (object
  patches from the item's box, else from a saliency map when the method needs them; object words
  from ``meta["object"]`` or the prompt, as :func:`vlinterp.eval.trace.trace_item` does).
- :func:`flow_dataset`: a method over items on a :class:`~vlinterp.scale.WorkerPool`: the per-item
  arrays and their means (knockout: the flow map; DLA: mean contributions; RelP: mean estimates).
- :func:`knockout_flow`: the flow map over the shapes world's positive presence questions that the
  model answers right: mean relative drop of P(yes) per edge and layer window, with standard errors.
- :func:`relp_agreement`: RelP against activation patching on the same cells, item by item.
- :func:`attention_part_curves`: tracing of the last token's attention output split by the keys it
  reads (image / text; :func:`vlinterp.tracing.attention_parts`), the patching counterpart of
  knockout's image -> last edge.
"""
from __future__ import annotations

from functools import partial

import numpy as np
from tqdm.auto import tqdm

from ..core.errors import ConfigError, VlinterpError
from ..core.items import Item

MEAN_KEYS = {"knockout": ("p", "drop", "p_clean"), "dla": ("components", "heads", "direct", "other", "total", "sum"),
             "relp": ("ie", "rr", "p_clean", "te"), "parts": ("rr", "ie", "p_patch", "p_clean", "te"), "causal": ("rr", "ie", "p_patch", "p_clean", "te")}


def method_of(spec, **opts):
    """A tracing method instance from a spec string (``"relp:samples=2"``) or an instance; ``opts``
    (keyword options, e.g. from CLI flags) fill what the spec does not say."""
    from ..tracing.methods import TRACING_METHODS, TracingMethod

    if isinstance(spec, TracingMethod):
        return spec
    name, given = TRACING_METHODS.parse(spec)
    known = TRACING_METHODS.options(name)
    merged = {k: v for k, v in opts.items() if k in known and v is not None}
    merged.update(given)
    return TRACING_METHODS.create(name, **merged)


def _needs_object(method) -> bool:
    edges = getattr(method.config, "edges", ())
    return any("object" in str(e).replace(">", ":").split(":") for e in edges) or getattr(method.config, "positions", "") == "groups"


def flow_item(adapter, item: Item, method, corruption: str = "noise", noise: float = 3.0, seed: int | None = None,
              saliency: str = "relevancy", object_fraction: float = 0.1, interchange=None, progress: bool = False):
    """Run ``method`` (spec or instance) on one item; returns its :class:`~vlinterp.core.result.Result`
    (``meta`` adds the prompt, the object mask's source and the object words). ``seed``: the noise
    seed of methods that corrupt (default: the method's own)."""
    import dataclasses

    from ..tracing import make_corruption, text_positions
    from .trace import default_object, prepare, saliency_patch_mask

    m = method_of(method)
    if seed is not None and hasattr(m.config, "seed"):
        m = type(m)(dataclasses.replace(m.config, seed=int(seed)))
    b, target = prepare(adapter, item.image, item.prompt, item.answer)
    words = item.meta.get("object") or (default_object(item.prompt) if item.prompt else None)
    obj_pos = text_positions(adapter, b, words) if words else None
    box = item.objects[0].box if item.objects else None
    mask, source = (box, "box") if box is not None else (None, "none")
    if mask is None and _needs_object(m):
        mask, source = saliency_patch_mask(adapter, b, target, saliency, object_fraction), f"saliency:{saliency}"
    corr = make_corruption(corruption, noise, positions=obj_pos, image=interchange) if m.uses_corruption else None
    r = m.run(adapter, b, target, object_mask=mask, object_positions=obj_pos, corruption=corr, progress=progress)
    r.meta.update({"prompt": item.prompt, "object_mask_source": source, "object_words": words})
    return r


def flow_items(adapter, items: list[Item], start: int, method, corruption: str = "noise", noise: float = 3.0) -> list[dict]:
    """``method`` over ``items`` (item ``start + k`` with noise seed ``seed + start + k``): one entry per item
    with the arrays of :data:`MEAN_KEYS` and the meta that says what they index."""
    m = method_of(method)
    out = []
    for k, it in enumerate(items):
        seed = getattr(m.config, "seed", 0) + start + k if hasattr(m.config, "seed") else None
        try:
            r = flow_item(adapter, it, m, corruption, noise, seed=seed)
        except VlinterpError as e:  # the error names the item, wherever it ran
            raise type(e)(f"item {it.id}: {e}") from e
        keep = MEAN_KEYS.get(r.method, tuple(r.arrays))
        meta = {k2: r.meta[k2] for k2 in ("target", "edges", "layers", "windows", "components", "positions", "parts", "foil")
                if k2 in r.meta}
        out.append({"id": it.id, "prompt": it.prompt, **meta, **{a: np.asarray(r.arrays[a]).tolist() for a in keep if a in r.arrays}})
    return out


def flow_dataset(pool, items: list[Item], method, corruption: str = "noise", noise: float = 3.0, progress: bool = False) -> dict:
    """``method`` over every item on ``pool``; returns ``{"meta", "mean": {array: mean over items}, "items"}``."""
    if not items:
        raise ConfigError("no items to run")
    m = method_of(method)
    if getattr(m.config, "positions", "groups") != "groups":
        raise ConfigError("a dataset runs over the position groups (positions 'groups'): token positions differ between items")
    shard = max(1, -(-len(items) // max(1, 2 * pool.workers)))
    entries = pool.map(partial(flow_items, method=m, corruption=corruption, noise=noise), items, shard=shard,
                       desc=f"trace {m.name} (items)", ids=[it.id for it in items], progress=progress)
    first = entries[0]
    shape_keys = [k for k in ("edges", "layers", "positions", "components", "parts") if k in first]
    for e in entries[1:]:
        for k in shape_keys:
            if e[k] != first[k]:
                raise ConfigError(f"item {e['id']}: {k} differ from item {first['id']}")
    arrays = [k for k in MEAN_KEYS.get(m.name, ()) if k in first]
    mean = {k: np.nanmean(np.array([e[k] for e in entries], float), 0).tolist() for k in arrays}
    meta = {"n": len(entries), "method": m.name, "config": {k: (list(v) if isinstance(v, tuple) else v)
                                                              for k, v in vars(m.config).items()},
            **{k: first[k] for k in shape_keys + ["windows"] if k in first}}
    return {"meta": meta, "mean": mean, "items": entries}


# ------------------------------------------------------------------- shapes-world measurements
def _answers(adapter, b, target: str = "yes", foil: str = "no") -> bool:
    last = int(b.layout.span("last", 0)[0])
    lg = adapter.run(b).logits[0, last]
    return bool(lg[adapter.token_id(target)] > lg[adapter.token_id(foil)])


def knockout_flow(adapter, n: int = 32, split: str = "test", seed: int = 11, edges=("image:last", "image:question",
                  "question:last", "object:last"), window: int = 1, window_mode: str = "rome", progress: bool = False) -> dict:
    """The knockout flow map on the positive presence questions of ``n`` held-out scenes that the
    model answers ``yes``: per edge and layer window the mean relative drop of P(yes) and its
    standard error, and the drop of the mean P (``(mean P_clean - mean P) / mean P_clean``).
    ``object``: the asked object's patches (ground-truth box)."""
    from ..tracing.knockout import knockout
    from .trace import shapes_items

    drops, ps, pcs = [], [], []
    skipped = 0
    meta = None
    for it in tqdm(shapes_items(n, seed, split), desc="knockout flow", disable=not progress):
        b = adapter.prepare(images=[it.image], text=[it.prompt])
        if not _answers(adapter, b):
            skipped += 1
            continue
        r = knockout(adapter, b, "yes", edges=list(edges), window=window, window_mode=window_mode, object_mask=it.objects[0].box)
        drops.append(r.arrays["drop"])
        ps.append(r.arrays["p"])
        pcs.append(float(r.arrays["p_clean"][0]))
        meta = r.meta
    if not drops:
        raise ConfigError("the model answered none of the questions right: nothing to knock out")
    d = np.array(drops)
    k = len(d)
    return {"edges": meta["edges"], "layers": meta["layers"], "windows": meta["windows"], "window": window, "n": k,
            "skipped_wrong": skipped, "drop": d.mean(0).tolist(), "drop_se": (d.std(0, ddof=1) / np.sqrt(k) if k > 1 else 0 * d[0]).tolist(),
            "drop_of_means": ((np.mean(pcs) - np.array(ps).mean(0)) / np.mean(pcs)).tolist(), "p_clean": float(np.mean(pcs)),
            "share_halved": (d >= 0.5).mean(0).tolist()}


def without_object(scene, pair):
    """``scene``'s image with every object of ``pair`` (colour, shape) painted over in the background
    colour: the minimal counterfactual of a presence question (the shapes world's objects do not
    overlap, so nothing else changes). PIL image."""
    from PIL import Image

    img = scene.image.copy()
    for o in scene.objects:
        if o.pair == tuple(pair):
            img[o.mask] = scene.background
    return Image.fromarray(img)


RELP_CORRUPTIONS = ("noise", "removed")


def relp_agreement(adapter, n: int = 16, split: str = "test", seed: int = 11, components=("attn", "mlp", "resid"),
                   samples: int = 3, rules: str = "lrp", min_rel: float = 0.01, metric: str = "prob",
                   steps: int = 1, corruption: str = "noise", progress: bool = False) -> dict:
    """RelP against activation patching on the same cells (components x layers x the seven FCCT
    groups, the object's patches from its box and its words from the prompt, image noise, noise
    seed = the scene's index) of ``n`` positive presence questions answered
    ``yes``. Sign agreement over all cells with a nonzero patched effect, and over the cells whose
    patched effect is at least ``min_rel`` of the item's total effect; the RelP and patched tables
    per item. ``rules``: ``lrp`` (RelP), ``attnlrp``, ``none`` (attribution patching) or an ablation dict
    (:func:`~vlinterp.tracing.lrp.rule_set`); ``metric``: what RelP
    differentiates (``prob``: P(yes), what patching measures; ``logit``: the logit of "yes"); ``steps``:
    RelP's points on the corrupted-to-clean path; ``corruption``: ``noise`` (tracing's image noise) or
    ``removed`` (the same scene with the queried object painted out, :func:`without_object`: an
    in-distribution counterfactual pair, one deterministic sample)."""
    from ..tracing import make_corruption, relp, sign_agreement, text_positions, trace
    from .trace import shapes_items

    if corruption not in RELP_CORRUPTIONS:
        raise ConfigError(f"corruption must be one of {', '.join(RELP_CORRUPTIONS)}, got {corruption!r}")
    est, ie, tes = [], [], []
    skipped = 0
    for it in tqdm(shapes_items(n, seed, split), desc=f"relp ({rules}, {metric}) vs patching", disable=not progress):
        b = adapter.prepare(images=[it.image], text=[it.prompt])
        if not _answers(adapter, b):
            skipped += 1
            continue
        s = int(it.meta["scene"].index)
        kw = dict(components=components, samples=samples, seed=s, object_mask=it.objects[0].box,
                  object_positions=text_positions(adapter, b, it.meta["object"]))
        if corruption == "removed":
            pair = (it.objects[0].attrs["colour"], it.objects[0].attrs["shape"])
            kw["corruption"] = make_corruption("interchange", image=without_object(it.meta["scene"], pair))
        r = relp(adapter, b, "yes", rules=rules, metric=metric, steps=steps, **kw)
        t = trace(adapter, b, "yes", **kw)
        est.append(r.arrays["ie"])
        ie.append(t.arrays["ie"])
        tes.append(float(t.arrays["te"][0]))
    e, t = np.array(est), np.array(ie)
    thr = (min_rel * np.abs(np.array(tes)))[:, None, None, None] * np.ones_like(t)
    keep = np.abs(t) > thr
    all_share, all_n = sign_agreement(e, t, 0.0)
    big = float(np.mean(np.sign(e[keep]) == np.sign(t[keep]))) if keep.any() else float("nan")
    corr = float(np.corrcoef(e.ravel(), t.ravel())[0, 1]) if e.size > 1 else float("nan")
    by_comp = {c: sign_agreement(e[:, ci], t[:, ci], 0.0)[0] for ci, c in enumerate(components)}
    return {"n": len(est), "skipped_wrong": skipped, "rules": rules, "metric": metric, "steps": steps, "corruption": corruption,
            "agreement": all_share, "cells": all_n,
            "agreement_large": big, "cells_large": int(keep.sum()), "min_rel": min_rel, "pearson": corr, "agreement_by_component": by_comp,
            "estimate": e.tolist(), "patched": t.tolist(), "te": tes}


def attention_part_curves(adapter, n: int = 48, split: str = "test", seed: int = 11, samples: int = 3, noise: float = 3.0,
                          progress: bool = False) -> dict:
    """:func:`~vlinterp.tracing.attention_parts` over the positive presence questions of ``n`` held-out
    scenes answered "yes" (noise seed = the scene's index, as :func:`~vlinterp.eval.trace_curves.last_token_curves`):
    the recovery rate of the means per part and layer, ``{"rr": {part: [L]}, "n", "skipped_wrong",
    "p_clean", "p_corrupt"}``; the patching counterpart of knockout's image -> last edge."""
    from ..tracing import PARTS, attention_parts
    from .trace import shapes_items

    pp, pcs, pks, skipped = [], [], [], 0
    for it in tqdm(shapes_items(n, seed, split), desc="attention parts", disable=not progress):
        b = adapter.prepare(images=[it.image], text=[it.prompt])
        if not _answers(adapter, b):
            skipped += 1
            continue
        r = attention_parts(adapter, b, "yes", samples, int(it.meta["scene"].index), noise).arrays
        pp.append(r["p_patch"])
        pcs.append(float(r["p_clean"][0]))
        pks.append(float(r["p_corrupt"].mean()))
    if not pcs:
        raise ConfigError("the model answered none of the questions right: nothing to trace")
    pk, te = float(np.mean(pks)), float(np.mean(pcs) - np.mean(pks))
    rr = {k: ((np.mean(pp, 0)[i] - pk) / te).tolist() for i, k in enumerate(PARTS)}
    return {"rr": rr, "n": len(pcs), "skipped_wrong": skipped, "p_clean": float(np.mean(pcs)), "p_corrupt": pk}


__all__ = ["method_of", "flow_item", "flow_items", "flow_dataset", "knockout_flow", "relp_agreement", "without_object", "attention_part_curves", "MEAN_KEYS"]
