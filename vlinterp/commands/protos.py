"""`vlinterp protos train|explain|eval`: prototype heads ("this looks like that") over a frozen backbone.

    vlinterp protos train --model shapes-vit [--site vision.blocks.2.resid] [--dataset SPEC] [--n 2000] [--scales 1,2] [--push discriminative|nearest] --out DIR
    vlinterp protos explain IMAGE --protos DIR [--model shapes-vit] --out DIR2
    vlinterp protos eval --protos DIR [--model shapes-vit] [--dataset SPEC] [--n 300] [--seed 71] [--json PATH]

``train`` fits on a dataset's images (default: shapes-world ``train`` scenes, 24 colour-shape
classes, multi-label; COCO: the categories of each image's objects; ``folder:DIR``: one class per
sub-folder), pushes every prototype onto a training patch and trains the linear-probe baseline
beside it. ``explain`` writes
``explanation.png`` and ``explanation.json``. ``eval`` measures accuracy (head vs probe),
consistency, stability under input noise and localisation on fresh held-out scenes. Output
directories are new, empty, or an earlier vlinterp output (files you put there are kept).
"""
from __future__ import annotations

import argparse
import json
import os

from ..cli import register
from . import args as A
from .dataset_args import add_dataset
from ..core.errors import UsageError


def _protos_dir(text: str) -> str:
    A._dir(text)
    if not os.path.isfile(os.path.join(text, "prototypes.json")):
        raise UsageError(f"{text!r} holds no prototypes.json (train one with `vlinterp protos train --out DIR`)")
    return text


def _push(text: str) -> str:
    from ..prototypes.push import PUSHES

    name, opts = PUSHES.parse(text)
    PUSHES.config(name, **opts)
    return str(text)


def _scales(text: str) -> tuple[int, ...]:
    out = A._ints(text)
    if any(s < 1 for s in out):
        raise UsageError(f"scales are grid sizes >= 1, got {text!r}")
    return tuple(out)


protos_dir = A._type(_protos_dir, "prototypes directory")


def _add(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="protos_cmd", required=True, metavar="{train,explain,eval}", title="sub-commands")
    t = sub.add_parser("train", help="train a prototype head on a frozen backbone's patch tokens",
                       description="train a prototype head on a frozen backbone's patch tokens")
    A.add_model(t, "shapes-vit")
    A.add_load_options(t)
    t.add_argument("--site", metavar="SITE", help="patch-token site (default: a middle block of the image stream)")
    add_dataset(t, "shapes:train", 2000, 0, "training images with class labels (object names or folders)")
    t.add_argument("--per-class", type=A.positive_int, default=1, help="prototypes per class and scale")
    t.add_argument("--scales", type=A._type(_scales, "scale list"), default=(1, 2), metavar="LIST", help="pooled grid scales, e.g. 1,2")
    t.add_argument("--warm-steps", type=A.positive_int, default=1500, help="warm-up steps (add-on layers and prototypes)")
    t.add_argument("--last-steps", type=A.positive_int, default=600, help="last-layer steps")
    t.add_argument("--min-weight", type=A.number, default=0.05,
                   help="prune prototypes whose own-class last-layer weight is at most this (negative: keep all)")
    t.add_argument("--push", type=A._type(_push, "push method"), default="discriminative", metavar="METHOD",
                   help="discriminative: onto its class's most label-separating training window; nearest: the nearest one (ProtoPNet)")
    A.add_out(t, "directory for prototypes.safetensors + prototypes.json")
    e = sub.add_parser("explain", help="'this looks like that' figure for one image", description="'this looks like that' figure for one image")
    e.add_argument("image", type=A.image_file, metavar="IMAGE", help="image file")
    e.add_argument("--protos", required=True, type=protos_dir, metavar="DIR", help="a trained prototype directory")
    e.add_argument("--model", metavar="M", help="backbone (default: the one the prototypes were trained on)")
    A.add_load_options(e)
    A.add_out(e, "directory for explanation.png + explanation.json")
    v = sub.add_parser("eval", help="accuracy vs linear probe, consistency, stability, localisation",
                       description="accuracy vs linear probe, consistency, stability, localisation")
    v.add_argument("--protos", required=True, type=protos_dir, metavar="DIR", help="a trained prototype directory")
    v.add_argument("--model", metavar="M", help="backbone (default: the one the prototypes were trained on)")
    A.add_load_options(v)
    add_dataset(v, "shapes:test", 300, 71, "held-out images, objects named by the prototypes' classes")
    v.add_argument("--noise", type=A.nonneg_float, default=0.2, help="std of the pixel noise of the stability test")
    A.add_json(v)


