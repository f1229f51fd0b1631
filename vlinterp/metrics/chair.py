"""CHAIR (Caption Hallucination Assessment with Image Relevance) on free captions.

``CHAIR_I`` = hallucinated object mentions / all object mentions; ``CHAIR_S`` = captions with at
least one hallucinated mention / all captions. On the shapes world an object is a
``(colour, shape)`` pair, found in the caption as "<colour> <shape>[s]" (a bare shape counts
against the shapes present); with COCO-style data pass ``vocabulary`` = ``{word or phrase:
canonical object}`` (synonyms included) and the ground-truth objects per image.
"""
from __future__ import annotations

import re

from ..data.shapes import COLOURS, SHAPES


def shapes_mentions(caption: str) -> list[tuple[str | None, str]]:
    """``(colour or None, shape)`` per object mention in a shapes-world caption."""
    words = re.findall(r"[a-z]+", caption.lower())
    out = []
    for i, w in enumerate(words):
        shape = w[:-1] if w.endswith("s") and w[:-1] in SHAPES else w if w in SHAPES else None
        if shape is None:
            continue
        colour = words[i - 1] if i > 0 and words[i - 1] in COLOURS else None
        out.append((colour, shape))
    return out


def vocabulary_mentions(caption: str, vocabulary: dict[str, str]) -> list[str]:
    """Canonical objects mentioned in ``caption`` (longest phrases first, no overlaps)."""
    text = " " + " ".join(re.findall(r"[a-z]+", caption.lower())) + " "
    found = []
    for phrase in sorted(vocabulary, key=len, reverse=True):
        key = f" {phrase.lower()} "
        while key in text:
            found.append(vocabulary[phrase])
            text = text.replace(key, " ", 1)
    return found


def chair(captions: list[str], truths: list, vocabulary: dict[str, str] | None = None) -> dict[str, float]:
    """``truths[i]``: a shapes :class:`Scene` (default) or, with ``vocabulary``, a set of canonical
    objects. Returns ``chair_s``, ``chair_i``, ``mentions`` (per caption, mean) and ``coverage``:
    the share of each image's distinct objects the caption names (mean over captions; a caption can
    lower CHAIR by naming fewer objects or repeating one, and coverage shows it)."""
    n_caps = n_bad_caps = n_ment = n_bad = 0
    cover = 0.0
    for cap, truth in zip(captions, truths):
        if vocabulary is None:
            pairs = {(o.colour, o.shape) for o in truth.objects}
            shapes = {o.shape for o in truth.objects}
            ments = shapes_mentions(cap)
            bad = [m for m in ments if (m not in pairs if m[0] is not None else m[1] not in shapes)]
            named = {m for m in ments if m[0] is not None} | {(o.colour, o.shape) for o in truth.objects
                                                              if (None, o.shape) in ments}
            cover += len(pairs & named) / max(1, len(pairs))
        else:
            ments = vocabulary_mentions(cap, vocabulary)
            bad = [m for m in ments if m not in set(truth)]
            cover += len(set(truth) & set(ments)) / max(1, len(set(truth)))
        n_caps += 1
        n_ment += len(ments)
        n_bad += len(bad)
        n_bad_caps += bool(bad)
    return {"chair_s": n_bad_caps / max(1, n_caps), "chair_i": n_bad / max(1, n_ment), "mentions": n_ment / max(1, n_caps),
            "coverage": cover / max(1, n_caps)}


def load_caption_truth(path: str, image_dir: str | None = None) -> tuple[list, list[set]]:
    """COCO-style caption evaluation file: one JSON object per line with ``image`` and ``objects``
    (canonical object names present) -> ``(PIL images, [set of objects])``."""
    from ..data.jsonl import read_jsonl

    rows = list(read_jsonl(path, ("image", "objects"), image_dir))
    return [img for _, img in rows], [set(d["objects"]) for d, _ in rows]


def load_vocabulary(path: str) -> dict[str, str]:
    """Synonym table: JSON ``{canonical: [synonym, ...]}`` -> ``{word or phrase: canonical}``."""
    import json

    with open(path) as f:
        table = json.load(f)
    vocab = {}
    for canon, syns in table.items():
        for w in [canon, *syns]:
            vocab[w.lower()] = canon
    return vocab


__all__ = ["chair", "shapes_mentions", "vocabulary_mentions", "load_caption_truth", "load_vocabulary"]
