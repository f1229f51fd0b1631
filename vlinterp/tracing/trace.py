"""Causal tracing (ROME / FCCT) through the adapter's ``edits`` mechanism.

Clean run (sites cached once) -> corrupted runs (by default Gaussian noise of scale
``noise * std`` added to the image patch embeddings at ``vision.embed``, one seed per sample;
pixel noise, blur, a second image or text-token noise through :mod:`.corrupt`) -> patched runs that
restore one component's clean output (``{prefix}blocks.{l}.{component}``) at one layer (or a
window of layers) and one position group. Patched variants run batched: the batch of one is
repeated ``n`` times along dim 0 and each row restores a different (component, layer, group) cell.

Recovery rate ``RR = (P_patch - P_corr) / (P_clean - P_corr)`` with probabilities averaged over
the noise samples; ``ie = P_patch - P_corr`` (indirect effect), ``te = P_clean - P_corr`` (total).
On a language model, cells that restore only the last layer at positions other than the last are
not run: nothing reads them, so their ``ie`` is exactly 0 (run, it would be rounding noise, ~1e-8).

Windows (``window=W``): the cell of layer ``l`` restores layers ``[l - W//2, l + ceil(W/2))``
clipped to the model's layers, as ROME's ``trace_important_window`` does (``window_mode="rome"``,
the default): at the first and last layers the window is cut short, so the edge cells restore
fewer layers. ``window_mode="slide"`` keeps ``W`` layers everywhere by sliding the window inward
at the edges (``[0, W)`` at the start, ``[L - W, L)`` at the end); the two differ only at the
``W//2`` first and ``ceil(W/2) - 1`` last layers.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import ConfigError, LayerRangeError, PromptError, ShapeMismatchError
from ..core.layout import IMAGE
from ..core.result import Result
from ..core.types import Batch
from .corrupt import make_corruption
from .groups import position_groups
from .resume import LMResumer, supports

PREFIX = {"lm": "blocks.", "vision": "vision.blocks."}
COMPONENTS = ("attn", "mlp", "resid")
WINDOW_MODES = ("rome", "slide")


def window_layers(l: int, window: int, n_layers: int, mode: str = "rome") -> list[int]:
    """The layers the cell of layer ``l`` restores (see the module doc)."""
    if mode == "rome":
        return list(range(max(0, l - window // 2), min(n_layers, l - (-window // 2))))
    if mode == "slide":
        lo = max(0, min(l - window // 2, n_layers - window))
        return list(range(lo, min(n_layers, lo + window)))
    raise ConfigError(f"window_mode must be one of {', '.join(WINDOW_MODES)}, got {mode!r}")


def _target(adapter, batch: Batch, target):
    """``(target id, last position or None, label)``; raises :class:`PromptError` for a target
    that is not a single vocabulary token / class."""
    if adapter.kind == "vlm":
        tid = adapter.token_id(target) if isinstance(target, str) else int(target)
        last = int(batch.layout.span("last", 0)[0])
        V = adapter.config.text_config.vocab_size if hasattr(adapter.config, "text_config") else None
    else:
        names = adapter.class_names() if hasattr(adapter, "class_names") else []
        if isinstance(target, str):
            if target not in names:
                raise PromptError(f"target class {target!r} is not one of this model's classes ({', '.join(names[:8])}...)")
            tid = names.index(target)
        else:
            tid = int(target)
        last, V = None, len(names) or None
    if V is not None and not 0 <= tid < V:
        raise PromptError(f"target id {tid} is not in the vocabulary/classes (0..{V - 1})")
    return tid, last, str(target)


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
        raise ConfigError(f"positions must be 'groups', 'tokens', 'all' or a dict of name -> positions, got {positions!r}")
    T = layout.shape[1]
    for k, v in groups.items():
        if v.numel() and (v.min() < 0 or v.max() >= T):
            raise ShapeMismatchError(f"positions of group {k!r} fall outside the sequence (length {T})")
    return groups


class _Plan:
    """Everything shared by the batched and the naive runners."""

    def __init__(self, adapter, batch, target, components="resid", positions="groups", window=1, noise=3.0, samples=3,
                 seed=0, object_mask=None, object_positions=None, stream=None, layers=None, corruption=None,
                 resume=True, window_mode="rome"):
        if batch.layout.shape[0] != 1:
            raise ShapeMismatchError(f"trace takes a batch of one row, got {batch.layout.shape[0]}")
        if "vision.embed" not in adapter.site_table:
            raise ShapeMismatchError(f"{adapter.family}: no 'vision.embed' site to corrupt")
        self.adapter, self.batch = adapter, batch
        self.stream = stream or adapter.main_stream
        if self.stream not in PREFIX:
            raise ConfigError(f"stream must be 'lm' or 'vision', got {self.stream!r}")
        self.tid, self.last, self.label = _target(adapter, batch, target)
        L = adapter.num_layers(self.stream)
        self.n_layers = L
        self.layers = list(range(L)) if layers is None else [int(l) for l in layers]
        for l in self.layers:
            if not 0 <= l < L:
                raise LayerRangeError(f"layer {l} out of range: stream {self.stream!r} has {L} layers (0..{L - 1})")
        self.components = [components] if isinstance(components, str) else list(components)
        for c in self.components:
            if c not in COMPONENTS:
                from ..core.errors import UnknownNameError

                raise UnknownNameError("trace component", c, COMPONENTS)
        if int(window) < 1:
            raise LayerRangeError(f"window must be >= 1, got {window}")
        if window_mode not in WINDOW_MODES:
            raise ConfigError(f"window_mode must be one of {', '.join(WINDOW_MODES)}, got {window_mode!r}")
        self.window, self.window_mode = int(window), window_mode
        self.layout = batch.layouts[self.stream]
        self.groups = _resolve_positions(self.layout, positions, object_mask, object_positions)
        self.group_names = list(self.groups)
        self.corruption = make_corruption(corruption, noise)
        self.samples = int(samples) if self.corruption.stochastic else 1
        if self.samples < 1:
            raise ConfigError(f"samples must be >= 1, got {samples}")
        self.seed = int(seed)
        pre = PREFIX[self.stream]
        self.site = lambda c, l: f"{pre}{l}.{c}"  # noqa: E731
        sites = sorted({self.site(c, l) for c in self.components for l in range(L)}) + ["vision.embed"]
        sites += ["embed"] if "embed" in adapter.site_table else []
        with torch.no_grad():
            out = adapter.run(batch, capture=sites)
        self.clean = {k: v.clone() for k, v in out.cache.items()}
        self.p_clean = float(self.prob(out.logits)[0])
        self.resumer = LMResumer(adapter) if resume and supports(adapter, self.stream) else None
        self.cells = [(ci, li, gi) for ci in range(len(self.components)) for li in range(len(self.layers)) for gi in range(len(self.groups))]

    def prob(self, logits: torch.Tensor, at_last: bool = False) -> torch.Tensor:
        """P[target] per row from full logits (``[n, T, V]`` / ``[n, C]``) or, with ``at_last``,
        from the last position's logits ``[n, V]``."""
        lg = logits[:, self.last] if self.last is not None and not at_last else logits
        return lg.float().softmax(-1)[:, self.tid]

    def window_of(self, l: int) -> list[int]:
        return window_layers(l, self.window, self.n_layers, self.window_mode)

    def start_of(self, cell) -> int:
        return self.window_of(self.layers[cell[1]])[0]

    def first_position(self, cell) -> int:
        """The first position a cell restores (``-1`` when its group is empty)."""
        pos = self.groups[self.group_names[cell[2]]]
        return int(pos.min()) if pos.numel() else -1

    def inert(self, cell) -> bool:
        """Whether restoring ``cell`` cannot change P[target]: on a language model, a cell restoring only
        the last layer at positions other than the last (no later layer reads them, and the last
        position's logits are computed from its own state alone). Its effect is exactly 0."""
        if self.stream != "lm" or self.last is None or self.window_of(self.layers[cell[1]])[0] < self.n_layers - 1:
            return False
        return not bool((self.groups[self.group_names[cell[2]]] == self.last).any())

    def restore_edits(self, cells: list[tuple[int, int, int]], offset: int = 0):
        """Edits restoring, in row ``r`` of the running batch, the clean output for ``cells[r]``
        (the running tensors start at position ``offset``)."""
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
                    t[sl, p - offset] = clean[:, p].to(t.dtype)
                return t

            return fn

        return {site: make(site, items) for site, items in per_site.items()}

    def corrupt(self, s: int, resume: bool) -> tuple[dict, float]:
        """The corruption edits of sample ``s`` and P[target] of the corrupted run (recording the
        layer inputs for resumed patched runs when ``resume``)."""
        edits = self.corruption.edits(self, s)
        with torch.no_grad():
            logits = self.resumer.record(self.batch, edits) if resume else self.adapter.run(self.batch, edits=edits).logits
        return edits, float(self.prob(logits)[0])

    def run_rows(self, cells, edits, resume: bool) -> np.ndarray:
        """P[target] for each cell (one row per cell, one forward)."""
        b = self.batch.repeat(len(cells))
        if resume:
            start = min(self.start_of(c) for c in cells)
            p0 = min(self.first_position(c) for c in cells)
            logits = self.resumer.run(b, start, p0, self.restore_edits(cells, p0), self.last)
            return self.prob(logits, at_last=True).double().cpu().numpy()
        with torch.no_grad():
            out = self.adapter.run(b, edits={**edits, **self.restore_edits(cells)})
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
                "target": self.label, "target_id": self.tid, "corruption": self.corruption.describe(),
                "samples": self.samples, "seed": self.seed, "window": self.window, "window_mode": self.window_mode,
                "te": te}
        return Result("trace", arrays, layout=self.layout, targets=[self.label], meta=meta)


