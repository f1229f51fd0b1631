"""Validating argument types for datasets (``--dataset``), shared by ``trace``, ``audit`` and
``sae harvest``: checked while parsing, before any model load.

* ``shapes`` / ``shapes:SPLIT`` / ``shapes:SPLIT:KIND``: the procedural world (any split name is
  a different draw of scenes); how many items and which draw come from ``--n`` and ``--seed`` (never inside the spec).
* a JSON-lines file (``FILE.jsonl`` or ``jsonl:FILE``): it must exist, be a file, be readable and be
  text; each record's problems are reported by ``file:line`` when it is read (before the model
  loads), and stop the command.
"""
from __future__ import annotations

import os

from .args import _type

TEXT_PROBE = 8192


def check_text_file(path: str) -> str:
    """``path`` if it is an existing, readable text file (UTF-8, no NUL bytes) else ``ValueError``."""
    if not os.path.exists(path):
        raise ValueError(f"{path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a JSON-lines file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path!r} is not readable")
    with open(path, "rb") as f:
        head = f.read(TEXT_PROBE)
    try:
        if b"\x00" in head:
            raise UnicodeDecodeError("utf-8", head, 0, 1, "NUL byte")
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a multi-byte character cut by the probe is fine
            raise ValueError(f"{path!r} is not a text (JSON lines) file") from None
    return path


def _dataset(kinds: tuple[str, ...] | None):
    def parse(text: str) -> dict:
        """``{"kind": "shapes", "split": ..., "variant": ...}`` or ``{"kind": "jsonl", "path": ...}``."""
        s = str(text).strip()
        if s == "shapes" or s.startswith("shapes:"):
            parts = s.split(":")[1:]
            if len(parts) > 2 or any(p.strip().isdigit() or not p.strip() for p in parts):
                raise ValueError(f"{s!r}: give shapes, shapes:SPLIT or shapes:SPLIT:KIND (any split name); "
                                 "the number of items is --n and their seed --seed")
            split = parts[0] if parts else None
            variant = parts[1] if len(parts) > 1 else None
            if variant is not None and (kinds is None or variant not in kinds):
                from ..core.errors import UnknownNameError

                raise UnknownNameError("shapes item kind", variant, kinds or ())
            return {"kind": "shapes", "split": split, "variant": variant, "spec": s}
        path = s[len("jsonl:"):] if s.startswith("jsonl:") else s
        return {"kind": "jsonl", "path": check_text_file(path), "spec": s}

    return _type(parse, "dataset")


def dataset(kinds: tuple[str, ...] | None = None):
    """A ``--dataset`` argument type (see the module doc); ``kinds``: the ``shapes:SPLIT:KIND`` kinds
    the command knows."""
    return _dataset(kinds)


__all__ = ["dataset", "check_text_file"]
