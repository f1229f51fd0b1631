"""The model's answers to a list of items, in the order given, and their per-group scores.

:func:`answer` answers each run of consecutive items with the same ``meta["candidates"]`` by
:func:`~vlinterp.metrics.pope.choose` (batches of 32 within the run) and items without candidates
(captions, open questions) by greedy generation of their prompt. The batching depends only on the
order, so the same list always gives the same numbers. :func:`group_scores` scores answers by
group: yes/no items by their ``meta["neg_type"]`` (``presence`` without one), items with other
candidates by accuracy per ``kind``. Edits active around the call (steering) apply.
"""
from __future__ import annotations

from .pope import choose, yes_no_scores


def _candidates(item):
    c = item.meta.get("candidates")
    return tuple(c) if c else None


def captions(adapter, images, prompt: str = "describe the image.", max_new_tokens: int = 24, batch_size: int = 32,
             progress=None) -> list[str]:
    """Greedy free text for ``images`` (PIL or ``None``) under ``prompt``, ``batch_size`` per generate."""
    out = []
    for i in range(0, len(images), batch_size):
        chunk = list(images[i:i + batch_size])
        b = adapter.prepare(images=None if chunk[0] is None else chunk, text=[prompt] * len(chunk))
        out += adapter.generate(b, max_new_tokens=max_new_tokens).texts
        if progress is not None:
            progress.update(len(chunk))
    return out


def answer(adapter, items, max_new_tokens: int = 24, batch_size: int = 32, progress=None) -> list[str]:
    """One answer string per item (see the module docstring). ``progress``: a tqdm-like bar."""
    out: list[str] = []
    i = 0
    while i < len(items):
        cand = _candidates(items[i])
        j = i + 1
        while j < len(items) and _candidates(items[j]) == cand and (cand is not None or items[j].prompt == items[i].prompt):
            j += 1
        run = items[i:j]
        if cand is None:
            out += captions(adapter, [it.image for it in run], run[0].prompt, max_new_tokens, batch_size, progress)
        else:
            out += choose(adapter, run, list(cand), batch_size, progress)
        i = j
    return out


def group_of(item) -> str | None:
    """The score group of an item with candidates: its negative type for yes/no items, else its kind."""
    cand = _candidates(item)
    if cand is None:
        return None
    if set(cand) == {"yes", "no"}:
        return item.meta.get("neg_type") or "presence"
    return item.kind or "answers"


def group_scores(items, preds) -> dict:
    """``{group: yes/no scores}`` for yes/no groups and ``{group: accuracy}`` for the others, groups in
    order of first appearance; items without candidates are left out."""
    groups: dict[str, list] = {}
    for it, p in zip(items, preds):
        g = group_of(it)
        if g is not None:
            groups.setdefault(g, []).append((p, it.answer, set(_candidates(it)) == {"yes", "no"}))
    out = {}
    for g, rows in groups.items():
        if rows[0][2]:
            out[g] = yes_no_scores([p for p, _, _ in rows], [a for _, a, _ in rows])
        else:
            out[g] = sum(p == a for p, a, _ in rows) / max(1, len(rows))
    return out


__all__ = ["answer", "captions", "group_of", "group_scores"]
