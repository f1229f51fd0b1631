"""POPE as items: the shapes world's splits and POPE-format JSON-lines files (one object per line:
``image``, ``text`` (the question), ``label`` yes/no, ``question_id`` optional), and their scores.

Every item is a yes/no question (``kind="presence"``, ``answer`` the label, ``meta["candidates"]``
``("yes", "no")``; shapes items also carry ``meta["neg_type"]``), scored by
:func:`vlinterp.metrics.pope.presence_scores`.
"""
from __future__ import annotations

import json
import os

from ..core.errors import DataError
from ..core.items import Item
from ..metrics.pope import presence_scores
from . import shapes

YES_NO = ("yes", "no")
FIELDS = ("image", "text", "label")


def _label(path: str, ln: int, d: dict) -> str:
    label = str(d["label"]).strip().lower()
    if label not in YES_NO:
        raise DataError(f"{path}:{ln}: label must be yes or no, got {d['label']!r} (question {d['text']!r})")
    return label


def scan_pope_jsonl(path: str, image_dir: str | None = None) -> int:
    """Check a POPE JSON-lines file without loading its images (cheap, before a model loads): a
    readable UTF-8 text file whose non-blank lines are JSON objects with ``image``, ``text`` and a
    yes/no ``label``, each image file present. Returns the number of questions; :class:`DataError`
    names the file and line."""
    if not os.path.exists(path):
        raise DataError(f"{path!r} does not exist")
    if os.path.isdir(path):
        raise DataError(f"{path!r} is a directory, not a POPE JSON-lines file")
    base = image_dir or os.path.dirname(os.path.abspath(path))
    n = 0
    try:
        with open(path, encoding="utf-8") as f:
            for ln, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{ln}: not JSON ({e})") from None
                if not isinstance(d, dict):
                    raise DataError(f"{path}:{ln}: expected a JSON object, got {type(d).__name__}")
                missing = [k for k in FIELDS if k not in d]
                if missing:
                    raise DataError(f"{path}:{ln}: missing {', '.join(missing)} (a POPE line needs {', '.join(FIELDS)})")
                _label(path, ln, d)
                img = str(d["image"])
                full = img if os.path.isabs(img) else os.path.join(base, img)
                if not os.path.isfile(full):
                    raise DataError(f"{path}:{ln}: image {img!r} not found (looked in {base})")
                n += 1
    except UnicodeDecodeError:
        raise DataError(f"{path!r} is not a text file (POPE JSON lines: image, text, label per line)") from None
    except OSError as e:
        raise DataError(f"{path!r} cannot be read: {e.strerror or e}") from None
    if not n:
        raise DataError(f"{path}: no POPE lines")
    return n


def read_pope_jsonl(path: str, image_dir: str | None = None) -> list[Item]:
    """The questions of a POPE JSON-lines file as items (images loaded; paths relative to
    ``image_dir``, default the file's folder)."""
    from ..data.jsonl import read_jsonl

    scan_pope_jsonl(path, image_dir)
    out = []
    for k, (d, img) in enumerate(read_jsonl(path, FIELDS, image_dir)):
        label = _label(path, k + 1, d)
        out.append(Item(img, str(d["text"]), label, [], f"{os.path.basename(path)}:{d.get('question_id', k)}", "presence",
                        {"candidates": YES_NO, "question_id": d.get("question_id"), "image_path": d["image"]}))
    return out


def pope(adapter, neg_type: str = "random", split: str = "test", n: int = 256, seed: int = 1) -> dict[str, float]:
    """POPE on ``n`` scenes of the shapes world's ``split`` (half present, half ``neg_type`` negatives:
    ``random``, ``popular`` or ``adversarial`` = the co-occurring partner): accuracy, F1, yes rate,
    false-yes rate (:func:`~vlinterp.metrics.pope.yes_no_scores`). Edits active around the call apply."""
    return presence_scores(adapter, shapes.pope(split, n, seed, neg_type))


__all__ = ["scan_pope_jsonl", "read_pope_jsonl", "pope"]