_DOC_ARGS = """``components``: any of ``attn``, ``mlp``, ``resid``; ``positions``: ``"groups"`` (FCCT groups,
    see :mod:`vlinterp.tracing.groups`), ``"tokens"`` (every non-pad position), ``"all"`` or a dict
    ``{name: positions}``; ``window``: consecutive layers restored around each layer, cut short at the
    first and last layers as ROME does (``window_mode="rome"``) or slid inward to keep ``window``
    layers there (``window_mode="slide"``);
    ``corruption``: a :class:`~vlinterp.tracing.corrupt.Corruption` or one of ``noise`` (default:
    patch-embedding noise of ``noise`` x std), ``pixel-noise``, ``blur``; ``samples``: noise samples
    averaged (1 for deterministic corruptions); ``stream``: ``lm`` (LLaVA language model, default
    there) or ``vision`` (vision tower); ``layers``: the layers to restore (default all)."""


def trace(adapter, batch: Batch, target, components=("resid",), positions="groups", window: int = 1, noise: float = 3.0,
          samples: int = 3, seed: int = 0, object_mask=None, batch_size: int = 32, object_positions=None,
          stream: str | None = None, layers=None, corruption=None, resume: bool = True, progress: bool = False,
          window_mode: str = "rome") -> Result:
    """Causal tracing of ``target`` (LLaVA: answer token str/id at ``last``; ViT: class index/name).

    Patched variants run ``batch_size`` rows per forward; on a LLaVA language model each chunk
    starts at its first restored layer from the corrupted run's cached layer input
    (``resume=True``), skipping the vision tower and the lower blocks.
    """
    plan = _Plan(adapter, batch, target, components, positions, window, noise, samples, seed, object_mask,
                 object_positions, stream, layers, corruption, resume, window_mode)
    resume = plan.resumer is not None
    # a packed vision tower (Qwen: every image's patches in one row) cannot hold one restored
    # variant per row: its cells run one forward each
    packed = plan.stream == "vision" and adapter.site_table[plan.site("resid", 0)].packed
    bs = 1 if packed else max(1, int(batch_size))
    # chunks: cells that restore nothing, or nothing the last position reads (Plan.inert), are the
    # corrupted run itself (run, they would differ from it only by rounding); with resume, cells
    # sharing (first restored layer, first restored position) run together from that layer and position
    live = [i for i, c in enumerate(plan.cells) if plan.first_position(c) >= 0 and not plan.inert(c)]
    key = (lambda i: (plan.start_of(plan.cells[i]), plan.first_position(plan.cells[i]))) if resume else (lambda i: 0)
    chunks: list[list[int]] = []
    for k in sorted({key(i) for i in live}):
        same = [i for i in live if key(i) == k]
        chunks += [same[j:j + bs] for j in range(0, len(same), bs)]
    p_corr, p_patch = [], np.zeros((plan.samples, len(plan.cells)))
    bar = tqdm(total=plan.samples * len(chunks), desc="trace", disable=not progress)
    for s in range(plan.samples):
        edits, pc = plan.corrupt(s, resume)
        p_corr.append(pc)
        p_patch[s] = pc
        for idx in chunks:
            p_patch[s, idx] = plan.run_rows([plan.cells[i] for i in idx], edits, resume)
            bar.update(1)
    bar.close()
    return plan.result(p_patch.reshape(-1), np.array(p_corr))


