"""The adapter base class: one model family behind one API.

A subclass provides ``family``, ``main_stream``, ``build_sites()`` (the table of uniform
site names), ``prepare()`` (images + text -> :class:`Batch` with layouts), ``_forward()``
(native call -> logits) and ``_attention_probs()`` for its attention modules. Everything
else (capture, edits, attention for chosen layers, leak-free contexts) lives here.
"""
from __future__ import annotations

import contextlib
import inspect
import re
from typing import Iterable, Mapping

import torch

from ..core.errors import LayerRangeError, UnsupportedError
from ..core.hooks import Cache, EditFn, HookSession, RawHooks, Site, resolve_sites
from ..core.types import Batch, Generation, Outputs


class Adapter:
    """``family``: the model family (``llava``, ``qwen2-vl``, ``clip``...); ``kind``: what every method
    dispatches on, one of ``vlm`` (image + text in, text out), ``clip`` (image-text encoder), ``vit``
    (vision encoder), ``diffusion``."""

    family: str = "base"
    kind: str = "base"
    main_stream: str = "lm"

    def __init__(self, model: torch.nn.Module, processor=None, name: str = ""):
        self.model = model.eval()
        self.processor = processor
        self.name = name or self.family
        self.site_table: dict[str, Site] = self.build_sites()
        self._active: list[Mapping] = []  # layouts of batches currently running (a stack)
        self._session = HookSession(self.model, self.site_table, self._layout_for)

    # ----------------------------------------------------------- subclass API
    def build_sites(self) -> dict[str, Site]:
        raise NotImplementedError

    def prepare(self, images=None, text=None, **kw) -> Batch:
        raise NotImplementedError

    def _forward(self, batch: Batch):
        """Run the native model; return ``(logits, raw_output)``."""
        raise NotImplementedError

    def _attention_probs(self, site: str, module, args, kwargs, output) -> torch.Tensor:
        raise UnsupportedError(f"{self.family}: attention maps are not available")

    def generate(self, batch: Batch, max_new_tokens: int = 8, **kw) -> Generation:
        raise UnsupportedError(f"{self.family} models do not generate text")

    # ------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        """Where inputs go: the first parameter's device, or for a model dispatched by accelerate
        (``device_map``) the execution device of its first entry (CPU for ``"cpu"`` / ``"disk"``)."""
        dm = getattr(self.model, "hf_device_map", None)
        if dm:
            first = next(iter(dm.values()))
            if isinstance(first, int):
                return torch.device("cuda", first)
            return torch.device("cpu" if first in ("cpu", "disk") else first)
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of most of the model's weights (inputs are cast to it); a
        mixed-precision model whose norms stay fp32 still reports its matrices' dtype."""
        from .dtypes import model_dtype

        return model_dtype(self.model)

    def sites(self, pattern: str | None = None) -> list[str]:
        """Uniform site names (all, or those matching a wildcard pattern)."""
        return list(self.site_table) if pattern is None else resolve_sites(pattern, self.site_table)

    def module(self, site: str) -> torch.nn.Module:
        """The ``nn.Module`` behind a hook site (``UnknownSiteError`` for unknown names)."""
        if site not in self.site_table:
            resolve_sites(site, self.site_table)  # raises with the nearest valid names
        return self._session.module(site)

    @contextlib.contextmanager
    def raw_hooks(self):
        """Yield a :class:`~vlinterp.core.hooks.RawHooks` for module hooks a method needs beyond
        capture and edits (``h.forward(site_or_module, fn)``, ``h.pre``, ``h.backward``,
        ``h.setattr``); on exit, also by exception, all of them are removed / restored."""
        h = RawHooks(self._session)
        try:
            yield h
        finally:
            h.close()

    def num_layers(self, stream: str | None = None) -> int:
        """Number of blocks in ``stream`` (default: the main stream)."""
        prefix = {"lm": "blocks.", "vision": "vision.blocks.", "text": "text.blocks."}.get(stream or self.main_stream, "blocks.")
        layers = {s.layer for n, s in self.site_table.items() if n.startswith(prefix) and s.layer is not None and n.count(".") == prefix.count(".") + 1}
        return len(layers)

    def _layout_for(self, stream: str):
        return self._active[-1].get(stream) if self._active else None

    @contextlib.contextmanager
    def _running(self, batch: Batch):
        self._active.append(batch.layouts)
        try:
            yield
        finally:
            self._active.pop()

    # ---------------------------------------------------------------- running
    def run(
        self,
        batch: Batch,
        capture: str | Iterable[str] | None = None,
        edits: Mapping[str, EditFn] | None = None,
        positions=None,
        grad: bool = False,
    ) -> Outputs:
        """One forward pass. ``capture``: site names/wildcards to record (``out.cache``);
        ``positions``: LongTensor or ``callable(layout) -> positions`` restricting captures
        along dim 1; ``grad=True`` keeps captures in the graph (``retain_grad``)."""
        batch = self._on_device(batch)
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx, self._running(batch), self._session.hooks(capture, edits, positions, grad) as cache:
            logits, raw = self._forward(batch)
        return Outputs(logits=logits, cache=cache, raw=raw)

    @contextlib.contextmanager
    def edits(self, mapping: Mapping[str, EditFn]):
        """Apply ``fn(tensor, layout) -> tensor`` at sites for every run/generate inside the block."""
        with self._session.hooks(None, mapping):
            yield self

    @contextlib.contextmanager
    def capture(self, sites: str | Iterable[str], positions=None, grad: bool = False, budget_mb: float | None = None,
                spill_dir: str | None = None):
        """Record sites for every run/generate inside the block; yields the :class:`Cache`.
        ``budget_mb``: keep at most that many MB of captures in memory (moved to CPU); the rest
        stream to raw ``.bin`` files in ``spill_dir`` (default: a temp dir removed with the cache)
        and come back memory-mapped (:class:`~vlinterp.core.spill.SpillCache`)."""
        cache = None
        if budget_mb is not None:
            from ..core.spill import SpillCache

            cache = SpillCache(budget_mb, spill_dir)
        with self._session.hooks(sites, None, positions, grad, cache=cache) as cache:
            yield cache

    def _on_device(self, batch: Batch) -> Batch:
        dev = self.device
        if any(isinstance(v, torch.Tensor) and v.device != dev for v in batch.inputs.values()):
            return batch.to(dev)
        return batch

    # -------------------------------------------------------------- attention
    def attention_sites(self, stream: str | None = None) -> dict[int, str]:
        """Layer index -> attention site name for ``stream`` (default main stream)."""
        stream = stream or self.main_stream
        return {s.layer: n for n, s in self.site_table.items() if s.stream == stream and n.endswith(".attn") and s.layer is not None and not n.startswith("unet")}

    def attention(self, batch: Batch, layers: Iterable[int] | None = None, stream: str | None = None,
                  queries=None) -> dict[int, torch.Tensor]:
        """Attention probabilities ``{layer: [B, H, Tq, Tk]}`` for the chosen layers of ``stream``,
        recomputed from each layer's inputs, whatever kernel the model runs (sdpa included).

        ``queries`` (positions in ``stream``, negative from the end; the same for every row): only
        those query rows, ``{layer: [B, H, len(queries), Tk]}`` in the order given. What a method
        reads is usually a few rows (the answer's positions); the full maps are ``[B, H, T, T]`` per
        layer (0.25-0.55 GB each at LLaVA-NeXT lengths). Families that can (transformers attention)
        project only those queries; the others compute every row and keep those."""
        sites = self.attention_sites(stream)
        if not sites:
            raise UnsupportedError(f"{self.family}: no attention layers in stream {stream or self.main_stream!r}")
        n = max(sites) + 1
        layers = list(range(n)) if layers is None else [int(l) for l in layers]
        for l in layers:
            if not -n <= l < n:
                raise LayerRangeError(f"layer {l} out of range: stream {stream or self.main_stream!r} has {n} layers (0..{n - 1})")
        layers = [l % n for l in layers]
        probs: dict[int, torch.Tensor] = {}
        q = None if queries is None else [int(x) for x in torch.as_tensor(queries).flatten().tolist()]
        takes_queries = q is not None and "queries" in inspect.signature(self._attention_probs).parameters

        def make(l, site):
            def hook(module, args, kwargs, output):
                with torch.no_grad():
                    if takes_queries:
                        probs[l] = self._attention_probs(site, module, args, kwargs, output, queries=q).detach()
                        return
                    p = self._attention_probs(site, module, args, kwargs, output).detach()
                    if q is not None:
                        T = p.shape[-2]
                        p = p.index_select(-2, torch.as_tensor([x % T for x in q], device=p.device))
                    probs[l] = p

            return hook

        with self.raw_hooks() as h:
            for l in layers:
                h.forward(sites[l], make(l, sites[l]), with_kwargs=True)
            self.run(batch)
        return probs

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self.site_table)} sites>"


