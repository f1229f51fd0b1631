"""Does causal tracing localise the object? The FCCT localisation check on the shapes world, and the
per-layer recovery-rate curves at the last token that the README plots.

Localisation: for held-out scenes with a presence question about a present object (answer
``yes``), restore the clean residual state at the object's image patches (ground truth: patches
the object covers by at least ``min_cover``) and, as the control, at as many image patches that do
not touch the object (seeded random choice), layer by layer; report the mean RR per layer of both
and the best layer. A map that localises recovers much more from the object's patches than from
the control's.

    python -m vlinterp.eval.trace_curves [--model shapes-llava] [--n 48] [--png assets/tracing_rr_curves.png]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm.auto import tqdm

from ..core.threads import restores_threads
from ..metrics.coverage import item_coverage
from ..tracing import trace
from . import shapes


def object_patches(layout, item, obj_index: int, min_cover: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, coverage)``: boolean ``[n_patches]`` (base tile, ``image_positions`` order) of the
    patches that object ``obj_index`` of ``item`` covers by at least ``min_cover`` (at least the
    best-covered one), and the coverage ``[n_patches]``."""
    g = layout.images[0]
    t = g.tiles[0]
    H, W = item.size
    sx, sy = W / g.size[0], H / g.size[1]
    x0, y0, x1, y1 = t.box
    cov = item_coverage(item, t.grid, (x0 * sx, y0 * sy, x1 * sx, y1 * sy))[obj_index].reshape(-1)
    m = cov >= min_cover
    if not m.any():
        m[int(cov.argmax())] = True
    return m, cov


def _some_traced(n_traced: int, n_items: int) -> None:
    if n_traced == 0:
        from ..core.errors import DataError

        raise DataError(f"the model answered none of the {n_items} presence questions 'yes' (right), so there was "
                         "nothing to trace; is it a trained model?")


def _answers_yes(adapter, b) -> bool:
    last = int(b.layout.span("last", 0)[0])
    lg = adapter.run(b).logits[0, last]
    return bool(lg[adapter.token_id("yes")] > lg[adapter.token_id("no")])


def localisation(adapter, n: int = 32, split: str = "test", seed: int = 11, samples: int = 3, min_cover: float = 0.25,
                 progress: bool = False) -> dict:
    """RR per layer of restoring the residual state at the object's patches vs an equal number
    of non-object patches, over the ``n`` positive presence questions of ``split``/``seed`` that
    the model answers right (``yes``). RR of the means (ROME): ``(mean P_patch - mean P_corr) /
    (mean P_clean - mean P_corr)``, stable where single scenes have a tiny total effect.

    Returns ``{"object": [L], "control": [L], "best_layer", "object_best", "control_at_best",
    "control_max", "n", "skipped_wrong", "p_clean", "p_corrupt", "per_scene": {"object": [n, L]
    P_patch, "control": [n, L], "p_clean": [n], "p_corrupt": [n]}}``."""
    items = shapes.present_objects(split, n, seed)
    rng = np.random.default_rng(seed)
    rows = {"object": [], "control": [], "p_clean": [], "p_corrupt": []}
    skipped = 0
    for it in tqdm(items, desc="localisation (object vs control patches)", disable=not progress):
        b = adapter.prepare(images=[it.image], text=[it.prompt])
        if not _answers_yes(adapter, b):  # traced only where the model answers right
            skipped += 1
            continue
        lay = b.layout
        pos = lay.image_positions(0).numpy()
        m, cov = object_patches(lay, it, it.meta["obj_index"], min_cover)
        n_base = len(m)
        obj = pos[:n_base][m]
        free = np.nonzero(cov == 0)[0]
        if len(free) < len(obj):  # the object covers most of the image: fewest-covered patches
            free = np.argsort(cov)[: len(obj)]
        ctl = pos[:n_base][rng.choice(free, size=len(obj), replace=False)]
        r = trace(adapter, b, "yes", components="resid", positions={"object": obj.tolist(), "control": ctl.tolist()},
                  samples=samples, seed=int(it.meta["scene"].index))
        rows["object"].append(r.arrays["p_patch"][0, :, 0])
        rows["control"].append(r.arrays["p_patch"][0, :, 1])
        rows["p_clean"].append(float(r.arrays["p_clean"][0]))
        rows["p_corrupt"].append(float(np.mean(r.arrays["p_corrupt"])))
    _some_traced(len(rows["p_clean"]), len(items))
    pc, pk = np.mean(rows["p_clean"]), np.mean(rows["p_corrupt"])
    rr = {k: (np.mean(rows[k], 0) - pk) / (pc - pk) for k in ("object", "control")}
    o, c = rr["object"], rr["control"]
    best = int(o.argmax())
    return {"object": o.tolist(), "control": c.tolist(), "best_layer": best, "object_best": float(o[best]),
            "control_at_best": float(c[best]), "control_max": float(c.max()), "n": len(rows["p_clean"]),
            "skipped_wrong": skipped, "p_clean": float(pc), "p_corrupt": float(pk),
            "per_scene": {k: np.asarray(v).tolist() for k, v in rows.items()}}


