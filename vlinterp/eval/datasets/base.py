"""What every dataset reader shares.

A :class:`Dataset` is opened from a typed ``Config`` (the registry builds it from a ``--dataset``
spec). Opening reads and checks the cheap part (JSON, line structure, file presence, polygon
shapes): every bad record is a :class:`~vlinterp.core.errors.DataError` naming the file and the
record, raised before any model loads; with ``on_error="skip"`` the record is left out instead and
counted (:meth:`Dataset.summary`). Images and masks are decoded only when an item is produced.

One call gives items: ``ds.items(kind=None, n=None, seed=None)``. ``kind`` picks what the items
ask (``scene``, ``caption``, ``presence``, ``pope-random|popular|adversarial``, ``colour``,
``count``, ``class``... each format lists its own in :meth:`Dataset.available_kinds`); ``n`` takes
that many, the first ``n`` in dataset order without ``seed``, a seeded sample (kept in dataset
order) with it, the same positions for every format holding the same records in the same order.
``ds.iter(kind)`` streams them one at a time.
"""
from __future__ import annotations

import collections
import json
import os
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np

from ...core.errors import DataError, ImageError, UsageError
from ...core.items import Item

ON_ERROR = ("raise", "skip")


def subsample(size: int, n: int | None, seed: int | None) -> list[int]:
    """Positions of ``n`` of ``size`` records: ``0..n-1`` without ``seed``; with it a sorted
    ``numpy`` draw without replacement (``default_rng(seed)``); all of them when ``n`` is
    ``None`` or at least ``size``."""
    if n is None or n >= size:
        return list(range(size))
    if n < 1:
        raise UsageError(f"n must be a positive integer, got {n}")
    if seed is None:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng(int(seed)).choice(size, n, replace=False))


def jsonable(x: Any, drop: tuple[str, ...] = ("scene",)) -> Any:
    """``x`` with tuples as lists and numpy scalars/arrays as Python values; dict entries named in
    ``drop`` and values JSON cannot hold (objects) are left out."""
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if k in drop:
                continue
            v = jsonable(v, drop)
            if v is not _SKIP:
                out[str(k)] = v
        return out
    if isinstance(x, (list, tuple)):
        return [v for v in (jsonable(v, drop) for v in x) if v is not _SKIP]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return _SKIP


_SKIP = object()


