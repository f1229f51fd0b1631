"""Audit items: one piece of content (a context and a question with its answer), optionally with an
image, from any dataset (:mod:`vlinterp.eval.datasets`): the shapes world's ``audit`` questions,
POPE / JSON lines / HF questions, or COCO scenes asked one question each."""
from __future__ import annotations

from dataclasses import dataclass, field

WANTED = ("audit",)  # what `vlinterp audit --dataset` reads (other data: what it holds)


@dataclass
class AuditItem:
    """``context``: the content in words; ``image``: a PIL picture of it (or None); ``scene``: the
    shapes scene behind it, rebuilt from the item's objects (ground truth, mixed renderings);
    ``candidates``: answer words to choose from (None: free generation, normalised)."""

    id: str
    context: str
    question: str
    answer: str
    image: object = None
    scene: object = None
    candidates: list | None = None
    meta: dict = field(default_factory=dict)


def audit_items_from(items, seed: int = 0) -> list[AuditItem]:
    """Audit items from dataset items. Scene items (an image and objects, no prompt) are asked one
    question each (:func:`vlinterp.eval.scene_questions.derive`, kind ``audit``, drawn with
    ``seed``). The context is ``meta["context"]`` (a user's JSON lines) or, for shapes scenes, the
    objects in words; candidates ``meta["candidates"]``. A record without a question, an answer or a
    context stops with :class:`~vlinterp.core.errors.DataError` naming it."""
    from ..core.errors import DataError
    from ..data.renderings import as_text
    from ..eval.scene_questions import derive, scene_view

    if items and all(it.prompt is None and it.objects for it in items):
        items = derive(items, ("audit",), seed)
    out = []
    for i, it in enumerate(items):
        for what, v in (("question", it.prompt), ("answer", it.answer)):
            if v is None or not str(v).strip():
                raise DataError(f"{it.where()}: missing {what} (an audit item needs a question and its answer)")
        view = scene_view(it, i)
        context = it.meta.get("context") or (as_text(view) if view is not None else None)
        if not context:
            raise DataError(f"{it.where()}: missing context (the content in words; shapes scenes have it from their objects)")
        cands = it.meta.get("candidates")
        if cands is not None and not isinstance(cands, (list, tuple)):
            raise DataError(f"{it.where()}: candidates must be a list of answer words, got {cands!r}")
        out.append(AuditItem(str(it.id), str(context), str(it.prompt), str(it.answer), it.image, view,
                             [str(c) for c in cands] if cands else None, {"kind": it.kind or "user"}))
    return out


def shapes_items(n: int = 64, seed: int = 0, split: str = "test") -> list[AuditItem]:
    """``n`` held-out scenes, one question each, cycling presence (yes / random no), colour, count
    (:func:`vlinterp.eval.shapes.audit_items`)."""
    from ..eval.datasets import open_dataset

    return audit_items_from(open_dataset(f"shapes:{split}:{n}:{seed}:audit").items())


def load_items(path: str, image_dir: str | None = None) -> list[AuditItem]:
    """Items from a JSON-lines file ``{"id", "context", "question", "answer", "image"?, "candidates"?}``.
    A malformed line (not JSON, a missing field, an unreadable image, candidates that are not a
    list) stops with :class:`~vlinterp.core.errors.DataError` naming ``path:line``, as every
    dataset reader of vlinterp does."""
    from ..eval.datasets import open_dataset

    return audit_items_from(open_dataset(f"jsonl:{path}", images=image_dir).items())


__all__ = ["AuditItem", "WANTED", "audit_items_from", "shapes_items", "load_items"]
