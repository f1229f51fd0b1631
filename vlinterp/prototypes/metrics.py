"""Prototype-model metrics on shapes-world ground truth.

* accuracy: mean label accuracy and exact-match (all 24 labels right) of the head, beside the
  linear probe on the same frozen features;
* consistency: a prototype is consistent when, over the held-out images where it fires, the object
  under its best cell has the same colour, or the same shape, in more than ``0.8`` of them;
* stability: share of (image, firing prototype) whose hit object is unchanged when N(0, sigma)
  noise is added to the model's pixel input;
* localisation: pointing game of each prototype's map on the objects of the class it claims, over
  the held-out images that contain that class.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.shapes import PAIRS, patch_coverage
from ..metrics.faithfulness import pointing_game
from .maps import heatmap, pooled_map


def labels_for(scenes) -> torch.Tensor:
    """Multi-hot ``[n, 24]`` over the shapes world's colour-shape ``PAIRS``."""
    idx = {p: k for k, p in enumerate(PAIRS)}
    y = torch.zeros(len(scenes), len(PAIRS))
    for i, s in enumerate(scenes):
        for o in s.objects:
            y[i, idx[(o.colour, o.shape)]] = 1
    return y


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


def _hits(scenes, pf, out: dict, head, min_cov: float = 0.15) -> np.ndarray:
    """``[n, P]`` object index under each prototype's best cell (-1 = background)."""
    n, P = out["sim"].shape
    hits = np.full((n, P), -1, np.int64)
    scales = head.proto_scale.tolist()
    for i, s in enumerate(scenes):
        cov = patch_coverage(s, pf.grid, pf.boxes[i])
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


def evaluate(pm, scenes, noise: float = 0.2, seed: int = 0, consistent_at: float = 0.8, min_fires: int = 5) -> dict:
    """All metrics on held-out shapes ``scenes`` for a :class:`~.model.ProtoModel`."""
    images = [s.pil() for s in scenes]
    y = labels_for(scenes)
    pf = pm.features(images)
    out = pm.run(pf.feats)
    res = {"n_images": len(scenes), "n_prototypes": pm.head.n_prototypes, "head": accuracy(out["logits"], y)}
    if pm.probe is not None:
        with torch.no_grad():
            res["probe"] = accuracy(pm.probe(pf.feats.mean((1, 2))), y)
    fires = pm.fires(out["sim"]).numpy()
    hits = _hits(scenes, pf, out, pm.head)
    # consistency
    cons, n_fire, cons_scale = [], [], []
    for j in range(pm.head.n_prototypes):
        idx = np.nonzero(fires[:, j])[0]
        n_fire.append(len(idx))
        if len(idx) < min_fires:
            continue
        cons_scale.append(int(pm.head.proto_scale[j]))
        kinds = [(scenes[i].objects[hits[i, j]].colour, scenes[i].objects[hits[i, j]].shape) if hits[i, j] >= 0 else (None, None) for i in idx]
        best = 0.0
        for part in (0, 1):
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
    hits_n = _hits(scenes, pn, out_n, pm.head)
    per = [float((hits_n[fires[:, j], j] == hits[fires[:, j], j]).mean()) for j in range(pm.head.n_prototypes) if fires[:, j].any()]
    res["stability"] = {"mean": float(np.mean(per)) if per else 0.0, "noise_sigma": noise, "prototypes": len(per)}
    # localisation: pointing game on the claimed class's objects
    res["localisation"] = _localisation(pm, scenes, pf)
    return res


@torch.no_grad()
def _localisation(pm, scenes, pf) -> dict:
    from ..metrics.faithfulness import _dilate

    z = pm.head.embed(pf.feats)
    scores, chance = [], []
    per_proto, by_scale = {}, {}
    for j in range(pm.head.n_prototypes):
        colour, shape = PAIRS[int(pm.head.proto_class[j])]
        pts = []
        for i, s in enumerate(scenes):
            objs = [o for o in s.objects if o.colour == colour and o.shape == shape]
            if not objs:
                continue
            hm = heatmap(pooled_map(pm.head, z[i], j, from_feats=False).numpy(), pf.boxes[i], pf.sizes[i], int(pm.head.proto_scale[j]), pf.grid)
            mask = np.any([o.mask for o in objs], axis=0)
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
