"""CHAIR (Caption Hallucination Assessment with Image Relevance) on free captions.

``CHAIR_I`` = hallucinated object mentions / all object mentions; ``CHAIR_S`` = captions with at
least one hallucinated mention / all captions. Two ways to find the objects a caption names, both
given by the caller (the metric knows no dataset):

* ``vocabulary`` = ``{word or phrase: canonical object}`` (synonyms included; COCO-style), with
  each image's truth a set of canonical objects;
* ``nouns`` + ``attributes`` (the shapes world: shape words and colour words): a mention is
  ``"<attribute> <noun>[s]"`` (checked against the image's ``(attribute, noun)`` pairs) or a bare
  noun (checked against the nouns present), each image's truth a set of ``(attribute, noun)`` pairs.
"""
from __future__ import annotations

import re
from typing import Collection, Iterable

from ..core.errors import ConfigError


def attribute_mentions(caption: str, nouns: Collection[str], attributes: Collection[str]) -> list[tuple[str | None, str]]:
    """``(attribute or None, noun)`` per object mention in ``caption`` (a noun, or its plural in
    ``s``, optionally right after an attribute word)."""
    words = re.findall(r"[a-z]+", caption.lower())
    out = []
    for i, w in enumerate(words):
        noun = w[:-1] if w.endswith("s") and w[:-1] in nouns else w if w in nouns else None
        if noun is None:
            continue
        attr = words[i - 1] if i > 0 and words[i - 1] in attributes else None
        out.append((attr, noun))
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


def chair(captions: list[str], truths: Iterable, vocabulary: dict[str, str] | None = None,
          nouns: Collection[str] | None = None, attributes: Collection[str] = ()) -> dict[str, float]:
    """``truths[i]``: with ``vocabulary``, the set of canonical objects in image ``i``; with ``nouns``
    (and ``attributes``), the set of ``(attribute, noun)`` pairs in it. Returns ``chair_s``,
    ``chair_i``, ``mentions`` (per caption, mean) and ``coverage``: the share of each image's distinct
    objects the caption names (mean over captions; a caption can lower CHAIR by naming fewer objects
    or repeating one, and coverage shows it). With nouns, a bare noun names every pair of that noun."""
    if (vocabulary is None) == (nouns is None):
        raise ConfigError("chair needs exactly one of vocabulary= (phrase -> object) or nouns= (with attributes=)")
    if nouns is not None:
        nouns, attributes = frozenset(nouns), frozenset(attributes)
    n_caps = n_bad_caps = n_ment = n_bad = 0
    cover = 0.0
    for cap, truth in zip(captions, truths):
        if nouns is not None:
            pairs = {tuple(p) for p in truth}
            present = {n for _, n in pairs}
            ments = attribute_mentions(cap, nouns, attributes)
            bad = [m for m in ments if (m not in pairs if m[0] is not None else m[1] not in present)]
            named = {m for m in ments if m[0] is not None} | {p for p in pairs if (None, p[1]) in ments}
            cover += len(pairs & named) / max(1, len(pairs))
        else:
            truth = set(truth)
            ments = vocabulary_mentions(cap, vocabulary)
            bad = [m for m in ments if m not in truth]
            cover += len(truth & set(ments)) / max(1, len(truth))
        n_caps += 1
        n_ment += len(ments)
        n_bad += len(bad)
        n_bad_caps += bool(bad)
    return {"chair_s": n_bad_caps / max(1, n_caps), "chair_i": n_bad / max(1, n_ment), "mentions": n_ment / max(1, n_caps),
            "coverage": cover / max(1, n_caps)}


__all__ = ["chair", "attribute_mentions", "vocabulary_mentions"]
