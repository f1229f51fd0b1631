"""Audit items: one piece of content (a context and a question with its answer), optionally with an
image, from the shapes world or from a user JSON-lines file."""
from __future__ import annotations

from dataclasses import dataclass, field

@dataclass
class AuditItem:
    """``context``: the content in words; ``image``: a PIL picture of it (or None); ``scene``: the
    shapes scene behind it (ground truth, mixed renderings); ``candidates``: answer words to choose
    from (None: free generation, normalised)."""

    id: str
    context: str
    question: str
    answer: str
    image: object = None
    scene: object = None
    candidates: list | None = None
    meta: dict = field(default_factory=dict)


def shapes_items(n: int = 64, seed: int = 0, split: str = "test") -> list[AuditItem]:
    """``n`` held-out scenes, one question each, cycling presence (yes / random no), colour, count."""
    from ..data.questions import count_questions, negatives, presence_question
    from ..data.renderings import as_text
    from ..data.shapes import COLOURS, NUM_WORDS, make_split, scene_rng

    out = []
    for s in make_split(split, n, seed):
        rng = scene_rng(split, seed, s.index, 31)
        kind = s.index % 3
        uniq = [o for o in s.objects if s.count(o.shape) == 1]
        if kind == 1 and uniq:
            o = uniq[int(rng.integers(len(uniq)))]
            q, a, c, k = f"what color is the {o.shape}?", o.colour, list(COLOURS), "colour"
        elif kind == 2:
            cq = count_questions(s, rng)
            qa = cq[int(rng.integers(len(cq)))]
            q, a, c, k = qa.question, qa.answer, list(NUM_WORDS), "count"
        else:
            if s.index % 2 == 0:
                o = s.objects[int(rng.integers(len(s.objects)))]
                pair, a = (o.colour, o.shape), "yes"
            else:
                pair, a = negatives(s, rng, "random", 1)[0], "no"
            q, c, k = presence_question(*pair), ["yes", "no"], "presence"
        out.append(AuditItem(f"{split}-{seed}-{s.index}", as_text(s), q, a, s.pil(), s, c, {"kind": k}))
    return out


def load_items(path: str, image_dir: str | None = None) -> list[AuditItem]:
    """Items from a JSON-lines file ``{"id", "context", "question", "answer", "image"?, "candidates"?}``.
    A malformed line (not JSON, a missing field, an unreadable image, candidates that are not a
    list) stops with :class:`~vlinterp.core.errors.DataError` naming ``path:line``, as every
    dataset reader of vlinterp does."""
    from ..core.errors import DataError
    from ..data.jsonl import read_jsonl

    items = []
    for k, (d, img) in enumerate(read_jsonl(path, ("id", "context", "question", "answer"), image_dir)):
        cands = d.get("candidates")
        if cands is not None and not isinstance(cands, list):
            raise DataError(f"{path}: item {d['id']}: candidates must be a list of answer words, got {cands!r}")
        items.append(AuditItem(str(d["id"]), str(d["context"]), str(d["question"]), str(d["answer"]), img, None,
                               [str(c) for c in cands] if cands else None, {"kind": d.get("kind", "user")}))
    return items


__all__ = ["AuditItem", "shapes_items", "load_items"]
