"""Resume a language-model forward from a middle layer and a middle position on cached states.

Patched tracing runs share a lot with the corrupted run: everything below the first restored
layer (the vision tower, the projector, the lower LM blocks) and, the LM being causal, every
position before the first restored position. :class:`LMResumer` records the corrupted run's
input to every decoder layer and every layer's keys/values once, then runs only blocks
``start..L-1`` on positions ``p0..T-1`` (prefix keys/values from the record), plus the final
norm and head at the last position. Hooks and edits at the blocks' sites fire as in a full
forward but see the suffix ``[n, T - p0, D]`` only.

It needs decoder layers whose attention stores keys/values through the cache protocol
``cache.update(k, v, layer_idx) -> (k_all, v_all)`` (transformers' decoders; the argument is
``past_key_values`` before transformers 5.24) and the
sites ``blocks.{i}.resid`` (the decoder layers), ``norm`` and ``logits``: :func:`supports` says
whether it applies (VLM language models, except those that add to the residual stream between
decoder layers).
"""
from __future__ import annotations

import torch

from ..core.compat import CACHE_NAMES, cache_kwarg
from ..core.types import Batch

_DROP = CACHE_NAMES + ("use_cache", "output_attentions", "hidden_states")


def supports(adapter, stream: str) -> bool:
    """Whether ``adapter``'s ``stream`` can resume: a VLM language model whose residual stream flows
    only through its decoder layers (``adapter.lm_resumable``: not Qwen3-VL, which adds DeepStack
    features between layers)."""
    return (adapter.kind == "vlm" and stream == "lm" and getattr(adapter, "lm_resumable", True)
            and all(s in adapter.site_table for s in ("blocks.0.resid", "norm", "logits")))


class _KVRecorder:
    """Cache stand-in for the recorded run: keeps each layer's keys/values ``[1, kvH, T, hd]``."""

    def __init__(self):
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, k, v, layer_idx, *args, **kwargs):
        self.kv[int(layer_idx)] = (k.detach(), v.detach())
        return k, v


class _PrefixKV:
    """Cache stand-in for resumed runs: prepends the recorded keys/values of positions ``< p0``."""

    def __init__(self, kv, p0: int, n: int):
        self.kv, self.p0, self.n = kv, p0, n

    def update(self, k, v, layer_idx, *args, **kwargs):
        if self.p0 == 0:
            return k, v
        pk, pv = self.kv[int(layer_idx)]
        shape = (self.n, -1, self.p0, -1)
        return torch.cat([pk[:, :, :self.p0].expand(shape), k], 2), torch.cat([pv[:, :, :self.p0].expand(shape), v], 2)


class LMResumer:
    """``record(batch, edits)`` -> logits of the full (corrupted) run, keeping each layer's input
    ``[1, T, D]``, keys/values and call kwargs; ``run(batch_n, start, p0, edits, last)`` -> logits at
    position ``last`` ``[n, V]`` computing layers ``start..L-1`` at positions ``p0..T-1`` only."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.L = adapter.num_layers("lm")
        self.layers = [adapter.module(f"blocks.{i}.resid") for i in range(self.L)]
        self.norm, self.head = adapter.module("norm"), adapter.module("logits")
        self.inputs: list[torch.Tensor] = []
        self.kwargs: dict = {}
        self.kv = _KVRecorder()

    def record(self, batch: Batch, edits: dict) -> torch.Tensor:
        got: dict[int, torch.Tensor] = {}
        kw: dict = {}
        rec = _KVRecorder()

        def make(i):
            def pre(module, args, kwargs):
                h = args[0] if args else kwargs["hidden_states"]
                got[i] = h.detach().clone()
                if i == 0:
                    kw.update({k: v for k, v in kwargs.items() if k not in _DROP})
                kw_out = {k: v for k, v in kwargs.items() if k not in CACHE_NAMES}
                return args, {**kw_out, cache_kwarg(type(module).forward): rec, "use_cache": False}

            return pre

        with self.adapter.raw_hooks() as hooks:
            for i, m in enumerate(self.layers):
                hooks.pre(m, make(i), with_kwargs=True)
            out = self.adapter.run(batch, edits=edits)
        self.inputs = [got[i] for i in range(self.L)]
        self.kwargs, self.kv = kw, rec
        return out.logits

    def _suffix_kwargs(self, p0: int, T: int, device, dtype) -> dict:
        out = {}
        for k, v in self.kwargs.items():
            if k == "attention_mask":
                continue
            if k == "position_embeddings" and isinstance(v, tuple):
                out[k] = tuple(t[:, p0:] for t in v)
            elif isinstance(v, torch.Tensor) and v.dim() == 1 and v.shape[0] == T:
                out[k] = v[p0:]
            elif isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[1] == T:
                out[k] = v[:, p0:]
            else:
                out[k] = v
        mask = self.kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor):  # bool (True = attend) or additive float, [1, 1, T, T]
            out["attention_mask"] = mask[..., p0:, :T]
        elif p0 > 0:  # the recorded run was plainly causal: an additive mask for the suffix queries
            q = torch.arange(p0, T, device=device)[:, None]
            allowed = torch.arange(T, device=device)[None, :] <= q
            m = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
            out["attention_mask"] = m[None, None]
        else:
            out["attention_mask"] = None
        return out

    def run(self, batch: Batch, start: int, p0: int, edits: dict, last: int) -> torch.Tensor:
        a = self.adapter
        batch = a._on_device(batch)
        n = batch.layouts["lm"].shape[0]
        T = self.inputs[0].shape[1]
        h = self.inputs[start][:, p0:].repeat(n, 1, 1)
        kw = self._suffix_kwargs(p0, T, h.device, h.dtype)
        with torch.no_grad(), a._running(batch), a.edits(edits):
            for i in range(start, self.L):
                cache = {cache_kwarg(type(self.layers[i]).forward): _PrefixKV(self.kv.kv, p0, n)}
                out = self.layers[i](h, use_cache=False, **cache, **kw)
                h = out[0] if isinstance(out, tuple) else out
            return self.head(self.norm(h))[:, last - p0]


__all__ = ["LMResumer", "supports"]
