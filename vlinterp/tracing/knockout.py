"""Attention knockout ("Map the Flow"): block the attention edges from one token group to another
over a window of layers and measure what the answer loses.

A knockout of edge ``FROM -> TO`` at layer ``l`` forbids every query position of ``TO`` to attend
to any key position of ``FROM`` in the attention of layer ``l`` (a token's edge to itself is never
blocked, so no query is left with nothing to attend to). It is done on the attention mask each
chosen layer receives: a pre-hook (through the adapter's :meth:`~vlinterp.adapters.base.Adapter.raw_hooks`)
replaces the layer's ``attention_mask`` by the one the model would use (the layer's own 4-D mask,
or the causal mask when the kernel runs without one, as sdpa does) with the blocked entries set to
"never" (``False`` in a boolean mask, the dtype's minimum in an additive one). Whatever kernel reads
the mask (sdpa, eager) then computes the knocked-out attention; nothing else changes.

Cells run batched as in tracing: the one-row batch is repeated ``n`` times and row ``r`` blocks its
own (edge, window), so a forward serves ``batch_size`` cells.

Groups (:func:`knockout_groups`): ``image`` (every image token), ``object`` (the object's patches:
needs an object mask), ``question`` (text after the first image token, ``last`` excluded),
``text`` (every non-image, non-padding token but ``last``), ``last``, and the seven FCCT groups of
:mod:`vlinterp.tracing.groups`. Windows: the cell of layer ``l`` blocks the layers
:func:`~vlinterp.tracing.trace.window_layers` gives (ROME's centred window, or ``slide``).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import ConfigError, LayerRangeError, ShapeMismatchError, UnknownNameError, UnsupportedError
from ..core.layout import IMAGE, PAD
from ..core.result import Result
from ..core.types import Batch
from .groups import GROUPS, position_groups
from .trace import WINDOW_MODES, _target, window_layers

KNOCKOUT_GROUPS = ("image", "object", "question", "text", "last") + tuple(g for g in GROUPS if g != "last")
DEFAULT_EDGES = ("image:last", "image:question", "question:last", "object:last")


def parse_edges(spec) -> list[tuple[str, str]]:
    """``"image:last,question:last"`` or a list of ``"FROM:TO"`` (or ``"FROM>TO"``) / ``(FROM, TO)`` ->
    ``[(FROM, TO)]``, names checked against :data:`KNOCKOUT_GROUPS`."""
    parts = [p.strip() for p in spec.split(",") if p.strip()] if isinstance(spec, str) else list(spec)
    if not parts:
        raise ConfigError("no knockout edge given (FROM:TO, e.g. image:last)")
    out = []
    for p in parts:
        if isinstance(p, str):
            bits = p.replace(">", ":").split(":")
            a, b = (bits + [""])[:2] if len(bits) == 2 else ("", "")
        else:
            a, b = (tuple(p) + ("", ""))[:2] if len(p) == 2 else ("", "")
        if not a or not b:
            raise ConfigError(f"knockout edge {p!r} is not FROM:TO (e.g. image:last; FROM>TO inside a method spec)")
        for g in (a, b):
            if g not in KNOCKOUT_GROUPS:
                raise UnknownNameError("knockout group", g, KNOCKOUT_GROUPS)
        out.append((a, b))
    return out


def knockout_groups(layout, object_mask=None, object_positions=None, row: int = 0) -> dict[str, torch.Tensor]:
    """``{group: LongTensor positions}`` of the language-model sequence (see the module doc)."""
    g = position_groups(layout, object_mask, object_positions, row)
    mod = layout.modality[row]
    T = len(mod)
    img = np.nonzero(mod == IMAGE)[0]
    last = set(g["last"].tolist())
    text = np.array([p for p in range(T) if mod[p] not in (IMAGE, PAD) and p not in last], np.int64)
    first = int(img.min()) if len(img) else -1
    g.update({"image": torch.as_tensor(img, dtype=torch.long), "object": g["object-visual"],
              "question": torch.as_tensor(text[text > first], dtype=torch.long),
              "text": torch.as_tensor(text, dtype=torch.long)})
    return {k: g[k] for k in KNOCKOUT_GROUPS}


def _full_mask(module, kwargs, h: torch.Tensor) -> torch.Tensor:
    """The mask the layer applies, as a tensor ``[n, 1|H, T, Tk]`` (bool: True = attend, or additive)."""
    m = kwargs.get("attention_mask")
    n, T = h.shape[0], h.shape[1]
    if m is None:  # the kernel masks by itself: causal (decoders) or nothing
        keep = torch.ones(T, T, dtype=torch.bool, device=h.device)
        if getattr(module, "is_causal", True):
            keep = keep.tril()
        return keep.expand(n, 1, T, T).clone()
    if not isinstance(m, torch.Tensor) or m.dim() != 4:
        raise UnsupportedError(f"attention knockout needs a 4-D attention mask or none; this layer got {type(m).__name__}"
                               + (f" of shape {tuple(m.shape)}" if isinstance(m, torch.Tensor) else ""))
    return m.expand(n, *m.shape[1:]).clone()


def block(mask: torch.Tensor, rows, to_pos: torch.Tensor, from_pos: torch.Tensor) -> torch.Tensor:
    """``mask`` (``[n, h, Tq, Tk]``, bool or additive) with query ``to_pos`` -> key ``from_pos`` set to
    "never" in ``rows``; the diagonal is kept. Modified in place and returned."""
    if not len(to_pos) or not len(from_pos):
        return mask
    never = False if mask.dtype == torch.bool else torch.finfo(mask.dtype).min
    q, k = to_pos.to(mask.device), from_pos.to(mask.device)
    off = q[:, None] != k[None, :]  # [|to|, |from|]
    for r in rows:
        sub = mask[r][:, q][:, :, k]  # [h, |to|, |from|]
        mask[r][:, q[:, None], k[None, :]] = torch.where(off, torch.as_tensor(never, dtype=mask.dtype, device=mask.device), sub)
    return mask


def knockout_hooks(hooks, adapter, plan: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]]) -> None:
    """Install on ``hooks`` (a :class:`~vlinterp.core.hooks.RawHooks`) the mask edits of ``plan``:
    ``{layer: [(row, to positions, from positions), ...]}`` of the language model."""
    sites = adapter.attention_sites("lm")

    def make(items):
        def pre(module, args, kwargs):
            h = kwargs.get("hidden_states", args[0] if args else None)
            if "attention_mask" not in kwargs:
                raise UnsupportedError(f"{adapter.family}: the attention layers do not take attention_mask by keyword")
            mask = _full_mask(module, kwargs, h)
            if mask.shape[-2] != h.shape[1]:
                raise ShapeMismatchError(f"attention mask covers {mask.shape[-2]} queries, the layer runs {h.shape[1]}")
            for r, to_pos, from_pos in items:
                block(mask, [r], to_pos, from_pos)
            return args, {**kwargs, "attention_mask": mask}

        return pre

    for layer, items in plan.items():
        hooks.pre(sites[layer], make(items), with_kwargs=True)


def knockout(adapter, batch: Batch, target, edges=DEFAULT_EDGES, window: int = 1, layers=None, object_mask=None,
             object_positions=None, batch_size: int = 32, window_mode: str = "rome", progress: bool = False) -> Result:
    """Attention knockout of each edge over each layer window of the language model.

    ``edges``: ``FROM:TO`` specs (:func:`parse_edges`); ``window``: layers blocked around each layer
    (ROME's centred window, ``window_mode`` as in :func:`~vlinterp.tracing.trace`); ``layers``: the
    window centres (default every layer); ``object_mask`` / ``object_positions``: the ``object`` and
    ``text-object`` groups (see :func:`~vlinterp.tracing.groups.position_groups`).

    Returns a :class:`Result` ``"knockout"`` with ``p`` ``[E, L]`` (P[target] at ``last`` with the edge
    blocked), ``drop`` ``[E, L]`` (relative drop ``(P_clean - p) / P_clean``), ``p_clean`` ``[1]``, and in
    ``meta`` the edges, the layers, each window's blocked layers and the group positions. An edge
    whose groups are empty blocks nothing (its ``p`` is ``P_clean``)."""
    if adapter.kind != "vlm":
        raise UnsupportedError(f"attention knockout runs on VLM language models, not {adapter.kind} models")
    if batch.layout.shape[0] != 1:
        raise ShapeMismatchError(f"knockout takes a batch of one row, got {batch.layout.shape[0]}")
    pairs = parse_edges(edges)
    if int(window) < 1:
        raise LayerRangeError(f"window must be >= 1, got {window}")
    if window_mode not in WINDOW_MODES:
        raise ConfigError(f"window_mode must be one of {', '.join(WINDOW_MODES)}, got {window_mode!r}")
    tid, last, label = _target(adapter, batch, target)
    L = adapter.num_layers("lm")
    layers = list(range(L)) if layers is None else [int(l) for l in layers]
    for l in layers:
        if not 0 <= l < L:
            raise LayerRangeError(f"layer {l} out of range: the language model has {L} layers (0..{L - 1})")
    layout = batch.layouts["lm"]
    if "object" in {g for p in pairs for g in p} and object_mask is None:
        raise ConfigError("the 'object' group needs an object mask or box")
    groups = knockout_groups(layout, object_mask, object_positions)
    wins = [window_layers(l, int(window), L, window_mode) for l in layers]

    def prob(logits):
        return logits[:, last].float().softmax(-1)[:, tid].double().cpu().numpy()

    with torch.no_grad():
        p_clean = float(prob(adapter.run(batch).logits)[0])
    cells = [(e, w) for e in range(len(pairs)) for w in range(len(wins))]
    p = np.full((len(pairs), len(wins)), p_clean)
    live = [c for c in cells if len(groups[pairs[c[0]][0]]) and len(groups[pairs[c[0]][1]])]
    bs = max(1, int(batch_size))
    chunks = [live[i:i + bs] for i in range(0, len(live), bs)]
    for chunk in tqdm(chunks, desc="knockout", disable=not progress):
        plan: dict[int, list] = {}
        for r, (e, w) in enumerate(chunk):
            src, dst = pairs[e]
            for l in wins[w]:
                plan.setdefault(l, []).append((r, groups[dst], groups[src]))
        with adapter.raw_hooks() as h, torch.no_grad():
            knockout_hooks(h, adapter, plan)
            out = prob(adapter.run(batch.repeat(len(chunk))).logits)
        for r, (e, w) in enumerate(chunk):
            p[e, w] = out[r]
    drop = (p_clean - p) / p_clean if p_clean > 0 else np.zeros_like(p)
    meta = {"edges": [f"{a}:{b}" for a, b in pairs], "layers": layers, "windows": wins, "window": int(window),
            "window_mode": window_mode, "target": label, "target_id": tid,
            "group_positions": {k: v.tolist() for k, v in groups.items()}}
    return Result("knockout", {"p": p, "drop": drop, "p_clean": np.array([p_clean])}, layout=layout, targets=[label], meta=meta)


__all__ = ["knockout", "knockout_groups", "knockout_hooks", "parse_edges", "block", "KNOCKOUT_GROUPS", "DEFAULT_EDGES"]
