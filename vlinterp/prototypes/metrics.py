"""Prototype-model metrics against items' ground truth (objects with names, attributes and masks).

* accuracy: mean label accuracy and exact-match (all labels right) of the head, beside the
  linear probe on the same frozen features;
* consistency: a prototype is consistent when, over the held-out images where it fires, the object
  under its best cell has the same value of one attribute (``attrs``: colour, or shape, on the
  shapes world; the object's name when items carry no such attributes) in more than ``0.8`` of them;
* stability: share of (image, firing prototype) whose hit object is unchanged when N(0, sigma)
  noise is added to the model's pixel input;
* localisation: pointing game of each prototype's map on the objects of the class it claims, over
  the held-out images that contain that class.
"""
from __future__ import annotations

import numpy as np
import torch

from ..metrics.coverage import item_coverage
from ..metrics.faithfulness import pointing_game
from .maps import heatmap, pooled_map


def labels_for(items, classes: list[str]) -> torch.Tensor:
    """Multi-hot ``[n, K]``: which of ``classes`` each item's objects are (by name)."""
    from ..core.errors import DataError

    idx = {c: k for k, c in enumerate(classes)}
    y = torch.zeros(len(items), len(classes))
    for i, it in enumerate(items):
        for o in it.objects:
            if o.name not in idx:
                raise DataError(f"item {it.id or i}: object {o.name!r} is not one of the {len(classes)} classes")
            y[i, idx[o.name]] = 1
    return y


def _parts(items, attrs) -> tuple[str, ...]:
    """The attributes consistency compares: ``attrs`` when every object has them, else the name."""
    objs = [o for it in items for o in it.objects]
    return tuple(attrs) if objs and all(a in o.attrs for o in objs for a in attrs) else ("name",)


def _key(o, part: str):
    return o.name if part == "name" else o.attrs[part]


def _pool_cov(cov: np.ndarray, s: int) -> np.ndarray:
    """``[n_obj, R, C]`` coverage averaged over sliding ``s x s`` windows -> ``[n_obj, R-s+1, C-s+1]``."""
    if s == 1:
        return cov
    n, R, C = cov.shape
    out = np.zeros((n, R - s + 1, C - s + 1), np.float32)
    for r in range(R - s + 1):
        for c in range(C - s + 1):
            out[:, r, c] = cov[:, r:r + s, c:c + s].mean((1, 2))
    return out


def _hits(items, pf, out: dict, head, min_cov: float = 0.15) -> np.ndarray:
    """``[n, P]`` object index under each prototype's best cell (-1 = background)."""
    n, P = out["sim"].shape
    hits = np.full((n, P), -1, np.int64)
    scales = head.proto_scale.tolist()
    for i, it in enumerate(items):
        cov = item_coverage(it, pf.grid, pf.boxes[i])
        pooled = {sc: _pool_cov(cov, sc) for sc in set(scales)}
        for j in range(P):
            if not len(cov):
                continue
            r, c = out["argmax"][i, j].tolist()
            col = pooled[scales[j]][:, r, c]
            k = int(col.argmax())
            if col[k] >= min_cov:
                hits[i, j] = k
    return hits


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    pred = logits > 0
    y = labels.bool()
    return {"mean_label_accuracy": float((pred == y).float().mean()), "exact_match": float((pred == y).all(1).float().mean())}


