"""Which items a command reads from a dataset.

A command names the item kinds it wants, most wanted first (``prune bench``: POPE-adversarial
questions and colour / count questions; ``trace``: the ``present`` questions; ``bench saliency``:
scenes). :func:`kinds_for` picks what the data gives:

* the spec's own ``kind=K`` (or ``shapes:SPLIT:N:SEED:K``): that kind only;
* else every wanted kind the dataset offers (a shapes split offers them all; COCO scenes, captions
  and its POPE questions; a POPE file the presence questions of its negative type; a JSON-lines
  or HF dataset the subsets it holds);
* else the dataset's default kind (a file without subsets: every record).

:func:`read_items` opens the spec, takes ``n`` items of each kind (drawn with ``seed``; on a
``shapes`` spec without ``N``, ``n`` / ``seed`` define the split, as commands always drew it) and
says what it read in one dict for the command's results.
"""
from __future__ import annotations

from ...core.errors import DataError, UsageError
from ...core.items import Item
from .base import Dataset


def offers(ds: Dataset, kind: str) -> bool:
    """Whether ``ds`` holds items of ``kind`` (named among its kinds, and non-empty)."""
    if kind not in ds.available_kinds():
        return False
    if ds.name == "shapes":  # every kind, made on demand
        return True
    try:
        ds.check_kind(kind)
        return ds.size(kind) > 0
    except (UsageError, DataError):
        return False


def kinds_for(ds: Dataset, wanted: tuple[str, ...] | list[str]) -> list[str]:
    """The kinds a command wanting ``wanted`` reads from ``ds`` (see the module doc)."""
    own = getattr(ds.config, "kind", None)
    if own:
        return [ds.check_kind(own)]
    got = [k for k in wanted if offers(ds, k)]
    return got or [ds.check_kind(None)]


def read_items(spec: str | Dataset, wanted=(), n: int | None = None, seed: int | None = None, shapes_n: int | None = None,
               shapes_seed: int | None = None, **options) -> tuple[list[Item], dict]:
    """``(items, info)``: the items of every kind :func:`kinds_for` picks, ``n`` of each drawn with
    ``seed`` (a ``shapes`` spec without ``N``: its split has ``n or shapes_n`` scenes drawn with
    ``seed`` or ``shapes_seed``). ``info``: ``dataset`` (the spec), ``kinds``, ``n``, ``seed``,
    ``resolved`` (a spec that reads exactly these items again) and ``skipped`` (one line on records
    left out with ``on_error=skip``, or None). No items: :class:`UsageError`."""
    from . import open_dataset

    ds = spec if isinstance(spec, Dataset) else open_dataset(spec, **options)
    kinds = kinds_for(ds, tuple(wanted))
    split = type(ds).__name__ == "ShapesDataset" and ds.config.n is None
    if split:
        n = n if n is not None else shapes_n
        seed = seed if seed is not None else shapes_seed
    items: list[Item] = []
    for k in kinds:
        items += ds.items(k, n, seed)
    if not items:
        raise UsageError(f"no items in {ds.describe()}" + (f" ({', '.join(kinds)})" if kinds != ["all"] else ""))
    info = {"dataset": ds.describe(), "kinds": kinds, "n": n, "seed": seed, "resolved": resolved_spec(ds, kinds, n, seed),
            "skipped": ds.summary()}
    return items, info


def resolved_spec(ds: Dataset, kinds: list[str], n: int | None, seed: int | None) -> str:
    """A spec whose ``items()`` are exactly the items of one kind of ``kinds`` read with ``n`` /
    ``seed`` (what an activation store records so that workers and dashboards read them again)."""
    from . import parse_dataset_spec

    kind = kinds[0] if len(kinds) == 1 else None
    if type(ds).__name__ == "ShapesDataset":
        base = ds.resolved(n, seed)
        take = ds.config.n is not None and n is not None
        return base + (f":{kind}" if kind else "") + (f":take={n}" + (f":take_seed={seed}" if seed is not None else "") if take else "")
    import os

    from . import FORMATS

    fmt, opts = parse_dataset_spec(ds.spec or ds.describe())
    opts = {k: v for k, v in opts.items() if k not in ("kind", "take", "take_seed")}
    for k in FORMATS.get(fmt).paths:
        if opts.get(k):
            opts[k] = os.path.abspath(opts[k])
    if n is None and ds.take is not None:
        n, seed = ds.take, ds.take_seed
    parts = [fmt] + [f"{k}={v}" for k, v in opts.items()]
    if kind:
        parts.append(f"kind={kind}")
    if n is not None:
        parts.append(f"take={n}")
        if seed is not None:
            parts.append(f"take_seed={seed}")
    return ":".join(parts)


__all__ = ["offers", "kinds_for", "read_items", "resolved_spec"]
