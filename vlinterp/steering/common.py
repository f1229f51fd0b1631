"""What the steering methods share: the last-prompt-position index, a norm-scaled direction edit,
the ``applied`` / ``generate`` pair, and saving vectors as safetensors + JSON, atomically."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import weakref

import torch


_LAST: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # layout -> {B: (index [B], shared position or None)}


def _last(B: int, layout) -> tuple[torch.Tensor, int | None]:
    per = _LAST.get(layout)
    if per is None:
        per = _LAST[layout] = {}
    if B not in per:
        rows = layout.shape[0]
        idx = torch.tensor([int(layout.span("last", r % rows)[0]) for r in range(B)], dtype=torch.long)
        per[B] = (idx, int(idx[0]) if bool((idx == idx[0]).all()) else None)
    return per[B]


def last_index(t: torch.Tensor, layout) -> torch.Tensor:
    """Position of the last prompt token per row of ``t`` ``[B, T, D]`` (``T == 1``: decoding);
    computed once per layout and batch size (the hooks of every layer ask for it)."""
    B, T = t.shape[:2]
    if T == 1 or layout is None or layout.shape[1] != T:
        return torch.full((B,), T - 1, dtype=torch.long)
    return _last(B, layout)[0]


def last_position(t: torch.Tensor, layout) -> int | None:
    """The last prompt position when every row of ``t`` ``[B, T, D]`` shares it (left padding,
    one row, decoding), so ``t[:, j]`` is a view and no gather is needed; else ``None``."""
    B, T = t.shape[:2]
    if T == 1 or layout is None or layout.shape[1] != T:
        return T - 1
    return _last(B, layout)[1]


def add_direction(direction: torch.Tensor, alpha: float, positions: str = "last"):
    """Edit adding ``alpha * |h| * direction`` (``direction`` a unit ``[D]`` vector) to the state at
    the last prompt position (each decoding step's new token included) or at every position."""

    def fn(t, layout):
        d = direction.to(t.device, t.dtype)
        if positions == "all" or t.shape[1] == 1:
            return t + alpha * torch.linalg.vector_norm(t, dim=-1, keepdim=True) * d
        rows = torch.arange(t.shape[0], device=t.device)
        idx = last_index(t, layout).to(t.device)
        t = t.clone()
        x = t[rows, idx]
        t[rows, idx] = x + alpha * torch.linalg.vector_norm(x, dim=-1, keepdim=True) * d
        return t

    return fn


class Steerer:
    """Mixin: a subclass provides ``edits(adapter, strength=None) -> {site: fn}`` (its strength
    parameter may have its own name: IRI's ``lam``, MeanDiff's and SAVE's ``alpha``)."""

    @contextlib.contextmanager
    def applied(self, adapter, *strength, **named):
        """Steer every run/generate of ``adapter`` inside the block (strength as for ``edits``)."""
        with adapter.edits(self.edits(adapter, *strength, **named)):
            yield adapter

    def generate(self, adapter, batch, strength: float | None = None, **kw):
        """``adapter.generate(batch, **kw)`` with the steering on at every decoding step."""
        with self.applied(adapter, strength):
            return adapter.generate(batch, **kw)


def select_alpha(steerer, adapter, alphas, n: int, split: str, seed: int, max_drop: float = 0.01) -> float:
    """Set ``steerer.alpha`` to the grid value of ``alphas`` with the lowest POPE-adversarial false-yes
    rate on ``n`` questions of ``split``/``seed`` whose random-POPE, colour and count accuracies each
    drop by at most ``max_drop`` (0 when none qualifies); the grid's numbers go to ``steerer.meta``."""
    from ..commands.steer import evaluate

    def summary(r):
        return {"false_yes": r["adversarial"]["false_yes"], "random": r["random"]["accuracy"], "colour": r["colour"],
                "count": r["count"]}

    base = summary(evaluate(adapter, None, n, seed, split=split))
    grid, best = {}, (base["false_yes"], 0.0)
    for a in alphas:
        with steerer.applied(adapter, a):
            r = summary(evaluate(adapter, None, n, seed, split=split))
        grid[str(a)] = r
        ok = all(r[k] >= base[k] - max_drop for k in ("random", "colour", "count"))
        if ok and r["false_yes"] < best[0]:
            best = (r["false_yes"], float(a))
    steerer.alpha = best[1]
    steerer.meta.update({"alpha_grid": grid, "alpha_base": base, "alpha_split": [split, seed]})
    return steerer.alpha


def _base(path: str) -> str:
    return path[: -len(".safetensors")] if path.endswith(".safetensors") else path


def save_tensors(path: str, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """``path`` (``.safetensors``) + the same name with ``.json`` (``info``), each written atomically."""
    from safetensors.torch import save_file

    from ..viz.overlay import write_bytes_atomic

    base = _base(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(base)), prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, base + ".safetensors")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    write_bytes_atomic(base + ".json", json.dumps(info).encode())


def load_tensors(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    base = _base(path)
    with open(base + ".json") as f:
        return load_file(base + ".safetensors"), json.load(f)


__all__ = ["last_index", "last_position", "add_direction", "Steerer", "select_alpha", "save_tensors", "load_tensors"]
