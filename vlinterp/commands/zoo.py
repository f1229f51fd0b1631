"""`vlinterp zoo list|eval|train`: the shipped organisms, their floors and how to rebuild them."""
from __future__ import annotations

import argparse
import json

from ..cli import register


def _add(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="zoo_cmd", required=True)
    sub.add_parser("list", help="organisms, their classes and whether their weights ship")
    e = sub.add_parser("eval", help="measure an organism's floors on fresh held-out scenes")
    e.add_argument("name")
    e.add_argument("--split", default="test")
    e.add_argument("--n", type=int, default=256)
    e.add_argument("--seed", type=int, default=1)
    e.add_argument("--json", dest="json_path")
    t = sub.add_parser("train", help="train an organism from scratch (reproduces the shipped weights from the seed)")
    t.add_argument("name")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--minutes", type=float, default=None)
    t.add_argument("--steps", type=int, default=None)


def _run(args) -> int:
    from .. import zoo
    from ..zoo.common import check_floor, write_json_atomic

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
        m = zoo.load_organism(args.name)
        metrics = rec.evaluate(m, split=args.split, n=args.n, seed=args.seed, progress=True)
        res = {"name": args.name, "split": args.split, "n": args.n, "seed": args.seed, "metrics": metrics,
               "floors": {k: {"op": op, "value": v, "met": check_floor(metrics.get(k), op, v)} for k, (op, v) in rec.FLOORS.items()}}
        for k, v in metrics.items():
            f = rec.FLOORS.get(k)
            tag = "" if f is None else f"  (floor {f[0]} {f[1]}: {'met' if check_floor(v, *f) else 'NOT MET'})"
            print(f"{k:<32} {v:8.4f}{tag}")
        if args.json_path:
            write_json_atomic(args.json_path, res)
        return 0 if all(x["met"] for x in res["floors"].values()) else 1
    card = rec.train(args.out, seed=args.seed, minutes=args.minutes, steps=args.steps, progress=True)
    print(json.dumps({k: card[k] for k in ("name", "train_seconds", "metrics", "floors_met") if k in card}, indent=2))
    return 0


register("zoo", "the model zoo: list, eval, train organisms", _add, _run)