def last_token_curves(adapter, n: int = 48, split: str = "test", seed: int = 11, samples: int = 3,
                      components=("attn", "mlp", "resid"), progress: bool = False) -> dict:
    """RR of the means per layer ``{component: [L]}`` for restoring each component at the last
    token, over the positive presence questions of ``n`` scenes that the model answers right."""
    pp, pc, pk = [], [], []
    for it in tqdm(shapes.present_objects(split, n, seed), desc="last-token curves", disable=not progress):
        b = adapter.prepare(images=[it.image], text=[it.prompt])
        if not _answers_yes(adapter, b):
            continue
        last = b.layout.span("last", 0).tolist()
        r = trace(adapter, b, "yes", components=components, positions={"last": last}, samples=samples,
                  seed=int(it.meta["scene"].index))
        pp.append(r.arrays["p_patch"][:, :, 0])
        pc.append(float(r.arrays["p_clean"][0]))
        pk.append(float(np.mean(r.arrays["p_corrupt"])))
    _some_traced(len(pc), n)
    rr = (np.mean(pp, 0) - np.mean(pk)) / (np.mean(pc) - np.mean(pk))
    return {"curves": {c: rr[i].tolist() for i, c in enumerate(components)}, "n": len(pc),
            "p_clean": float(np.mean(pc)), "p_corrupt": float(np.mean(pk))}


@restores_threads
def main(argv=None) -> None:
    import torch

    from .. import load
    from ..core.io import write_json
    from ..viz.trace_plot import plot_rr_curves

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-llava", help="a LLaVA-family model (zoo name or path)")
    ap.add_argument("--n", type=int, default=48, help="held-out scenes")
    ap.add_argument("--seed", type=int, default=11, help="seed of the held-out scenes")
    ap.add_argument("--png", default="assets/tracing_rr_curves.png", help="the curves' picture")
    ap.add_argument("--json", default="assets/tracing_rr_curves.json", help="the curves as JSON")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    m = load(a.model)
    cur = last_token_curves(m, a.n, seed=a.seed, progress=True)
    loc = localisation(m, a.n, seed=a.seed, progress=True)
    curves = {{"attn": "attention output @ last", "mlp": "MLP output @ last", "resid": "residual @ last"}[k]: v
              for k, v in cur["curves"].items()}
    curves["residual @ object patches"] = loc["object"]
    curves["residual @ equal non-object patches"] = loc["control"]
    plot_rr_curves(curves, a.png, title=f"{m.name}: causal tracing, {cur['n']} held-out scenes (image noise 3σ)")
    out = {"model": m.name, "seed": a.seed, "last_token": cur, "localisation": {k: v for k, v in loc.items() if k != "per_scene"}}
    write_json(a.json, out, flag="--json")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()


__all__ = ["localisation", "last_token_curves", "object_patches"]
