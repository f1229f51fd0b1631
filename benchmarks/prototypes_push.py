"""Prototype push: the discriminative push (the default) against ProtoPNet's nearest-window push,
side by side in one run on the same warmed-up head and cached features: push time as a ratio,
and the pointing game and consistency each gives on held-out scenes.

    python benchmarks/prototypes_push.py [--model shapes-vit] [--n 2000] [--eval-n 300] [--eval-seed 81]

Both pushes start from a copy of one warm-up; each is followed by the same sparse last layer,
pruning and refit that ``fit`` runs.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

import vlinterp as vi
from vlinterp.data.shapes import PAIRS, make_split
from vlinterp.prototypes.features import patch_features
from vlinterp.prototypes.fit import default_site
from vlinterp.prototypes.head import ProtoHead
from vlinterp.prototypes.metrics import evaluate, labels_for
from vlinterp.prototypes.model import ProtoModel
from vlinterp.prototypes.push import push
from vlinterp.prototypes.push_discriminative import discriminative_push
from vlinterp.prototypes.train import last_layer, linear_probe, prune_unused, warm


def finish(m, site, head, rec, pf, y, images, probe):
    """Last layer, pruning, refit and thresholds, as in :func:`vlinterp.prototypes.fit.fit`."""
    last_layer(head, pf.feats, y, seed=1, progress=False)
    n0 = head.n_prototypes
    kept = torch.as_tensor(prune_unused(head, 0.05))
    rec = {k: (v[kept] if torch.is_tensor(v) and len(v) == n0 else v) for k, v in rec.items()}
    if head.n_prototypes < n0:
        last_layer(head, pf.feats, y, seed=2, progress=False)
    pm = ProtoModel(m, site, head, [f"{c} {s}" for c, s in PAIRS], probe=probe)
    sim = pm.run(pf.feats)["sim"]
    pm.thresholds = torch.stack([torch.quantile(sim[y[:, head.proto_class[j]].bool(), j], 0.1) for j in range(head.n_prototypes)])
    pm.record_sources(rec, images, pf)
    return pm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-vit")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--eval-n", type=int, default=300)
    ap.add_argument("--eval-seed", type=int, default=81)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = vi.load(a.model)
    site = default_site(m)
    scenes = make_split("train", a.n, 0)
    images = [s.pil() for s in scenes]
    y = labels_for(scenes)
    pf = patch_features(m, images, site)
    torch.manual_seed(0)
    head = ProtoHead(pf.feats.shape[-1], y.shape[1], 1, (1, 2), 64, seed=0)
    warm(head, pf.feats, y, progress=False)
    probe = linear_probe(pf.feats, y, progress=False)
    pushes = {"nearest": lambda h: push(h, pf.feats, y), "discriminative": lambda h: discriminative_push(h, pf.feats, y, progress=False)}
    times = {k: [] for k in pushes}
    recs, heads = {}, {}
    for _ in range(a.repeats):  # interleaved
        for k, fn in pushes.items():
            h = copy.deepcopy(head)
            t0 = time.perf_counter()
            recs[k] = fn(h)
            times[k].append(time.perf_counter() - t0)
            heads[k] = h
    test = make_split("test", a.eval_n, a.eval_seed)
    print(f"{a.model} at {site}, {a.n} training scenes; eval {a.eval_n} scenes of seed {a.eval_seed}")
    t_near = min(times["nearest"])
    for k in pushes:
        pm = finish(m, site, heads[k], recs[k], pf, y, images, probe)
        r = evaluate(pm, test)
        loc = r["localisation"]
        print(f"{k:15s} push {min(times[k]):6.2f} s ({min(times[k]) / t_near:5.1f}x nearest)  pointing {loc['pointing_game']:.3f} "
              f"(by scale {', '.join(f'{s}: {v:.2f}' for s, v in loc['pointing_game_by_scale'].items())})  "
              f"consistent {r['consistency']['share_consistent']:.2f}  accuracy {r['head']['mean_label_accuracy']:.3f} "
              f"(probe {r['probe']['mean_label_accuracy']:.3f})")


if __name__ == "__main__":
    main()
