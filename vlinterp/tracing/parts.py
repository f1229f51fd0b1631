"""Tracing by key group: restore, in the corrupted run, only the part of the last position's attention
output that reads one group of keys (the image's, or the text's), the patching counterpart of
attention knockout's ``image -> last`` edge (:mod:`.knockout`). Where a whole attention output's
recovery rate mixes what the last token reads from the image with what it reads from text tokens
that have already read the image, the image part places the image's own hand-off.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.attention import hf_self_attention, key_writes
from ..core.errors import UnsupportedError
from ..core.result import Result
from ..core.types import Batch
from .knockout import knockout_groups
from .trace import _Plan

PARTS = ("image", "text", "whole")


def attention_parts(adapter, batch: Batch, target, samples: int = 3, seed: int = 0, noise: float = 3.0,
                    corruption=None, progress: bool = False) -> Result:
    """Per layer, P[target] after restoring, in the corrupted run (tracing's corruption: image noise
    of ``noise`` x std by default, or ``corruption``), only a part of the last position's attention
    output: what it reads from the image keys, what it reads from the text keys (every other key), or
    the whole output (tracing's ``attn`` cell at the last token). A layer's output at the last position
    is exactly the sum of its keys' writes (:func:`~vlinterp.core.attention.key_writes`) plus
    ``o_proj``'s bias, so a part is restored by adding its clean writes less its corrupted ones.

    Returns a :class:`Result` ``"parts"`` with ``p_patch``, ``ie``, ``rr`` ``[3, L]`` (rows :data:`PARTS`,
    means over the noise samples, as :func:`~vlinterp.tracing.trace`), ``p_clean`` ``[1]``,
    ``p_corrupt`` ``[samples]``, ``te`` ``[1]``."""
    if adapter.kind != "vlm":
        raise UnsupportedError(f"attention parts run on VLM language models, not {adapter.kind} models")
    L = adapter.num_layers("lm")
    missing = [a for a in ("q_proj", "k_proj", "v_proj", "o_proj") if not hasattr(adapter.module("blocks.0.attn"), a)]
    if missing:
        raise UnsupportedError(f"{adapter.family}: the attention has no {', '.join(missing)} to split its output by key")
    plan = _Plan(adapter, batch, target, "attn", "all", 1, noise, samples, seed, None, None, "lm", None, corruption, resume=False)
    last = plan.last
    img = knockout_groups(batch.layout)["image"]
    keys = {"image": img, "text": torch.as_tensor(np.setdiff1d(np.arange(last + 1), img.numpy()))}

    def parts_of(module, args, kwargs, first):
        """``{part: [D]}`` of row 0 (the rows of a patched run are equal until the patched layer)."""
        h = kwargs.get("hidden_states", args[0] if args else None)
        w = key_writes(hf_self_attention(module, args, kwargs, queries=[last]), h, module, 0)[0]  # [T, D]
        return {"image": w[keys["image"]].sum(0), "text": w[keys["text"]].sum(0), "whole": first[0, last]}

    def record(l, store):
        def fn(module, args, kwargs, output):
            store[l] = parts_of(module, args, kwargs, output[0] if isinstance(output, tuple) else output)
        return fn

    def restore(l):  # row k of the running batch restores part PARTS[k] of layer l
        def fn(module, args, kwargs, output):
            first = output[0] if isinstance(output, tuple) else output
            now = parts_of(module, args, kwargs, first)
            first = first.clone()
            for k, part in enumerate(PARTS):
                first[k, last] = first[k, last] + (clean[l][part] - now[part]).to(first.dtype)
            return (first,) + tuple(output[1:]) if isinstance(output, tuple) else first
        return fn

    clean: dict = {}
    with adapter.raw_hooks() as hk, torch.no_grad():
        for l in range(L):
            hk.forward(adapter.module(f"blocks.{l}.attn"), record(l, clean), with_kwargs=True)
        adapter.run(batch)
    rows = batch.repeat(len(PARTS))
    p = np.zeros((plan.samples, len(PARTS), L))
    pc = []
    for s in tqdm(range(plan.samples), desc="attention parts", disable=not progress):
        edits = plan.corruption.edits(plan, s)
        with torch.no_grad():
            pc.append(float(plan.prob(adapter.run(batch, edits=edits).logits)[0]))
        for l in range(L):  # one forward per layer: the three parts as three rows
            with adapter.raw_hooks() as hk, torch.no_grad():
                hk.forward(adapter.module(f"blocks.{l}.attn"), restore(l), with_kwargs=True)
                p[s, :, l] = plan.prob(adapter.run(rows, edits=edits).logits).double().cpu().numpy()
    pp, pcm = p.mean(0), float(np.mean(pc))
    te = plan.p_clean - pcm
    arrays = {"p_patch": pp, "ie": pp - pcm, "rr": (pp - pcm) / te if abs(te) > 1e-12 else np.zeros_like(pp),
              "p_clean": np.array([plan.p_clean]), "p_corrupt": np.array(pc), "te": np.array([te])}
    meta = {"parts": list(PARTS), "layers": list(range(L)), "target": plan.label, "target_id": plan.tid,
            "corruption": plan.corruption.describe(), "samples": plan.samples, "seed": plan.seed, "te": te,
            "key_positions": {k: v.tolist() for k, v in keys.items()}}
    return Result("parts", arrays, layout=plan.layout, targets=[plan.label], meta=meta)


__all__ = ["attention_parts", "PARTS"]
