"""`vlinterp detect`: per-answer hallucination scores and how well each separates hallucinated claims.

    vlinterp detect --model shapes-llava --dataset shapes:test [--kinds pope-adversarial,caption]
                    [--detectors perceptual,conflict,decision,margin,ground,sae] [--n 512] [--seed 21]
                    [--fit-dataset shapes:detect-fit] [--fit-n 1024] [--fit-seed 0] --json PATH [--out DIR]

Per item kind: the model's "yes" answers to presence questions (``presence``, ``pope-*``) or the
objects its captions name (``caption``) become claims; the detectors are fitted on claims of
``--fit-dataset`` (layer choices, the grounding probe, the SAE probe) and scored on those of
``--dataset``; AUROC and AUPRC per detector (and per layer for the logit-lens ones) are printed and
written with every claim's scores to ``--json``; ``--out DIR`` adds the ROC / per-layer plot
(``detect.png``) and the table (``table.txt``). Detector options go in brackets:
``ground[layer=1,cover=0.2]``. Everything is checked before the model loads.
"""
from __future__ import annotations

import argparse
import re

from ..cli import register
from . import args as A
from ..core.errors import UsageError


def _detectors(text: str) -> list[str]:
    from .. import detect

    out = [x.strip() for x in re.split(r",(?![^\[]*\])", str(text)) if x.strip()]
    if not out:
        raise UsageError("give at least one detector, e.g. margin,ground")
    names = []
    for spec in out:
        detect.config(spec)  # unknown names and options, wrong types, refused values
        names.append(detect.DETECTORS.parse(spec)[0])
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"detector {dup[0]!r} given twice")
    return out


def _kinds(text: str) -> list[str]:
    from ..eval.detect import KINDS

    out = [x.strip() for x in str(text).split(",") if x.strip()]
    if not out:
        raise UsageError("give at least one item kind")
    for k in out:
        if k not in KINDS:
            from ..core.errors import UnknownNameError

            raise UnknownNameError("claim item kind", k, KINDS)
    return list(dict.fromkeys(out))


def _spec(text: str) -> str:
    from ..eval.datasets import check_spec

    return check_spec(text)


detector_list = A._type(_detectors, "detector list")
kind_list = A._type(_kinds, "kind list")
dataset_spec = A._type(_spec, "dataset")


def _add(p: argparse.ArgumentParser):
    from ..eval.detect import DEFAULT_DETECTORS

    A.add_model(p)
    A.add_load_options(p)
    p.add_argument("--dataset", type=dataset_spec, default="shapes:test", metavar="SPEC",
                   help="the held-out items (shapes[:SPLIT[:N[:SEED]]], pope:FILE, coco:..., jsonl:FILE, ...)")
    p.add_argument("--kinds", type=kind_list, default=["pope-adversarial", "caption"], metavar="K1,K2",
                   help="item kinds to make claims of: presence / pope-random / pope-popular / pope-adversarial "
                        "(the model's yes answers) and caption (the objects its captions name)")
    p.add_argument("--detectors", type=detector_list, default=list(DEFAULT_DETECTORS), metavar="D1,D2",
                   help="detectors, options in brackets, e.g. ground[layer=1]")
    A.add_n_seed(p, 512, 21, "held-out items per kind")
    p.add_argument("--fit-dataset", type=dataset_spec, default="shapes:detect-fit", metavar="SPEC",
                   help="the items the detectors are fitted on (never the held-out ones)")
    p.add_argument("--fit-n", type=A.positive_int, default=1024, help="fit items per kind")
    p.add_argument("--fit-seed", type=A.integer, default=0, help="seed that draws the fit items")
    p.add_argument("--batch", type=A.positive_int, default=16, help="claims per forward")
    p.add_argument("--max-new-tokens", type=A.positive_int, default=32, help="caption length limit")
    A.add_json(p, "write the AUROC / AUPRC table and every claim's scores as JSON to this file", required=True)
    A.add_out(p, "output directory for the plot (detect.png) and the table (table.txt)", required=False)


def _run(args) -> int:
    import os
    import sys

    from ..core.errors import UsageError
    from ..core.io import output_dir, write_json, write_text
    from ..eval.detect import run, table

    if args.dataset == args.fit_dataset and args.seed == args.fit_seed:
        raise UsageError("--fit-dataset and --dataset name the same items: fit on a separate split or seed")
    res = run(args.model, args.dataset, args.kinds, args.detectors, args.n, args.seed, args.fit_dataset, args.fit_n,
              args.fit_seed, args.batch, args.max_new_tokens, progress=sys.stderr.isatty(), load_options=A.load_kwargs(args))
    text = table(res)
    print(text)
    write_json(args.json, res, flag="--json")
    print(f"wrote {args.json}")
    if args.out:
        from ..viz.detect_plot import plot_detection

        with output_dir(args.out) as tmp:
            plot_detection(res, os.path.join(tmp, "detect.png"))
            write_text(os.path.join(tmp, "table.txt"), text + "\n")
        print(f"wrote {os.path.join(args.out, 'detect.png')} and {os.path.join(args.out, 'table.txt')}")
    return 0


register("detect", "hallucination detection: per-claim scores, AUROC / AUPRC per detector", _add, _run)
