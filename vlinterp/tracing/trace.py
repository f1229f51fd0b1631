"""Causal tracing (ROME / FCCT) through the adapter's ``edits`` mechanism.

Clean run (sites cached once) -> corrupted runs (Gaussian noise of scale ``noise * std`` added
to the image patch embeddings at ``vision.embed``, one seed per sample) -> patched runs that
restore one component's clean output (``{prefix}blocks.{l}.{component}``) at one layer (or a
window of layers) and one position group. Patched variants run batched: the batch of one is
repeated ``n`` times along dim 0 and each row restores a different (component, layer, group) cell.

Recovery rate ``RR = (P_patch - P_corr) / (P_clean - P_corr)`` with probabilities averaged over
the noise samples; ``ie = P_patch - P_corr`` (indirect effect), ``te = P_clean - P_corr`` (total).
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.errors import LayerRangeError, PromptError, ShapeMismatchError
from ..core.layout import IMAGE
from ..core.result import Result
from ..core.types import Batch
from .groups import position_groups

PREFIX = {"lm": "blocks.", "vision": "vision.blocks."}


def _target_prob_fn(adapter, batch: Batch, target):
    """Return ``(fn(logits) -> P[target] per row, target id, label)``."""
    V = None
    if adapter.family == "llava":
        if isinstance(target, str):
            tid = adapter.token_id(target)
        else:
            tid = int(target)
        last = int(batch.layout.span("last", 0)[0])
        pick = lambda lg: lg[:, last].float().softmax(-1)  # noqa: E731
        V = adapter.config.text_config.vocab_size if hasattr(adapter.config, "text_config") else None
    else:
        names = adapter.class_names() if hasattr(adapter, "class_names") else []
        if isinstance(target, str):
            if target not in names:
                raise PromptError(f"target class {target!r} is not one of this model's classes ({', '.join(names[:8])}...)")
            tid = names.index(target)
        else:
            tid = int(target)
        pick = lambda lg: lg.float().softmax(-1)  # noqa: E731
        V = len(names) or None
    if V is not None and not 0 <= tid < V:
        raise PromptError(f"target id {tid} is not in the vocabulary/classes (0..{V - 1})")
    return (lambda lg: pick(lg)[:, tid]), tid, str(target)


def _repeat(batch: Batch, n: int) -> Batch:
    B = batch.layout.shape[0]
    inputs = {k: (v.repeat(n, *[1] * (v.dim() - 1)) if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == B else v)
              for k, v in batch.inputs.items()}
    return Batch(inputs, {k: l.repeat(n) for k, l in batch.layouts.items()}, batch.main, batch.images, batch.text, dict(batch.meta))


def _resolve_positions(layout, positions, object_mask, object_positions):
    if isinstance(positions, dict):
        groups = {str(k): torch.as_tensor(v, dtype=torch.long).reshape(-1) for k, v in positions.items()}
    elif positions == "groups":
        groups = position_groups(layout, object_mask, object_positions)
        if layout.counts(0)["text"] == 0:  # vision-only stream: drop the (empty) text groups
            groups = {k: v for k, v in groups.items() if "text" not in k and k != "last"}
            groups["cls"] = torch.as_tensor(np.nonzero(layout.modality[0] != IMAGE)[0], dtype=torch.long)
    elif positions == "tokens":
        groups = {f"{p}": torch.tensor([p]) for p in range(layout.shape[1]) if layout.modality[0, p] != 0}
    elif positions == "all":
        groups = {"all": torch.arange(layout.shape[1])}
    else:
        raise ValueError(f"positions must be 'groups', 'tokens', 'all' or a dict of name -> positions, got {positions!r}")
    T = layout.shape[1]
    for k, v in groups.items():
        if v.numel() and (v.min() < 0 or v.max() >= T):
            raise ShapeMismatchError(f"positions of group {k!r} fall outside the sequence (length {T})")
    return groups


class _Plan:
    """Everything shared by the batched and the naive runners."""

    def __init__(self, adapter, batch, target, components, positions, window, noise, samples, seed, object_mask,
                 object_positions, stream, layers):
        if batch.layout.shape[0] != 1:
            raise ShapeMismatchError(f"trace takes a batch of one row, got {batch.layout.shape[0]}")
        if "vision.embed" not in adapter.site_table:
            raise ShapeMismatchError(f"{adapter.family}: no 'vision.embed' site to corrupt")
        self.adapter, self.batch = adapter, batch
        self.stream = stream or adapter.main_stream
        if self.stream not in PREFIX:
            raise ValueError(f"stream must be 'lm' or 'vision', got {self.stream!r}")
        self.prob, self.tid, self.label = _target_prob_fn(adapter, batch, target)
        L = adapter.num_layers(self.stream)
        self.n_layers = L
        self.layers = list(range(L)) if layers is None else [int(l) for l in layers]
        for l in self.layers:
            if not 0 <= l < L:
                raise LayerRangeError(f"layer {l} out of range: stream {self.stream!r} has {L} layers (0..{L - 1})")
        self.components = [components] if isinstance(components, str) else list(components)
        for c in self.components:
            if c not in ("attn", "mlp", "resid"):
                raise ValueError(f"component must be attn, mlp or resid, got {c!r}")
        if int(window) < 1:
            raise LayerRangeError(f"window must be >= 1, got {window}")
        self.window = int(window)
        layout = batch.layouts[self.stream]
        self.layout = layout
        self.groups = _resolve_positions(layout, positions, object_mask, object_positions)
        self.group_names = list(self.groups)
        self.noise, self.samples, self.seed = float(noise), int(samples), int(seed)
        pre = PREFIX[self.stream]
        self.site = lambda c, l: f"{pre}{l}.{c}"  # noqa: E731
        sites = sorted({self.site(c, l) for c in self.components for l in range(L)}) + ["vision.embed"]
        with torch.no_grad():
            out = adapter.run(batch, capture=sites)
        self.clean = {k: v.clone() for k, v in out.cache.items()}
        self.p_clean = float(self.prob(out.logits)[0])
        vl = batch.layouts["vision"]
        emb = self.clean["vision.embed"]
        self.img_mask = torch.as_tensor(vl.modality == IMAGE, device=emb.device)[..., None]  # [Rv, Tv, 1]
        self.std = float(emb[self.img_mask.expand_as(emb)].float().std())
        self.cells = [(ci, li, gi) for ci in range(len(self.components)) for li in range(len(self.layers)) for gi in range(len(self.groups))]

    def window_of(self, l: int) -> list[int]:
        lo = max(0, min(l - self.window // 2, self.n_layers - self.window))
        return list(range(lo, min(self.n_layers, lo + self.window)))

    def noise_for(self, s: int) -> torch.Tensor:
        emb = self.clean["vision.embed"]
        g = torch.Generator().manual_seed(self.seed * 1000003 + s)
        z = torch.randn(tuple(emb.shape), generator=g, dtype=torch.float32).to(emb.device, emb.dtype)
        return z * (self.noise * self.std) * self.img_mask

    def corrupt_edit(self, z: torch.Tensor):
        Rv = z.shape[0]
        return lambda t, layout: t + z.repeat(t.shape[0] // Rv, 1, 1)

    def restore_edits(self, cells: list[tuple[int, int, int]]):
        """Edits restoring, in row ``r`` of the running batch, the clean output for ``cells[r]``."""
        per_site: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for r, (ci, li, gi) in enumerate(cells):
            pos = self.groups[self.group_names[gi]]
            if pos.numel() == 0:
                continue
            for l in self.window_of(self.layers[li]):
                per_site.setdefault(self.site(self.components[ci], l), []).append((r, pos))

        def make(site, items):
            clean = self.clean[site]
            rows_per = clean.shape[0]

            def fn(t, layout):
                t = t.clone()
                for r, pos in items:
                    sl = slice(r * rows_per, (r + 1) * rows_per)
                    p = pos.to(t.device)
                    t[sl, p] = clean[:, p].to(t.dtype)
                return t

            return fn

        return {site: make(site, items) for site, items in per_site.items()}

    def run_rows(self, cells, z) -> np.ndarray:
        """P[target] for each cell (one row per cell, one forward)."""
        n = max(len(cells), 1)
        b = _repeat(self.batch, n) if n > 1 else self.batch
        edits = {"vision.embed": self.corrupt_edit(z)}
        edits.update(self.restore_edits(cells))
        with torch.no_grad():
            out = self.adapter.run(b, edits=edits)
        return self.prob(out.logits).double().cpu().numpy()

    def result(self, p_patch: np.ndarray, p_corr: np.ndarray) -> Result:
        C, L, G = len(self.components), len(self.layers), len(self.groups)
        pp = p_patch.reshape(self.samples, C, L, G).mean(0)
        pc = float(p_corr.mean())
        te = self.p_clean - pc
        ie = pp - pc
        rr = ie / te if abs(te) > 1e-12 else np.zeros_like(ie)
        arrays = {"rr": rr.astype(np.float64), "ie": ie, "p_patch": pp, "p_clean": np.array([self.p_clean]),
                  "p_corrupt": p_corr.astype(np.float64), "te": np.array([te])}
        meta = {"components": self.components, "layers": self.layers, "positions": self.group_names,
                "group_positions": {k: v.tolist() for k, v in self.groups.items()}, "stream": self.stream,
                "target": self.label, "target_id": self.tid, "noise": self.noise, "std": self.std,
                "samples": self.samples, "seed": self.seed, "window": self.window, "te": te}
        return Result("trace", arrays, layout=self.layout, targets=[self.label], meta=meta)


def _plan(adapter, batch, target, components=("resid",), positions="groups", window=1, noise=3.0, samples=3, seed=0,
          object_mask=None, object_positions=None, stream=None, layers=None):
    return _Plan(adapter, batch, target, components, positions, window, noise, samples, seed, object_mask,
                 object_positions, stream, layers)


def trace(adapter, batch: Batch, target, components=("resid",), positions="groups", window: int = 1, noise: float = 3.0,
          samples: int = 3, seed: int = 0, object_mask=None, batch_size: int = 32, object_positions=None,
          stream: str | None = None, layers=None) -> Result:
    """Causal tracing of ``target`` (LLaVA: answer token str/id at ``last``; ViT: class index/name).

    ``components``: any of ``attn``, ``mlp``, ``resid``; ``positions``: ``"groups"`` (FCCT groups,
    see :mod:`vlinterp.tracing.groups`), ``"tokens"`` (every non-pad position), ``"all"`` or a dict
    ``{name: positions}``; ``window``: consecutive layers restored around each layer; ``noise``:
    noise scale in units of the patch embeddings' std; ``stream``: ``lm`` (LLaVA language model,
    default there) or ``vision`` (vision tower); ``batch_size``: patched rows per forward.
    Returns a :class:`Result` with ``rr``, ``ie``, ``p_patch`` ``[n_components, n_layers, n_positions]``,
    ``p_clean`` ``[1]``, ``p_corrupt`` ``[samples]``, ``te`` ``[1]``."""
    plan = _plan(adapter, batch, target, components, positions, window, noise, samples, seed, object_mask, object_positions, stream, layers)
    bs = max(1, int(batch_size))
    p_corr, p_patch = [], []
    for s in range(plan.samples):
        z = plan.noise_for(s)
        p_corr.append(plan.run_rows([], z)[0])
        for k in range(0, len(plan.cells), bs):
            p_patch.append(plan.run_rows(plan.cells[k:k + bs], z))
    return plan.result(np.concatenate(p_patch) if p_patch else np.zeros(0), np.array(p_corr))


def trace_naive(adapter, batch: Batch, target, components=("resid",), positions="groups", window: int = 1, noise: float = 3.0,
                samples: int = 3, seed: int = 0, object_mask=None, object_positions=None, stream: str | None = None,
                layers=None) -> Result:
    """Same as :func:`trace`, one forward per (sample, cell): the reference for tests and benchmarks."""
    plan = _plan(adapter, batch, target, components, positions, window, noise, samples, seed, object_mask, object_positions, stream, layers)
    p_corr, p_patch = [], []
    for s in range(plan.samples):
        z = plan.noise_for(s)
        p_corr.append(plan.run_rows([], z)[0])
        for cell in plan.cells:
            p_patch.append(plan.run_rows([cell], z)[0])
    return plan.result(np.array(p_patch), np.array(p_corr))


__all__ = ["trace", "trace_naive"]
