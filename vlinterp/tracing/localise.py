"""Does causal tracing localise the object? The FCCT localisation check on the shapes world.

For held-out scenes with a presence question about a present object (answer ``yes``), restore
the clean residual state at the object's image patches (ground truth: patches the object covers
by at least ``min_cover``) and, as the control, at as many image patches that do not touch the
object (seeded random choice), layer by layer; report the mean RR per layer of both and the
best layer. A map that localises recovers much more from the object's patches than from the
control's.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..data.questions import positive_presence
from ..data.shapes import patch_coverage
from .trace import trace


def object_patches(layout, scene, obj_index: int, min_cover: float = 0.25) -> np.ndarray:
    """Boolean ``[n_patches]`` (base tile, ``image_positions`` order): patches covered by object
    ``obj_index`` of ``scene`` by at least ``min_cover`` (at least the best-covered one)."""
    g = layout.images[0]
    t = g.tiles[0]
    sx, sy = scene.image.shape[1] / g.size[0], scene.image.shape[0] / g.size[1]
    x0, y0, x1, y1 = t.box
    cov = patch_coverage(scene, t.grid, (x0 * sx, y0 * sy, x1 * sx, y1 * sy))[obj_index].reshape(-1)
    m = cov >= min_cover
    if not m.any():
        m[int(cov.argmax())] = True
    return m, cov


def localisation(adapter, n: int = 32, split: str = "test", seed: int = 11, samples: int = 3, min_cover: float = 0.25,
                 progress: bool = False) -> dict:
    """RR per layer of restoring the residual state at the object's patches vs an equal number
    of non-object patches, over the ``n`` positive presence questions of ``split``/``seed`` that
    the model answers right (``yes``). RR of the means (ROME): ``(mean P_patch - mean P_corr) /
    (mean P_clean - mean P_corr)``, stable where single scenes have a tiny total effect.

    Returns ``{"object": [L], "control": [L], "best_layer", "object_best", "control_at_best",
    "control_max", "n", "skipped_wrong", "p_clean", "p_corrupt", "per_scene": {"object": [n, L]
    P_patch, "control": [n, L], "p_clean": [n], "p_corrupt": [n]}}``."""
    items = positive_presence(split, n, seed)
    rng = np.random.default_rng(seed)
    rows = {"object": [], "control": [], "p_clean": [], "p_corrupt": []}
    skipped = 0
    for s, qa in tqdm(items, desc="localisation", disable=not progress):
        b = adapter.prepare(images=[s.pil()], text=[qa.question])
        last = int(b.layout.span("last", 0)[0])
        lg = adapter.run(b).logits[0, last]
        if lg[adapter.token_id("yes")] <= lg[adapter.token_id("no")]:  # traced only where the model answers right
            skipped += 1
            continue
        lay = b.layout
        pos = lay.image_positions(0).numpy()
        m, cov = object_patches(lay, s, qa.obj_index, min_cover)
        n_base = len(m)
        obj = pos[:n_base][m]
        free = np.nonzero(cov == 0)[0]
        if len(free) < len(obj):  # the object covers most of the image: fewest-covered patches
            free = np.argsort(cov)[: len(obj)]
        ctl = pos[:n_base][rng.choice(free, size=len(obj), replace=False)]
        r = trace(adapter, b, "yes", components="resid", positions={"object": obj.tolist(), "control": ctl.tolist()},
                  samples=samples, seed=int(s.index))
        rows["object"].append(r.arrays["p_patch"][0, :, 0])
        rows["control"].append(r.arrays["p_patch"][0, :, 1])
        rows["p_clean"].append(float(r.arrays["p_clean"][0]))
        rows["p_corrupt"].append(float(np.mean(r.arrays["p_corrupt"])))
    pc, pk = np.mean(rows["p_clean"]), np.mean(rows["p_corrupt"])
    rr = {k: (np.mean(rows[k], 0) - pk) / (pc - pk) for k in ("object", "control")}
    o, c = rr["object"], rr["control"]
    best = int(o.argmax())
    return {"object": o.tolist(), "control": c.tolist(), "best_layer": best, "object_best": float(o[best]),
            "control_at_best": float(c[best]), "control_max": float(c.max()), "n": len(rows["p_clean"]),
            "skipped_wrong": skipped, "p_clean": float(pc), "p_corrupt": float(pk),
            "per_scene": {k: np.asarray(v).tolist() for k, v in rows.items()}}


__all__ = ["localisation", "object_patches"]
