"""`vlinterp steer fit|eval|generate`: hallucination steering, fitted once, compared on POPE / CHAIR.

    vlinterp steer fit --method ground [--dataset shapes[:split[:n[:seed]]] | --dataset pope.jsonl] --out fits/ground
    vlinterp steer eval [--fit fits/ground ...] [--methods none,iri,vcd,meandiff,save,probe,ground] [--n 256] [--seed 11] [--json PATH]
    vlinterp steer eval --model PATH --methods none,vcd --dataset pope:coco_pope_random.json:val2014 [--dataset pope:...popular...]
    vlinterp steer eval --model PATH --methods none,vcd --dataset coco:instances_val2014.json:val2014:kind=caption --captions 500
    vlinterp steer generate IMAGE --prompt "describe the image." (--fit fits/ground | --method ground) [--model M]

A method spec is ``name`` or ``name:key=value,...`` (its config options, e.g. ``meandiff:alpha=0.1``).
Methods named without ``--fit`` are fitted first on their own probe / calibration items of the shapes
world (never the evaluation scenes), with progress; ``steer fit`` saves a fit that ``--fit`` loads
in seconds. The table: POPE accuracy, F1, yes rate and false-yes rate per negative type, colour /
count accuracy (collateral damage), and CHAIR_S / CHAIR_I on free captions of ``--captions`` scenes.
``--dataset SPEC`` (repeatable; the grammar of every command, :mod:`vlinterp.eval.steer_data` says what
each format gives): POPE files give one row group each (accuracy, F1, yes rate, false-yes), COCO
its POPE-style questions and CHAIR on captions of its images (COCO's synonym list, or the dataset's
own categories). The older ``--pope-jsonl`` / ``--captions-jsonl --vocab`` files go the same way.
"""
from __future__ import annotations

import json
import sys
import time

from ..cli import register
from .args import (_type, add_json, add_load_options, add_model, add_out, add_workers, existing_dir, existing_file,
                   image_file, integer, load_kwargs, nonneg_int, positive_int)

from .dataset_args import dataset
from ..core.errors import UsageError

ALL = "none,iri,vcd,meandiff,save,probe,ground"
DEFAULT_N, DEFAULT_SEED, DEFAULT_CAPTIONS = 256, 11, 64  # the native shapes data (vlinterp.eval.steer_data)


# ------------------------------------------------------------ argument types
def _spec(text: str, allow_none: bool) -> tuple[str, dict]:
    from ..core.registry import parse_spec
    from ..eval.steer import NONE, make_config
    from ..steering import STEERING

    name, opts = parse_spec(text)
    if allow_none and name == NONE:
        if opts:
            raise UsageError("'none' (the unsteered model) takes no options")
        return name, {}
    if name not in STEERING:
        from ..core.errors import UnknownNameError

        raise UnknownNameError("steering method", name, ([NONE] if allow_none else []) + STEERING.names())
    make_config(name, **opts)  # unknown options, wrong types, bad values: now, before any model loads
    return name, opts


