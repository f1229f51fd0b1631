"""``--dataset SPEC`` (with ``--n`` / ``--seed``), the same on every command that reads a dataset.

One grammar, :mod:`vlinterp.eval.datasets`: ``shapes[:SPLIT[:N[:SEED]]][:KIND]``,
``coco:INSTANCES.json[:IMAGES]``, ``pope:FILE[:IMAGES]``, ``jsonl:FILE[:IMAGES]``, ``hf:PATH[:SPLIT]``,
``folder:DIR``, or a bare existing path (its format inferred), each with ``key=value`` options
(``kind=``, ``on_error=skip``, ``take=``). :func:`dataset` checks it while parsing (format,
options, that the named files and folders exist, that JSON lines are text); the records are read
and checked when the command opens the data, before any model loads (a bad record: one line
naming the file and the record, exit 2).
"""
from __future__ import annotations

from . import args as A


def _check(text: str) -> str:
    from ..eval.datasets import check_spec

    return check_spec(str(text).strip())


def dataset(kinds: tuple[str, ...] | None = None):
    """The ``--dataset`` argument type: the spec, validated (see the module doc). ``kinds`` is
    accepted for older callers; every command takes every spec."""
    return A._type(_check, "dataset")


def add_dataset(p, default: str | None, n: int | None, seed: int | None, what: str, n_help: str | None = None,
                required: bool = False):
    """``--dataset``, ``--n`` and ``--seed`` for a command whose default data is ``default`` (a
    ``shapes`` split of ``n`` scenes drawn with ``seed``)."""
    from ..eval.datasets import USAGE

    p.add_argument("--dataset", type=dataset(), default=default, required=required, metavar="SPEC",
                   help=f"{what}: {USAGE}, or an existing file or folder; options :kind=K (which items), :on_error=skip")
    p.add_argument("--n", type=A.positive_int, default=None,
                   help=n_help or f"items of each kind to take (a shapes split without N: its number of scenes, default {n})")
    p.add_argument("--seed", type=A.integer, default=None,
                   help=f"seed that draws the --n items (a shapes split without SEED: its seed, default {seed})")


def image_dir_option(args) -> dict:
    """``{"images": DIR}`` from an older ``--image-dir DIR`` (the folder image paths are relative to)."""
    d = getattr(args, "image_dir", None)
    if not d:
        return {}
    from ..core.errors import UsageError
    from ..eval.datasets import FORMATS, parse_dataset_spec

    fmt, _ = parse_dataset_spec(args.dataset)
    if "images" not in FORMATS.options(fmt):
        raise UsageError(f"--image-dir is for datasets with image paths (jsonl, pope, coco), not {fmt}")
    return {"images": d}


def read(args, wanted, shapes_n: int | None = None, shapes_seed: int | None = None):
    """``(items, info)`` of ``args.dataset`` (:func:`vlinterp.eval.datasets.pick.read_items`) with the
    command's ``--n`` / ``--seed`` (and ``--image-dir``); prints the note on skipped records."""
    import sys

    from ..eval.datasets.pick import read_items

    items, info = read_items(args.dataset, wanted, args.n, args.seed, shapes_n, shapes_seed, **image_dir_option(args))
    if info["skipped"]:
        print(info["skipped"], file=sys.stderr)
    return items, info


__all__ = ["dataset", "add_dataset", "read", "image_dir_option"]