def evaluate(pm, items, noise: float = 0.2, seed: int = 0, consistent_at: float = 0.8, min_fires: int = 5,
             attrs=("colour", "shape")) -> dict:
    """All metrics on held-out ``items`` (:class:`~vlinterp.core.items.Item`: image, objects named by
    ``pm.classes`` with masks) for a :class:`~.model.ProtoModel`."""
    images = [it.image for it in items]
    y = labels_for(items, pm.classes)
    parts = _parts(items, attrs)
    pf = pm.features(images)
    out = pm.run(pf.feats)
    res = {"n_images": len(items), "n_prototypes": pm.head.n_prototypes, "head": accuracy(out["logits"], y)}
    if pm.probe is not None:
        with torch.no_grad():
            res["probe"] = accuracy(pm.probe(pf.feats.mean((1, 2))), y)
    fires = pm.fires(out["sim"]).numpy()
    hits = _hits(items, pf, out, pm.head)
    # consistency
    cons, n_fire, cons_scale = [], [], []
    for j in range(pm.head.n_prototypes):
        idx = np.nonzero(fires[:, j])[0]
        n_fire.append(len(idx))
        if len(idx) < min_fires:
            continue
        cons_scale.append(int(pm.head.proto_scale[j]))
        kinds = [tuple(_key(items[i].objects[hits[i, j]], p) for p in parts) if hits[i, j] >= 0 else (None,) * len(parts) for i in idx]
        best = 0.0
        for part in range(len(parts)):
            vals = [k[part] for k in kinds if k[part] is not None]
            if vals:
                mode = max(set(vals), key=vals.count)
                best = max(best, sum(k[part] == mode for k in kinds) / len(kinds))
        cons.append(best)
    res["consistency"] = {"share_consistent": float(np.mean([c > consistent_at for c in cons])) if cons else 0.0,
                          "mean": float(np.mean(cons)) if cons else 0.0, "evaluated": len(cons),
                          "never_or_rarely_fire": int(sum(f < min_fires for f in n_fire)),
                          "share_consistent_by_scale": {str(sc): float(np.mean([c > consistent_at for c, s2 in zip(cons, cons_scale) if s2 == sc]))
                                                        for sc in sorted(set(cons_scale))}}
    res["prototypes_by_scale"] = {str(int(sc)): int((pm.head.proto_scale == sc).sum()) for sc in pm.head.scales}
    # stability under input noise
    pn = pm.features(images, noise=noise, seed=seed)
    out_n = pm.run(pn.feats)
    hits_n = _hits(items, pn, out_n, pm.head)
    per = [float((hits_n[fires[:, j], j] == hits[fires[:, j], j]).mean()) for j in range(pm.head.n_prototypes) if fires[:, j].any()]
    res["stability"] = {"mean": float(np.mean(per)) if per else 0.0, "noise_sigma": noise, "prototypes": len(per)}
    # localisation: pointing game on the claimed class's objects
    res["localisation"] = _localisation(pm, items, pf)
    return res


@torch.no_grad()
def _localisation(pm, items, pf) -> dict:
    from ..metrics.faithfulness import _dilate

    z = pm.head.embed(pf.feats)
    scores, chance = [], []
    per_proto, by_scale = {}, {}
    for j in range(pm.head.n_prototypes):
        cls = pm.classes[int(pm.head.proto_class[j])]
        pts = []
        for i, it in enumerate(items):
            objs = [o for o in it.objects if o.name == cls]
            if not objs:
                continue
            hm = heatmap(pooled_map(pm.head, z[i], j, from_feats=False).numpy(), pf.boxes[i], pf.sizes[i], int(pm.head.proto_scale[j]), pf.grid)
            mask = np.any([o.box_mask(it.size) for o in objs], axis=0)
            tol = 0.5 * (pf.boxes[i][2] - pf.boxes[i][0]) / pf.grid[1]
            pts.append(pointing_game(hm, mask, tolerance=tol))
            chance.append(float(_dilate(mask, tol).mean()))  # a random map's expected hit rate
        if pts:
            per_proto[j] = float(np.mean(pts))
            scores += pts
            by_scale.setdefault(str(int(pm.head.proto_scale[j])), []).extend(pts)
    return {"pointing_game": float(np.mean(scores)) if scores else 0.0,
            "per_prototype_mean": float(np.mean(list(per_proto.values()))) if per_proto else 0.0, "pairs": len(scores),
            "pointing_game_by_scale": {k: float(np.mean(v)) for k, v in sorted(by_scale.items())},
            "random_map_baseline": float(np.mean(chance)) if chance else 0.0}


__all__ = ["labels_for", "accuracy", "evaluate"]
