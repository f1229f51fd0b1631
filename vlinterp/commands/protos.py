"""`vlinterp protos train|explain|eval`: prototype heads ("this looks like that") over a frozen backbone.

    vlinterp protos train --model shapes-vit [--site vision.blocks.2.resid] [--n 2000] [--scales 1,2] [--push discriminative|nearest] --out DIR
    vlinterp protos explain IMAGE --protos DIR [--model shapes-vit] --out DIR2
    vlinterp protos eval --protos DIR [--model shapes-vit] [--n 300] [--seed 71] [--json PATH]

``train`` fits on shapes-world scenes (24 colour-shape classes, multi-label), pushes every
prototype onto a training patch and trains the linear-probe baseline beside it. ``explain`` writes
``explanation.png`` and ``explanation.json``. ``eval`` measures accuracy (head vs probe),
consistency, stability under input noise and localisation on fresh held-out scenes.
"""
from __future__ import annotations

import argparse
import json
import os

from ..cli import register


def _add(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="protos_cmd", required=True)
    t = sub.add_parser("train", help="train a prototype head on a frozen backbone's patch tokens")
    t.add_argument("--model", default="shapes-vit")
    t.add_argument("--site", help="patch-token site (default: a middle block of the image stream)")
    t.add_argument("--n", type=int, default=2000, help="training scenes")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--per-class", type=int, default=1)
    t.add_argument("--scales", default="1,2", help="pooled grid scales, e.g. 1,2")
    t.add_argument("--warm-steps", type=int, default=1500)
    t.add_argument("--last-steps", type=int, default=600)
    t.add_argument("--min-weight", type=float, default=0.05,
                   help="prune prototypes whose own-class last-layer weight is at most this (negative: keep all)")
    t.add_argument("--push", choices=["discriminative", "nearest"], default="discriminative",
                   help="push each prototype onto its class's most label-separating training window (default) or the nearest one (ProtoPNet)")
    t.add_argument("--out", required=True)
    e = sub.add_parser("explain", help="'this looks like that' figure for one image")
    e.add_argument("image")
    e.add_argument("--protos", required=True)
    e.add_argument("--model")
    e.add_argument("--out", required=True)
    v = sub.add_parser("eval", help="accuracy vs linear probe, consistency, stability, localisation")
    v.add_argument("--protos", required=True)
    v.add_argument("--model")
    v.add_argument("--n", type=int, default=300)
    v.add_argument("--seed", type=int, default=71)
    v.add_argument("--noise", type=float, default=0.2)
    v.add_argument("--json")


def _model_for(args):
    import vlinterp as vi

    name = args.model
    if name is None:
        with open(os.path.join(args.protos, "prototypes.json")) as f:
            name = json.load(f)["model"]
    return vi.load(name)


def _run(args) -> int:
    from ..prototypes import ProtoModel
    from ..zoo.common import write_json_atomic

    if args.protos_cmd == "train":
        import vlinterp as vi
        from ..prototypes import fit_shapes

        m = vi.load(args.model)
        scales = tuple(int(s) for s in args.scales.split(","))
        pm = fit_shapes(m, site=args.site, n=args.n, seed=args.seed, per_class=args.per_class, scales=scales,
                        warm_steps=args.warm_steps, last_steps=args.last_steps, min_weight=None if args.min_weight < 0 else args.min_weight, push_mode=args.push)
        pm.save(args.out)
        per_scale = {int(s): int((pm.head.proto_scale == s).sum()) for s in pm.head.scales}
        print(f"{pm.head.n_prototypes} prototypes kept of {pm.info['prototypes_trained']} (per scale {per_scale}) "
              f"at {pm.site} of {m.name} ({pm.info['train_seconds']} s) -> {args.out}")
        return 0
    pm = ProtoModel.load(args.protos, _model_for(args))
    if args.protos_cmd == "explain":
        from ..prototypes.explain import explanation, figure

        os.makedirs(args.out, exist_ok=True)
        png = figure(pm, args.image, os.path.join(args.out, "explanation.png"))
        from ..core.images import load_image

        ex = explanation(pm, load_image(args.image))
        rows = [{k: v for k, v in r.items() if k not in ("map", "source")} for r in ex["rows"]]
        write_json_atomic(os.path.join(args.out, "explanation.json"), {"rows": rows, "probs": dict(zip(pm.classes, ex["probs"]))})
        for r in rows:
            print(f"{r['class']:16s} p={r['prob']:.2f}  prototype {r['prototype']:3d} ({r['prototype_class']}, scale {r['scale']}) "
                  f"sim {r['similarity']:.2f} contribution {r['contribution']:.2f}")
        print(f"figure: {png}")
        return 0
    from ..data.shapes import make_split
    from ..prototypes.metrics import evaluate

    res = evaluate(pm, make_split("test", args.n, args.seed), noise=args.noise)
    res.update(model=pm.adapter.name, site=pm.site, seed=args.seed)
    print(json.dumps(res, indent=2))
    if args.json:
        write_json_atomic(args.json, res)
    return 0


register("protos", "prototype maps: train, explain, evaluate", _add, _run)
