"""Edit helpers the steering methods share: the last-prompt-position index (found once per layout)
and a norm-scaled direction edit. The interface itself is :mod:`.base`."""
from __future__ import annotations

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


__all__ = ["last_index", "last_position", "add_direction"]
