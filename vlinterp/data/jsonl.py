"""User data files: JSON lines with image paths (datasets for the SAE store, POPE files, caption
truth for CHAIR). One reader, with errors that name the file and line."""
from __future__ import annotations

import json
import os
from typing import Iterator

from ..core.errors import PromptError


def read_jsonl(path: str, required: tuple[str, ...] = (), image_dir: str | None = None) -> Iterator[tuple[dict, object]]:
    """Yield ``(record, image)`` per non-blank line: ``image`` is the loaded RGB PIL image of the
    record's ``image`` path (relative to ``image_dir``, default the file's folder), or None
    when the record has none. Raises :class:`PromptError` naming ``path:line`` for a line that is
    not JSON or lacks a ``required`` field."""
    from ..core.images import load_image

    base = image_dir or os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptError(f"{path}:{ln}: not JSON ({e})") from None
            missing = [k for k in required if k not in d]
            if missing:
                raise PromptError(f"{path}:{ln}: missing {', '.join(missing)} (needs {', '.join(required)})")
            img = d.get("image")
            if img:
                img = load_image(img if os.path.isabs(img) else os.path.join(base, img), name=f"{path}:{ln}")
            yield d, img or None


__all__ = ["read_jsonl"]
