"""`vlinterp prune bench|info`: visual token pruning compared (accuracy retention, latency, FLOPs).

    vlinterp prune bench --model shapes-llava --keep 0.1,0.25,0.5,0.75 --methods random,fastv,visionzip,info,hybrid [--dataset SPEC] [--n 128] [--seed 21] [--json PATH] [--plot PNG | --out DIR]
    vlinterp prune info --model shapes-llava [--dataset SPEC] [--n 12] [--seed 101] [--json PATH] [--plot PNG | --out DIR]

``--dataset`` (:mod:`vlinterp.eval.datasets`): ``bench`` reads POPE-adversarial and colour / count
questions of a shapes split (``shapes``: held-out ``test`` scenes), the questions of a POPE / JSON-lines
/ HF dataset (answers among ``candidates``; yes/no by default), or COCO scenes asked presence
questions; ``info`` reads any prompts (``shapes:val``: presence, colour and count in turn).

``bench`` prints the table (retention per question kind, LM and total prefill latency ratios
measured side by side in this run, analytical FLOPs ratio) and, with ``--plot`` or ``--out``,
draws the retention plot. ``info`` measures per-token information by removal per layer, the
proxies' agreement with it and the information horizon. Nothing is written unless asked for:
``--out DIR`` holds ``bench.json`` + ``retention.png`` (``info.json`` + ``information.png``).
"""
from __future__ import annotations

import argparse
import os
import re

from ..cli import register
from . import args as A
from .dataset_args import add_dataset
from ..core.errors import UsageError


def _methods(text: str) -> list[str]:
    """Comma-separated pruning methods, each with options in brackets (``visionzip[tower_layer=3]``);
    every name and option is checked against the registry."""
    from ..pruning import PRUNERS, parse_pruner

    out = [x.strip() for x in re.split(r",(?![^\[]*\])", str(text)) if x.strip()]
    if not out:
        raise UsageError("give at least one pruning method, e.g. random,fastv")
    for m in out:
        name, opts = parse_pruner(m)
        if "keep" in opts:
            raise UsageError(f"{m!r}: give keep ratios with --keep, not inside the method")
        PRUNERS.config(name, **opts)  # unknown options, wrong types, out-of-range values
    return out


methods_list = A._type(_methods, "method list")


def _add_outputs(p, stem: str, plot: str):
    A.add_json(p, f"also write the {stem} results as JSON to this file")
    p.add_argument("--plot", type=A.png_file, metavar="PATH", help=f"draw the {plot} plot to this PNG file")
    A.add_out(p, f"output directory for {stem}.json and the plot (new, empty, or an earlier vlinterp output)", required=False)


def _add(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="prune_cmd", required=True, metavar="{bench,info}", title="sub-commands")
    b = sub.add_parser("bench", help="retention / latency / FLOPs of pruning methods at several keep ratios",
                       description="retention / latency / FLOPs of pruning methods at several keep ratios")
    A.add_model(b)
    A.add_load_options(b)
    b.add_argument("--keep", type=A.ratios, default=A.ratios("0.1,0.25,0.5,0.75"), metavar="RATIOS",
                   help="comma-separated fractions of the visual tokens to keep, each in [0, 1]")
    b.add_argument("--methods", type=methods_list, default=["random", "fastv", "visionzip", "info", "hybrid"], metavar="LIST",
                   help="comma-separated pruning methods; options in brackets, e.g. visionzip[tower_layer=3] (select inside the vision tower)")
    add_dataset(b, "shapes", 128, 21, "the questions (a shapes split: presence, colour and count items of each held-out scene)")
    b.add_argument("--batch", type=A.positive_int, default=32, help="rows per prefill (also the latency batch)")
    b.add_argument("--repeats", type=A.positive_int, default=7, help="timed repeats per configuration (median reported)")
    b.add_argument("--horizon", type=A.nonneg_int, default=None, help="hybrid's horizon layer (default: from the information curve)")
    A.add_workers(b)
    _add_outputs(b, "bench", "retention")
    i = sub.add_parser("info", help="per-token information by layer, proxies and the horizon",
                       description="per-token information by layer, proxies and the horizon")
    A.add_model(i)
    A.add_load_options(i)
    add_dataset(i, "shapes:val", 12, 101, "the probe prompts (a shapes split: one question per scene)")
    _add_outputs(i, "info", "information")


def _check_outputs(args) -> None:
    """``--out`` with ``--json``/``--plot`` is refused (one place for the results)."""
    from ..core.errors import UsageError

    if args.out and (args.json or args.plot):
        raise UsageError("give --out DIR, or --json/--plot paths, not both")


def _write(args, res: dict, stem: str, plot_name: str, plot_fn) -> None:
    from ..core.io import output_dir, write_json

    if args.out:
        with output_dir(args.out) as tmp:
            write_json(os.path.join(tmp, f"{stem}.json"), res)
            plot_fn(res, os.path.join(tmp, plot_name))
        print(f"wrote {os.path.join(args.out, stem + '.json')} and {os.path.join(args.out, plot_name)}")
        return
    if args.plot:
        print(f"plot: {plot_fn(res, args.plot)}")
    if args.json:
        write_json(args.json, res, flag="--json")
        print(f"wrote {args.json}")


def _run(args) -> int:
    import sys

    import vlinterp as vi

    from .dataset_args import read

    _check_outputs(args)
    if args.prune_cmd == "bench":
        from ..eval.prune import WANTED, bench_items

        items, info = read(args, WANTED, 128, 21)  # read (and checked) before the model loads
        items = bench_items(items, info["seed"] or 0)
    else:
        from ..eval.prune import PROBE_WANTED

        items, info = read(args, PROBE_WANTED, 12, 101)
        bad = [it for it in items if not it.prompt]
        if bad:
            from ..core.errors import DataError

            raise DataError(f"{bad[0].where()}: no prompt (the information curve reads prompts)")
    m = vi.load(args.model, **A.load_kwargs(args))
    progress = sys.stderr.isatty()
    if args.prune_cmd == "bench":
        from ..eval.prune import run_bench, table
        from ..scale import WorkerPool
        from ..viz.prune_plot import plot_retention

        with WorkerPool(args.model, args.workers, args.address, load_options=A.load_kwargs(args)) as pool:
            res = run_bench(m, args.keep, args.methods, n=info["n"], seed=info["seed"], batch_size=args.batch, repeats=args.repeats,
                            horizon=args.horizon, pool=pool if args.workers > 1 else None, progress=progress, items=items)
        res.update(workers=args.workers, dataset=info["dataset"], kinds=info["kinds"])
        print(table(res))
        _write(args, res, "bench", "retention.png", plot_retention)
        return 0
    from ..pruning.information import summarise, token_information
    from ..viz.prune_plot import plot_information

    s = summarise(token_information(m, items, progress=progress))
    print(f"information by layer: {', '.join(f'{v:.2e}' for v in s['curve'])}; horizon layer {s['horizon']} (first below {s['frac']:g} x peak)")
    for k, v in s["spearman"].items():
        print(f"  proxy {k:<15} Spearman by layer: {', '.join('-' if x != x else f'{x:.2f}' for x in v)}")
    s.update(model=args.model, n=info["n"], seed=info["seed"], dataset=info["dataset"], kinds=info["kinds"])
    _write(args, s, "info", "information.png", lambda res, path: plot_information(res, path, args.model))
    return 0


register("prune", "visual token pruning: benchmark methods, information curve", _add, _run)
