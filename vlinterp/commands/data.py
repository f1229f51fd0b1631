"""`vlinterp data export`: write the shapes world in the field's data formats.

    vlinterp data export shapes --format coco|pope|jsonl|hf --out DIR [--split test] [--n 64] [--seed 0] [--masks rle|polygon]

Every item kind of the split (scenes with objects and masks, POPE questions of the three negative
types, colour / count questions, captions) goes into ``DIR`` in the chosen format; the command
prints the ``--dataset`` specs that read it back, which give the same items as
``--dataset shapes:SPLIT:N:SEED`` (same pixels, masks, questions and answers; COCO: scenes and
captions; ``--masks polygon`` writes traced outer outlines, which rasterise back to the same pixels on
the shapes world's hole-free masks).
"""
from __future__ import annotations

import argparse
import re
import sys

from ..cli import register
from .args import _type, add_n_seed, add_out
from ..core.errors import UsageError

FORMATS = ("coco", "pope", "jsonl", "hf")


def _split_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(text)):
        raise UsageError(f"{text!r} is not a split name (letters, digits, '_', '.', '-')")
    return text


split_name = _type(_split_name, "split name")


def _add(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="data_cmd", required=True, metavar="COMMAND")
    e = sub.add_parser("export", help="write a shapes-world split as COCO, POPE, JSON lines or a Hugging Face dataset",
                       description=__doc__.split("\n\n")[0])
    e.add_argument("source", choices=["shapes"], help="the data to export (the procedural shapes world)")
    e.add_argument("--format", required=True, choices=FORMATS,
                   help="coco: instances + captions JSON and images; pope: the three POPE question files, images and "
                        "their instances; jsonl: items.jsonl and images; hf: a save_to_disk DatasetDict")
    add_out(e)
    e.add_argument("--split", type=split_name, default="test", help="shapes split to export")
    add_n_seed(e, 64, 0, "scenes")
    e.add_argument("--masks", choices=["rle", "polygon"], default="rle",
                   help="coco / pope instance masks: rle (lossless) or polygon (traced outer outlines: the same pixels "
                        "for the shapes world's hole-free masks)")


def _run(args) -> int:
    from ..core.errors import UsageError

    if args.data_cmd == "export":
        if args.masks != "rle" and args.format not in ("coco", "pope"):
            raise UsageError(f"--masks {args.masks} applies to --format coco or pope; {args.format} stores masks as RLE")
        from ..eval.datasets.export import export_shapes

        res = export_shapes(args.out, args.format, args.split, args.n, args.seed, args.masks, progress=True)
        counts = ", ".join(f"{k} {v}" for k, v in res["items"].items())
        print(f"wrote shapes {args.split} (n={args.n}, seed={args.seed}) as {args.format} to {args.out}: "
              f"{res['images']} images; items: {counts}")
        for spec in res["read"]:
            print(f"read it with: --dataset {spec}")
        sys.stdout.flush()
    return 0


register("data", "export the shapes world in standard data formats (COCO, POPE, JSON lines, Hugging Face)", _add, _run)
