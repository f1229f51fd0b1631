"""`vlinterp prune bench|info`: visual token pruning compared (accuracy retention, latency, FLOPs).

    vlinterp prune bench --model shapes-llava --keep 0.1,0.25,0.5,0.75 --methods random,fastv,visionzip,info,hybrid [--n 128] [--seed 21] [--json PATH] [--plot PNG]
    vlinterp prune info --model shapes-llava [--n 12] [--plot PNG] [--json PATH]

``bench`` prints the table (retention per question kind, LM and total prefill latency ratios
measured side by side in this run, analytical FLOPs ratio) and writes the retention plot.
``info`` measures per-token information by removal per layer, the proxies' agreement with it
and the information horizon.
"""
from __future__ import annotations

import argparse

from ..cli import register


def _add(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="prune_cmd", required=True)
    b = sub.add_parser("bench", help="retention / latency / FLOPs of pruning methods at several keep ratios")
    b.add_argument("--model", default="shapes-llava")
    b.add_argument("--keep", default="0.1,0.25,0.5,0.75")
    b.add_argument("--methods", default="random,fastv,visionzip,info,hybrid",
                   help="comma-separated; options in brackets, e.g. visionzip[tower_layer=3] (select inside the vision tower)")
    b.add_argument("--n", type=int, default=128, help="held-out scenes (presence, colour and count items from each)")
    b.add_argument("--seed", type=int, default=21)
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--repeats", type=int, default=7)
    b.add_argument("--horizon", type=int, help="hybrid's horizon layer (default: from the information curve)")
    b.add_argument("--workers", type=int, default=1, help="Ray workers for the accuracy part (latency is timed here)")
    b.add_argument("--address", help="existing Ray cluster instead of a local one")
    b.add_argument("--json")
    b.add_argument("--plot", default="prune_retention.png")
    i = sub.add_parser("info", help="per-token information by layer, proxies and the horizon")
    i.add_argument("--model", default="shapes-llava")
    i.add_argument("--n", type=int, default=12)
    i.add_argument("--seed", type=int, default=101)
    i.add_argument("--json")
    i.add_argument("--plot", default="prune_information.png")


def _write_json(path, obj):
    from ..zoo.common import write_json_atomic

    write_json_atomic(path, obj)


def _run(args) -> int:
    import vlinterp as vi
    from ..core.errors import PromptError

    m = vi.load(args.model)
    if args.prune_cmd == "bench":
        from ..pruning import REGISTRY, make_pruner
        from ..pruning.bench import run_bench, table
        from ..viz.prune_plot import plot_retention

        make_pruner("random:1")  # fills the registry
        import re

        # commas inside [...] separate a method's options: visionzip[tower_layer=3,contextual=0.2]
        methods = [x.strip() for x in re.split(r",(?![^\[]*\])", args.methods) if x.strip()]
        bad = [x for x in methods if x.split("[")[0] not in REGISTRY]
        if bad:
            raise PromptError(f"unknown pruning method(s) {bad}; choose from {sorted(REGISTRY)}")
        keeps = [float(x) for x in args.keep.split(",") if x.strip()]
        from ..scale import WorkerPool

        with WorkerPool(args.model, args.workers, args.address) as pool:
            res = run_bench(m, keeps, methods, n=args.n, seed=args.seed, batch_size=args.batch, repeats=args.repeats, horizon=args.horizon,
                            pool=pool if args.workers > 1 else None)
        res["workers"] = args.workers
        print(table(res))
        if args.plot:
            print(f"plot: {plot_retention(res, args.plot)}")
        if args.json:
            _write_json(args.json, res)
        return 0
    from ..pruning.information import probe_items, summarise, token_information
    from ..viz.prune_plot import plot_information

    s = summarise(token_information(m, probe_items(args.n, args.seed)))
    print(f"information by layer: {', '.join(f'{v:.2e}' for v in s['curve'])}; horizon layer {s['horizon']} (first below {s['frac']:g} x peak)")
    for k, v in s["spearman"].items():
        print(f"  proxy {k:<15} Spearman by layer: {', '.join('-' if x != x else f'{x:.2f}' for x in v)}")
    if args.plot:
        print(f"plot: {plot_information(s, args.plot, args.model)}")
    if args.json:
        _write_json(args.json, s)
    return 0


register("prune", "visual token pruning: benchmark methods, information curve", _add, _run)