def trace_naive(adapter, batch: Batch, target, components=("resid",), positions="groups", window: int = 1, noise: float = 3.0,
                samples: int = 3, seed: int = 0, object_mask=None, object_positions=None, stream: str | None = None,
                layers=None, corruption=None, window_mode: str = "rome") -> Result:
    """Same as :func:`trace`, one full forward per (sample, cell): the reference for tests and benchmarks."""
    plan = _Plan(adapter, batch, target, components, positions, window, noise, samples, seed, object_mask,
                 object_positions, stream, layers, corruption, resume=False, window_mode=window_mode)
    p_corr, p_patch = [], []
    for s in range(plan.samples):
        edits, pc = plan.corrupt(s, False)
        p_corr.append(pc)
        for cell in plan.cells:
            p_patch.append(plan.run_rows([cell], edits, False)[0])
    return plan.result(np.array(p_patch), np.array(p_corr))


trace.__doc__ += "\n    " + _DOC_ARGS + """
    Returns a :class:`Result` with ``rr``, ``ie``, ``p_patch`` ``[n_components, n_layers, n_positions]``,
    ``p_clean`` ``[1]``, ``p_corrupt`` ``[samples]``, ``te`` ``[1]``."""
trace_naive.__doc__ += "\n    " + _DOC_ARGS

__all__ = ["trace", "trace_naive", "window_layers", "COMPONENTS", "WINDOW_MODES"]