def read_json(path: str, what: str):
    """``json.load`` of ``path`` with every failure a one-line :class:`DataError`."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{what} {path!r} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path!r} is a directory, not a JSON file") from None
    except UnicodeDecodeError:
        raise DataError(f"{what} {path!r} is not a UTF-8 text file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path!r} is not JSON (line {e.lineno}: {e.msg})") from None
    except OSError as e:
        raise DataError(f"{what} {path!r} cannot be read: {e.strerror or e}") from None


def json_lines(path: str, what: str) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, parsed value or None, error or None)`` per non-blank line of ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            for ln, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield ln, json.loads(line), None
                except json.JSONDecodeError as e:
                    yield ln, None, f"not JSON ({e.msg})"
    except FileNotFoundError:
        raise DataError(f"{what} {path!r} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path!r} is a directory, not a JSON-lines file") from None
    except UnicodeDecodeError:
        raise DataError(f"{what} {path!r} is not a UTF-8 text file") from None
    except OSError as e:
        raise DataError(f"{what} {path!r} cannot be read: {e.strerror or e}") from None


TEXT_PROBE = 8192


def check_text(path: str, what: str) -> str:
    """``path`` if its first bytes are UTF-8 text without NUL bytes, else :class:`DataError`."""
    with open(path, "rb") as f:
        head = f.read(TEXT_PROBE)
    try:
        if b"\x00" in head:
            raise UnicodeDecodeError("utf-8", head, 0, 1, "NUL byte")
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a multi-byte character cut by the probe is fine
            raise DataError(f"{what} {path!r} is not a text (JSON lines) file") from None
    return path


def need_file(path: str | None, what: str) -> str:
    if not path:
        raise DataError(f"{what}: no file given")
    if not os.path.exists(path):
        raise DataError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise DataError(f"{what} {path!r} is a directory, not a file")
    return path


def need_dir(path: str | None, what: str) -> str:
    if not path:
        raise DataError(f"{what}: no folder given")
    if not os.path.exists(path):
        raise DataError(f"{what} {path!r} does not exist")
    if not os.path.isdir(path):
        raise DataError(f"{what} {path!r} is not a folder")
    return path


def load_rgb(path: str, where: str):
    """The RGB PIL image at ``path``; an unreadable file is a :class:`DataError` naming ``where``."""
    from ...core.images import load_image

    try:
        return load_image(path, name=where)
    except ImageError as e:
        raise DataError(str(e)) from None


class Dataset:
    """Base of every dataset reader. Subclasses set ``kinds`` (first: the default), a nested
    ``Config`` dataclass, ``positional`` (the Config fields a spec's ``:``-separated parts fill, in
    order) and implement :meth:`_open` (read and check), :meth:`_records` (a cheap sequence per
    kind) and :meth:`_load` (one record -> :class:`Item`)."""

    name: ClassVar[str] = "base"
    kinds: ClassVar[tuple[str, ...]] = ()
    positional: ClassVar[tuple[str, ...]] = ()
    paths: ClassVar[dict[str, tuple[str, str]]] = {}   # Config field -> (file|text|dir|any, what it is), checked by check_spec
    Config: ClassVar[Any] = None

    def __init__(self, config=None):
        self.config = config
        self.skipped: list[tuple[str, str]] = []   # (where, reason) of records left out
        self.spec = ""
        self.take: int | None = None       # the spec's take=N / take_seed=S: items() without n samples these
        self.take_seed: int | None = None
        self._open()

    @classmethod
    def spec_parts(cls, parts: list[str]) -> tuple[list[str], dict[str, str]]:
        """The spec's ``:``-separated positional parts -> ``(positional values, options)``; a format
        with other spellings overrides it."""
        return parts, {}

    @classmethod
    def check_paths(cls, config) -> None:
        """The files and folders ``config`` names exist and have the right type (text files are
        text), without reading them: :class:`DataError` naming the path."""
        for name, (kind, what) in cls.paths.items():
            path = getattr(config, name, None)
            if not path:
                continue
            if kind == "dir":
                need_dir(path, what)
            elif kind == "any":
                if not os.path.exists(path):
                    raise DataError(f"{what} {path!r} does not exist")
            else:
                need_file(path, what)
                if not os.access(path, os.R_OK):
                    raise DataError(f"{what} {path!r} is not readable")
                if kind == "text":
                    check_text(path, what)

    # ------------------------------------------------------------- subclass API
    def _open(self) -> None:
        """Read and check the cheap part of the data (raise or :meth:`bad` per record)."""

    def _records(self, kind: str) -> Sequence:
        raise NotImplementedError

    def _load(self, record, kind: str) -> Item:
        raise NotImplementedError

    # ------------------------------------------------------------------ errors
    @property
    def on_error(self) -> str:
        return getattr(self.config, "on_error", "raise")

    def bad(self, where: str, reason: str, detail: str = "") -> None:
        """A bad record: :class:`DataError` ``"{where}: {reason}{detail}"``, or with
        ``on_error="skip"`` counted under ``reason`` and left out."""
        if self.on_error != "skip":
            raise DataError(f"{where}: {reason}{detail}")
        self.skipped.append((where, reason))

    def summary(self) -> str | None:
        """One line on the records left out (``None`` when none were): how many and why."""
        if not self.skipped:
            return None
        why = collections.Counter(r for _, r in self.skipped)
        first = self.skipped[0][0]
        parts = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in why.most_common())
        return f"{self.describe()}: skipped {len(self.skipped)} bad record(s): {parts} (first: {first})"

    def describe(self) -> str:
        """Short name of the data (the spec, or the format)."""
        return self.spec or self.name

    # ------------------------------------------------------------------- kinds
    def available_kinds(self) -> tuple[str, ...]:
        return self.kinds

    @property
    def default_kind(self) -> str:
        k = getattr(self.config, "kind", None)
        return k or self.available_kinds()[0]

    def check_kind(self, kind: str | None) -> str:
        """``kind`` (or the default) if this data can give it, else :class:`UsageError`."""
        kinds = self.available_kinds()
        k = kind or self.default_kind
        if k not in kinds:
            raise UsageError(f"{self.describe()} gives {', '.join(kinds) or 'no'} items, not {k!r}")
        return k

    # ------------------------------------------------------------------- items
    def size(self, kind: str | None = None) -> int:
        """How many items of ``kind`` there are (cheap: nothing is decoded)."""
        return len(self._records(self.check_kind(kind)))

    def iter(self, kind: str | None = None, n: int | None = None, seed: int | None = None) -> Iterator[Item]:
        """Stream the items (one image decoded at a time); ``n``/``seed`` as in :meth:`items`. With
        ``on_error="skip"`` a record that fails only when decoded is left out (and counted)."""
        k = self.check_kind(kind)
        recs = self._records(k)
        if n is None:
            n, seed = self.take, self.take_seed
        for i in subsample(len(recs), n, seed):
            try:
                item = self._load(recs[i], k)
            except DataError as e:  # found only when decoded (an unreadable image, a size mismatch)
                if self.on_error != "skip":
                    raise
                self.skipped.append((str(e), "unreadable when loaded"))
                continue
            if item is not None:
                yield item

    def items(self, kind: str | None = None, n: int | None = None, seed: int | None = None) -> list[Item]:
        """The items of ``kind`` (default :attr:`default_kind`): all, the first ``n``, or ``n``
        drawn with ``seed`` (in dataset order)."""
        return list(self.iter(kind, n, seed))

    def take(self, n: int | None, seed: int | None = None, kind: str | None = None) -> list[Item]:
        return self.items(kind, n, seed)

    def __iter__(self) -> Iterator[Item]:
        return self.iter()

    def __len__(self) -> int:
        return self.size()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


__all__ = ["Dataset", "subsample", "jsonable", "read_json", "json_lines", "need_file", "need_dir", "check_text", "load_rgb",
           "ON_ERROR"]
