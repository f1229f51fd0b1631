"""`vlinterp zoo list|eval|train`: the shipped organisms, their floors and how to rebuild them."""
from __future__ import annotations

import argparse
import json

from ..cli import register
from . import args as A


def _organism(text: str) -> str:
    from .. import zoo

    if not zoo.is_organism(text):
        from ..core.errors import UnknownNameError

        raise UnknownNameError("organism", text, zoo.names())
    return text


def _add(p: argparse.ArgumentParser):
    organism = A._type(_organism, "organism")
    sub = p.add_subparsers(dest="zoo_cmd", required=True, metavar="{list,eval,train}", title="sub-commands")
    sub.add_parser("list", help="organisms, their classes and whether their weights ship",
                   description="organisms, their classes and whether their weights ship")
    e = sub.add_parser("eval", help="measure an organism's floors on fresh held-out scenes",
                       description="measure an organism's floors on fresh held-out scenes")
    e.add_argument("name", type=organism, metavar="NAME", help="a zoo organism (`vlinterp zoo list`)")
    e.add_argument("--split", default="test", metavar="SPLIT", help="shapes split the held-out scenes come from")
    A.add_n_seed(e, 256, 1, "held-out scenes")
    A.add_load_options(e)
    A.add_json(e, "also write the metrics and floors as JSON to this file")
    t = sub.add_parser("train", help="train an organism from scratch (reproduces the shipped weights from the seed)",
                       description="train an organism from scratch (reproduces the shipped weights from the seed)")
    t.add_argument("name", type=organism, metavar="NAME", help="a zoo organism (`vlinterp zoo list`)")
    A.add_out(t, "directory for the trained weights and card.json (new, empty, or an earlier vlinterp output)")
    t.add_argument("--seed", type=A.integer, default=0, help="training seed")
    t.add_argument("--minutes", type=A.positive_float, default=None, help="wall-clock budget (default: the recipe's steps)")
    t.add_argument("--steps", type=A.positive_int, default=None, help="training steps (default: the recipe's)")


def _run(args) -> int:
    from .. import zoo
    from ..core.io import write_json
    from ..zoo.common import check_floor

    if args.zoo_cmd == "list":
        for n in zoo.names():
            if zoo.available(n):
                c = zoo.card(n)
                ok = all(c.get("floors_met", {}).values())
                print(f"{n:<21} shipped   trained {c['train_seconds'] / 60:5.1f} min, seed {c['seed']}, floors {'met' if ok else 'NOT all met'}")
            else:
                print(f"{n:<21} not shipped (train with: vlinterp zoo train {n} --out DIR)")
        return 0
    rec = zoo.recipe(args.name)
    if args.zoo_cmd == "eval":
        m = zoo.load_organism(args.name, **A.load_kwargs(args))
        metrics = rec.evaluate(m, split=args.split, n=args.n, seed=args.seed, progress=True)
        res = {"name": args.name, "split": args.split, "n": args.n, "seed": args.seed, "metrics": metrics,
               "floors": {k: {"op": op, "value": v, "met": check_floor(metrics.get(k), op, v)} for k, (op, v) in rec.FLOORS.items()}}
        for k, v in metrics.items():
            f = rec.FLOORS.get(k)
            tag = "" if f is None else f"  (floor {f[0]} {f[1]}: {'met' if check_floor(v, *f) else 'NOT MET'})"
            print(f"{k:<32} {v:8.4f}{tag}")
        if args.json:
            write_json(args.json, res, flag="--json")
        return 0 if all(x["met"] for x in res["floors"].values()) else 1
    card = rec.train(args.out, seed=args.seed, minutes=args.minutes, steps=args.steps, progress=True)
    print(json.dumps({k: card[k] for k in ("name", "train_seconds", "metrics", "floors_met") if k in card}, indent=2))
    return 0


register("zoo", "the model zoo: list, eval, train organisms", _add, _run)