def block_sites(prefix: str, module_fmt: dict[str, str], n: int, stream: str) -> dict[str, Site]:
    """``{prefix}{i}.{kind}`` sites for ``i < n`` from module path formats like
    ``{"attn": "model.layers.{i}.self_attn", ...}``."""
    out = {}
    for i in range(n):
        for kind, fmt in module_fmt.items():
            out[f"{prefix}{i}.{kind}"] = Site(fmt.format(i=i), stream, i)
    return out


def layer_of(site: str) -> int | None:
    m = re.search(r"\.(\d+)\.", site + ".")
    return int(m.group(1)) if m else None


def save_pretrained_dir(out_dir, model, processor, **model_kw) -> str:
    """Save ``model`` and ``processor`` with their own ``save_pretrained`` as one vlinterp output
    folder (:func:`vlinterp.core.io.output_dir`: built aside, then published; a folder holding files
    vlinterp did not write is refused). ``model_kw`` go to the model's ``save_pretrained``."""
    from ..core.io import output_dir

    with output_dir(out_dir, "out_dir") as tmp:
        model.save_pretrained(tmp, **model_kw)
        processor.save_pretrained(tmp)
    return out_dir


__all__ = ["Adapter", "block_sites", "Cache", "layer_of", "save_pretrained_dir"]