def _specs(text: str) -> list[tuple[str, dict]]:
    """``none,meandiff:alpha=0.1,pca=true,ground`` or ``none,meandiff[alpha=0.1,pca=true],ground``: commas
    split methods, except inside brackets, and a ``key=value`` part continues the spec before it."""
    parts, depth, cur = [], 0, ""
    for ch in str(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    merged: list[str] = []
    for p in (x.strip() for x in parts):
        if p and "=" in p and ":" not in p and "[" not in p and merged and ":" in merged[-1]:
            merged[-1] += "," + p
        elif p:
            merged.append(p)
    specs = [_spec(p, True) for p in merged]
    if not specs:
        raise UsageError("give at least one steering method (none, iri, vcd, meandiff, save, probe, ground)")
    return specs


def _fit_dir(text: str) -> str:
    from ..steering.base import read_header

    read_header(text)
    return text


def _dataset(text: str):
    from ..eval.steer import parse_fit_dataset

    return parse_fit_dataset(text)


method_spec = _type(lambda t: _spec(t, False), "method")
method_specs = _type(_specs, "method list")
fit_dir = _type(_fit_dir, "fit directory")
dataset_spec = _type(_dataset, "dataset")


def _add(p):
    sub = p.add_subparsers(dest="steer_cmd", required=True)
    f = sub.add_parser("fit", help="fit a steering method on its probe items and save it (a directory --fit loads)")
    f.add_argument("--method", type=method_spec, required=True, metavar="M",
                   help="iri, vcd, meandiff, save, probe or ground, optionally with options (meandiff:alpha=0.1)")
    f.add_argument("--dataset", type=dataset_spec, default="shapes", metavar="SPEC",
                   help="shapes[:split[:n[:seed]]] (split and n unset: the method's own probe split and size; calibration "
                        "on seed + 1); a POPE JSON-lines file; or yes/no questions from any dataset spec (pope:FILE[:IMAGES], "
                        "jsonl:..., coco:..., hf:...: every other yes and every other no question probe, the rest calibration; ground: the "
                        "scenes' object masks, or boxes filled, with colour / shape attributes, and its strengths given)")
    add_out(f, help="the fit's directory (new, empty, or an earlier vlinterp output; your own files in it are kept)")
    add_model(f)
    add_load_options(f)

    from ..eval.datasets import USAGE

    e = sub.add_parser("eval", help="compare steering methods on POPE (+ colour/count accuracy, CHAIR), on --dataset")
    add_model(e)
    e.add_argument("--fit", type=fit_dir, action="append", default=[], metavar="DIR",
                   help="a saved fit (vlinterp steer fit) to evaluate; repeatable")
    e.add_argument("--methods", type=method_specs, default=None, metavar="LIST",
                   help=f"comma-separated method specs to fit and evaluate (unset: {ALL}; with --fit: none)")
    e.add_argument("--dataset", type=dataset(), action="append", default=None, metavar="SPEC",
                   help=f"the data, repeatable (each POPE file its own row): {USAGE}, or an existing file or folder. "
                        "POPE files: accuracy / F1 / yes rate / false-yes per file; COCO: its POPE-style questions and "
                        "CHAIR on captions of its images (:kind=caption: CHAIR only); default: the shapes world's "
                        "POPE / colour / count questions and CHAIR captions")
    e.add_argument("--n", type=positive_int, default=None,
                   help=f"items of each kind to take from --dataset (unset: all); the native shapes data: POPE questions "
                        f"per negative type and colour / count scenes (unset: {DEFAULT_N})")
    e.add_argument("--seed", type=integer, default=None,
                   help=f"seed that draws the --n items (unset: the first --n); the native shapes scenes' seed (unset: {DEFAULT_SEED})")
    e.add_argument("--captions", type=nonneg_int, default=None,
                   help=f"images captioned for CHAIR (0: skip; unset: {DEFAULT_CAPTIONS} scenes of the native shapes data, "
                        "every caption image of a --dataset)")
    e.add_argument("--pope-jsonl", type=existing_file, default=None, metavar="PATH",
                   help="a POPE-format file (image, text, label per line): the older spelling of --dataset pope:PATH")
    e.add_argument("--captions-jsonl", type=existing_file, default=None, metavar="PATH",
                   help="caption-truth lines (image, objects) for CHAIR with --vocab (COCO data: --dataset coco:... instead)")
    e.add_argument("--vocab", type=existing_file, default=None, metavar="PATH",
                   help="synonym table JSON {object: [synonyms]} for --captions-jsonl")
    e.add_argument("--image-dir", type=existing_dir, default=None, metavar="DIR",
                   help="folder the image paths in the data files are relative to (unset: each file's folder; "
                        "--dataset specs also take it as their IMAGES part)")
    add_load_options(e)
    add_workers(e)
    add_json(e)

    g = sub.add_parser("generate", help="answer with a steering method on")
    g.add_argument("image", type=image_file, metavar="IMAGE", help="the image")
    g.add_argument("--prompt", required=True, help="the question or instruction")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--fit", type=fit_dir, default=None, metavar="DIR", help="a saved fit (loads in seconds)")
    which.add_argument("--method", type=method_spec, default=None, metavar="M",
                       help="fit this method first (unset and no --fit: ground, which takes minutes on a CPU)")
    add_model(g)
    g.add_argument("--max-new-tokens", type=positive_int, default=16, help="tokens to generate")
    add_load_options(g)


# ------------------------------------------------------------------ running
def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fit(name: str, opts: dict, adapter, dataset="shapes"):
    """Fit ``name`` (with progress) and say what it chose."""
    from ..eval.steer import NONE, fit

    from ..eval.steer import parse_fit_dataset
    from ..steering import STEERING

    if name == NONE:
        return None
    data = (parse_fit_dataset(dataset) if isinstance(dataset, str) else dataset).resolved(name)
    if STEERING.get(name).needs:
        _say(f"fitting {name} on {data.describe()} (calibration on the next seed where strengths are chosen) ...")
    method = fit(name, adapter, data, progress=True, **opts)
    _say(method.describe())
    return method


def _methods(args, adapter_fn) -> tuple[dict, dict]:
    """``({row name: fitted method or None}, {row name: seconds to fit or load})``: the ``--methods``
    specs fitted (``adapter_fn()`` gives the model to fit on), then the ``--fit`` directories loaded."""
    import os

    from ..steering import load as load_fit

    rows, secs = {}, {}
    specs = args.methods if args.methods is not None else (_specs("none") if args.fit else _specs(ALL))
    for name, opts in specs:
        key = name if not opts else name + ":" + ",".join(f"{k}={v}" for k, v in opts.items())
        t0 = time.perf_counter()
        rows[key] = _fit(name, opts, adapter_fn())
        secs[key] = time.perf_counter() - t0
    for d in args.fit:
        t0 = time.perf_counter()
        m = load_fit(d)
        key = m.name if m.name not in rows else f"{m.name} ({os.path.basename(os.path.normpath(d))})"
        rows[key], secs[key] = m, time.perf_counter() - t0
        _say(f"loaded {d}: {m.describe()}")
    return rows, secs


def _print_table(table: dict) -> None:
    print(f"{'method':9s} {'adv acc':>7s} {'adv F1':>6s} {'adv false-yes':>13s} {'pop acc':>7s} {'rand acc':>8s} {'colour':>6s} "
          f"{'count':>5s} {'CHAIR_S':>7s} {'CHAIR_I':>7s} {'cover':>5s}")
    for name, r in table.items():
        a = r["adversarial"]
        ch = r.get("chair", {})
        print(f"{name:9s} {a['accuracy']:7.3f} {a['f1']:6.3f} {a['false_yes']:13.3f} {r['popular']['accuracy']:7.3f} "
              f"{r['random']['accuracy']:8.3f} {r['colour']:6.3f} {r['count']:5.3f} {ch.get('chair_s', float('nan')):7.3f} "
              f"{ch.get('chair_i', float('nan')):7.3f} {ch.get('coverage', float('nan')):5.3f}")


def _write_json(path, table) -> None:
    from ..core.io import write_json

    write_json(path, table, flag="--json")


def _print_groups(table: dict) -> None:
    """One line per method: each POPE group's accuracy / F1 / yes rate / false-yes, other groups'
    accuracy, each CHAIR row's CHAIR_S / CHAIR_I."""
    for name, r in table.items():
        parts = []
        for g, v in r.items():
            if isinstance(v, dict) and "f1" in v:
                parts.append(f"{g}: acc {v['accuracy']:.3f} F1 {v['f1']:.3f} yes {v['yes_rate']:.3f} false-yes {v['false_yes']:.3f}")
            elif isinstance(v, dict) and "chair_s" in v:
                parts.append(f"{g}: CHAIR_S {v['chair_s']:.3f} CHAIR_I {v['chair_i']:.3f} cover {v['coverage']:.3f}")
            elif isinstance(v, float) and not g.endswith("_seconds"):
                parts.append(f"{g} acc {v:.3f}")
        print(f"{name:9s} " + " | ".join(parts))


def _eval_data(args):
    """What the table is computed on, read and checked before any model loads."""
    from ..eval.steer_data import eval_data

    if args.pope_jsonl:
        from ..eval.pope import scan_pope_jsonl

        scan_pope_jsonl(args.pope_jsonl, args.image_dir)  # every line and image path, one-line errors
    data = eval_data(args.dataset, args.n, args.seed, args.captions, args.image_dir,
                     [args.pope_jsonl] if args.pope_jsonl else [], args.captions_jsonl, args.vocab)
    for note in data.notes:
        _say(note)
    if not data.native:
        _say(f"evaluating on {data.describe()}: {len(data.items)} items")
    return data


def _eval(args) -> int:
    from functools import partial

    from ..eval.steer import eval_shard, score_data
    from ..scale import WorkerPool

    data = _eval_data(args)
    table = {}
    with WorkerPool(args.model, args.workers, args.address, load_options=load_kwargs(args)) as pool:
        rows, secs = _methods(args, pool.local_adapter)  # fitted (with progress) or loaded first, then evaluated
        for name, method in rows.items():
            t0 = time.perf_counter()
            preds = pool.map(partial(eval_shard, method=method), data.items, shard=64, desc=f"steer eval {name}",
                             ids=[f"{it.kind} item {i}" for i, it in enumerate(data.items)])
            table[name] = score_data(data, preds)
            table[name].update(fit_seconds=secs[name], eval_seconds=time.perf_counter() - t0)
    native = all(k in r for r in table.values() for k in ("random", "popular", "adversarial", "colour", "count"))
    (_print_table if native else _print_groups)(table)
    if args.json:
        _write_json(args.json, table)
    return 0


def _fit_cmd(args) -> int:
    from .. import load
    from ..core.errors import UsageError
    from ..steering import STEERING

    name, opts = args.method
    if "scenes" in STEERING.get(name).needs:
        if args.dataset.kind == "pope":
            raise UsageError(f"{name} needs images with object masks (shapes scenes), not a POPE file; use --dataset shapes[...]")
        if args.dataset.kind == "spec":
            from ..eval.datasets import open_dataset
            from ..eval.datasets.pick import offers

            if not offers(open_dataset(args.dataset.path), "scene"):  # before the model loads
                raise UsageError(f"{name} needs images with object masks or boxes (scenes: shapes, coco:..., JSON lines or "
                                 f"HF records with objects); {args.dataset.path} has none")
            from ..eval.steer import make_config, scene_items

            _, words = scene_items(args.dataset.resolved(name), name)  # colour / shape words or object names
            cfg = make_config(name, world=False, **{**{k: v for k, v in words.items() if k not in opts}, **opts})
            auto = [k for k in STEERING.get(name).strengths if getattr(cfg, k, None) == "auto"]
            if auto:
                eg = "alpha=3" if "objects" in words else "alpha=3,beta=1,gate=1"
                raise UsageError(f"{name} on {args.dataset.path}: give its strengths ({', '.join(k + '=...' for k in auto)}, "
                                 f"e.g. {name}:{eg}); choosing them needs the shapes world's calibration items")
    m = load(args.model, **load_kwargs(args))
    method = _fit(name, opts, m, args.dataset)
    method.save(args.out)
    _say(f"saved {args.out} (load it with --fit {args.out})")
    return 0


def _generate(args) -> int:
    from .. import load
    from ..core.images import load_image
    from ..steering import load as load_fit

    method = load_fit(args.fit) if args.fit else None
    m = load(args.model, **load_kwargs(args))
    b = m.prepare(images=[load_image(args.image, name="IMAGE")], text=[args.prompt])
    if method is None:
        name, opts = args.method or ("ground", {})
        if not args.method:
            _say("no --fit given: fitting ground first (minutes on a CPU; `vlinterp steer fit --method ground --out DIR` "
                 "once, then --fit DIR loads in seconds)")
        method = _fit(name, opts, m)
    else:
        _say(f"loaded {args.fit}: {method.describe()}")
    print(method.generate(m, b, max_new_tokens=args.max_new_tokens).texts[0])
    return 0


def _run(args) -> int:
    from ..core.errors import UsageError

    if args.steer_cmd == "fit":
        return _fit_cmd(args)
    if args.steer_cmd == "generate":
        return _generate(args)
    if args.captions_jsonl and not args.vocab:
        raise UsageError("--captions-jsonl needs --vocab (the synonym table)")
    if args.vocab and not args.captions_jsonl:
        raise UsageError("--vocab is the synonym table of --captions-jsonl; give that file too")
    return _eval(args)


register("steer", "hallucination steering (IRI, VCD, mean-difference, SAVE, probes, grounding): fit, compare on "
         "POPE / CHAIR, generate", _add, _run)
