"""User data files: JSON lines with image paths (datasets for the SAE store, POPE files, caption
truth for CHAIR). One reader, with errors that name the file and line."""
from __future__ import annotations

import json
import os
from typing import Iterator

from ..core.errors import DataError


def read_jsonl(path: str, required: tuple[str, ...] = (), image_dir: str | None = None, on_error=None) -> Iterator[tuple[dict, object]]:
    """Yield ``(record, image)`` per non-blank line: ``image`` is the loaded RGB PIL image of the
    record's ``image`` path (relative to ``image_dir``, default the file's folder), or None
    when the record has none. A line that is not JSON, lacks a ``required`` field or names an
    unreadable image raises :class:`DataError` naming ``path:line``; with ``on_error(line, message)``
    given, that line is reported there and skipped instead."""
    from ..core.errors import VlinterpError
    from ..core.images import load_image

    base = image_dir or os.path.dirname(os.path.abspath(path))
    with open(path, "rb") as f:
        for ln, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(f"{path}:{ln}: not UTF-8 text (is this a JSON-lines file?)") from None
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{ln}: not JSON ({e})") from None
                if not isinstance(d, dict):
                    raise DataError(f"{path}:{ln}: expected a JSON object, got {type(d).__name__}")
                missing = [k for k in required if k not in d]
                if missing:
                    raise DataError(f"{path}:{ln}: missing {', '.join(missing)} (needs {', '.join(required)})")
                img = d.get("image")
                if img:
                    if not isinstance(img, str):
                        raise DataError(f"{path}:{ln}: image must be a file path, got {img!r}")
                    img = load_image(img if os.path.isabs(img) else os.path.join(base, img), name=f"{path}:{ln}")
            except (VlinterpError, OSError) as e:
                if on_error is None:
                    raise
                on_error(ln, str(e))
                continue
            yield d, img or None


__all__ = ["read_jsonl"]