def _model_for(args):
    import vlinterp as vi

    name = args.model
    if name is None:
        with open(os.path.join(args.protos, "prototypes.json")) as f:
            name = json.load(f)["model"]
    return vi.load(name, **A.load_kwargs(args))


def _run(args) -> int:
    from ..core.io import output_dir, write_json
    from ..prototypes import ProtoModel

    from .dataset_args import read

    if args.protos_cmd == "train":
        import vlinterp as vi
        from ..eval.protos import WANTED, classes_for, fit_items

        items, info = read(args, WANTED, 2000, 0)  # read (and checked) before the model loads
        classes = classes_for(items)
        m = vi.load(args.model, **A.load_kwargs(args))
        pm = fit_items(m, items, classes, site=args.site, seed=info["seed"] or 0, data=info["resolved"], per_class=args.per_class,
                       scales=args.scales, warm_steps=args.warm_steps, last_steps=args.last_steps,
                       min_weight=None if args.min_weight < 0 else args.min_weight, push_mode=args.push)
        pm.save(args.out)
        per_scale = {int(s): int((pm.head.proto_scale == s).sum()) for s in pm.head.scales}
        print(f"{pm.head.n_prototypes} prototypes kept of {pm.info['prototypes_trained']} (per scale {per_scale}) "
              f"at {pm.site} of {m.name} ({pm.info['train_seconds']} s) -> {args.out}")
        return 0
    items = info = None
    if args.protos_cmd == "eval":
        from ..eval.protos import WANTED

        items, info = read(args, WANTED, 300, 71)  # read (and checked) before the model loads
    pm = ProtoModel.load(args.protos, _model_for(args))
    if args.protos_cmd == "explain":
        from ..core.images import load_image
        from ..prototypes.explain import explanation
        from ..viz.proto_plot import figure_bytes

        img = load_image(args.image, name="IMAGE")
        ex = explanation(pm, img)
        rows = [{k: v for k, v in r.items() if k not in ("map", "source")} for r in ex["rows"]]
        with output_dir(args.out) as tmp:
            from ..core.io import write_bytes

            write_bytes(os.path.join(tmp, "explanation.png"), figure_bytes(img, ex))
            write_json(os.path.join(tmp, "explanation.json"), {"rows": rows, "probs": dict(zip(pm.classes, ex["probs"]))})
        for r in rows:
            print(f"{r['class']:16s} p={r['prob']:.2f}  prototype {r['prototype']:3d} ({r['prototype_class']}, scale {r['scale']}) "
                  f"sim {r['similarity']:.2f} contribution {r['contribution']:.2f}")
        print(f"figure: {os.path.join(args.out, 'explanation.png')}")
        return 0
    from ..eval.protos import evaluate_items

    res = evaluate_items(pm, items, noise=args.noise)
    res.update(model=pm.adapter.name, site=pm.site, seed=info["seed"], dataset=info["dataset"], kinds=info["kinds"])
    print(json.dumps(res, indent=2))
    if args.json:
        write_json(args.json, res, flag="--json")
    return 0


register("protos", "prototype maps: train, explain, evaluate", _add, _run)
