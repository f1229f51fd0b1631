"""Direct logit attribution (DLA): how much of the answer's logit difference each attention head and
each MLP writes straight into the residual stream at the last position.

The residual stream entering the final norm at the last position is the sum of what every part
wrote there: ``h = e + sum_l (attn_l + mlp_l) (+ other)``, ``e`` the input embedding (the *direct
path*) and ``other`` anything a family adds between decoder layers (Qwen3-VL's DeepStack
features; zero for LLaVA). The logit difference ``d = (W_U[target] - W_U[foil]) . norm(h)`` is not
linear in ``h``, because the norm divides by ``h``'s own scale. DLA linearises it by **freezing
that scale at its value on the clean run**: for an RMS norm ``norm(v) = g * v / r`` with
``r = sqrt(mean(h^2) + eps)`` of the clean ``h`` and ``g`` the norm's gain (``weight``, or
``1 + weight`` as in Gemma; read from the module itself), for a LayerNorm
``norm(v) = w * (v - mean(v)) / sigma + b``. Given that frozen scale the map is linear, so the
contributions ``(W_U[target] - W_U[foil]) . norm_frozen(part)`` plus the constant terms (LayerNorm
bias, head bias) sum to ``d`` exactly (up to float rounding), and :func:`dla` checks that the frozen
map reproduces the model's own norm output on ``h``.

An attention output splits exactly by head: ``o_proj(z) = sum_h W_O[:, h] z_h + b_O`` with ``z_h`` the
head's slice of ``o_proj``'s input (read by a pre-hook on the attention module's ``o_proj``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.errors import PromptError, ShapeMismatchError, UnsupportedError
from ..core.result import Result
from ..core.types import Batch
from .trace import _target


def frozen_norm(norm: torch.nn.Module, h: torch.Tensor):
    """The final norm linearised at ``h`` ``[D]`` (scale frozen): ``(fn(v [..., D]) -> [..., D], const [D],
    scale)`` (float64) with ``fn(h) + const == norm(h)``; :class:`UnsupportedError` when the norm is
    neither an RMS norm nor a LayerNorm (checked against the module's own output on ``h``)."""
    h64 = h.double()
    w = getattr(norm, "weight", None)
    b = getattr(norm, "bias", None)
    eps = next((float(getattr(norm, k)) for k in ("variance_epsilon", "eps", "epsilon") if isinstance(getattr(norm, k, None), (int, float))), None)
    if eps is None:
        raise UnsupportedError(f"final norm {type(norm).__name__}: no epsilon attribute to linearise it with")
    D = h.shape[-1]
    if isinstance(norm, torch.nn.LayerNorm) or (b is not None and isinstance(b, torch.Tensor)):
        sigma = torch.sqrt(h64.var(-1, unbiased=False) + eps)
        gain = (w.detach().double() if w is not None else torch.ones(D, dtype=torch.float64, device=h.device)) / sigma
        const = b.detach().double() if b is not None else torch.zeros(D, dtype=torch.float64, device=h.device)

        def fn(v):
            return (v - v.mean(-1, keepdim=True)) * gain

        scale = float(sigma)
    else:
        with torch.no_grad():
            ones = torch.ones(1, D, dtype=h.dtype, device=h.device)
            g = norm(ones)[0].detach().double() * np.sqrt(1.0 + eps)
        r = torch.sqrt((h64 ** 2).mean(-1) + eps)
        const = torch.zeros(D, dtype=torch.float64, device=h.device)

        def fn(v):
            return v * (g / r)

        scale = float(r)
    with torch.no_grad():
        ref = norm(h[None])[0].double()
    err = float((fn(h64) + const - ref).abs().max())
    if err > 1e-4 * max(1.0, float(ref.abs().max())):
        raise UnsupportedError(f"final norm {type(norm).__name__} is neither an RMS norm nor a LayerNorm "
                               f"(frozen-scale map misses its output by {err:.2e})")
    return fn, const, scale


def _o_proj(adapter, layer: int):
    return getattr(adapter.module(f"blocks.{layer}.attn"), "o_proj", None)


def dla(adapter, batch: Batch, target, foil=None, heads: bool = True) -> Result:
    """Direct logit attribution of ``logit[target] - logit[foil]`` at the last position.

    ``target`` / ``foil``: answer tokens (str or id); ``foil`` default: the clean run's most likely
    other token. ``heads``: also split every attention output by head (needs an ``o_proj``).

    Returns a :class:`Result` ``"dla"`` with ``components`` ``[2, L]`` (attention, MLP per layer),
    ``heads`` ``[L, H]`` (NaN when not split), ``head_bias`` ``[L]``, ``direct`` ``[1]`` (the input
    embedding at ``last``), ``other`` ``[1]`` (what the stream holds beyond embedding + blocks),
    ``const`` ``[1]`` (norm bias and unembedding bias), ``total`` ``[1]`` (the model's logit
    difference), ``sum`` ``[1]`` (every contribution and constant added up), ``p_target`` ``[1]``;
    ``meta``: the target, foil, the frozen norm scale and how the norm was linearised."""
    if adapter.kind != "vlm":
        raise UnsupportedError(f"direct logit attribution runs on VLM language models, not {adapter.kind} models")
    if batch.layout.shape[0] != 1:
        raise ShapeMismatchError(f"dla takes a batch of one row, got {batch.layout.shape[0]}")
    tid, last, label = _target(adapter, batch, target)
    L = adapter.num_layers("lm")
    sites = ["inputs_embeds", f"blocks.{L - 1}.resid", "logits"] + [f"blocks.{l}.{c}" for l in range(L) for c in ("attn", "mlp")]
    pos = torch.tensor([last])
    z: dict[int, torch.Tensor] = {}

    def tap(l):
        def pre(module, args, kwargs):
            x = args[0] if args else kwargs.get("input")
            z[l] = x[:, last].detach().clone()

        return pre

    projs = {l: _o_proj(adapter, l) for l in range(L)} if heads else {}
    if heads and any(p is None for p in projs.values()):
        raise UnsupportedError(f"{adapter.family}: attention modules have no o_proj to split by head (heads=False)")
    with adapter.raw_hooks() as h, torch.no_grad():
        for l, p in projs.items():
            h.pre(p, tap(l), with_kwargs=True)
        out = adapter.run(batch, capture=sites, positions=pos)
    c = {k: v[0, 0].double() for k, v in out.cache.items()}
    logits = c["logits"]
    if foil is None:
        fid, foil_label = int(torch.topk(logits, 2).indices[1] if int(logits.argmax()) == tid else logits.argmax()), None
    else:
        fid, _, foil_label = _target(adapter, batch, foil)
    if fid == tid:
        raise PromptError("the foil is the target itself: give another token")
    foil_label = foil_label or adapter.tokenizer.decode([fid]).strip()
    head = adapter.module("logits")
    u = (head.weight[tid] - head.weight[fid]).detach().double()
    hb = getattr(head, "bias", None)
    ub = float((hb[tid] - hb[fid]).detach()) if hb is not None else 0.0
    hL = out.cache[f"blocks.{L - 1}.resid"][0, 0]
    fn, const, scale = frozen_norm(adapter.module("norm"), hL)

    def contrib(v):
        return float(fn(v.to(u.device)) @ u)

    comps = np.array([[contrib(c[f"blocks.{l}.{k}"]) for l in range(L)] for k in ("attn", "mlp")])
    direct = contrib(c["inputs_embeds"])
    rest = c[f"blocks.{L - 1}.resid"] - c["inputs_embeds"] - sum(c[f"blocks.{l}.{k}"] for l in range(L) for k in ("attn", "mlp"))
    other = contrib(rest)
    constant = float(const @ u) + ub
    H = adapter.text_config.num_attention_heads if heads else 0
    head_arr = np.full((L, max(H, 1)), np.nan)
    head_bias = np.zeros(L)
    for l, p in projs.items():
        W = p.weight.detach().double()  # [D, H * hd]
        zl = z[l][0].double()
        hd = zl.shape[-1] // H
        for k in range(H):
            head_arr[l, k] = contrib(W[:, k * hd:(k + 1) * hd] @ zl[k * hd:(k + 1) * hd])
        if getattr(p, "bias", None) is not None:
            head_bias[l] = contrib(p.bias.detach().double())
    total = float(logits[tid] - logits[fid])
    s = float(comps.sum() + direct + other + constant)
    arrays = {"components": comps, "heads": head_arr, "head_bias": head_bias, "direct": np.array([direct]),
              "other": np.array([other]), "const": np.array([constant]), "total": np.array([total]), "sum": np.array([s]),
              "p_target": np.array([float(logits.float().softmax(-1)[tid])])}
    meta = {"target": label, "target_id": tid, "foil": foil_label, "foil_id": fid, "components": ["attn", "mlp"],
            "layers": list(range(L)), "norm": type(adapter.module("norm")).__name__, "norm_scale": scale,
            "linearisation": "final norm's scale frozen at its clean-run value"}
    return Result("dla", arrays, layout=batch.layouts["lm"], targets=[label], meta=meta)


__all__ = ["dla", "frozen_norm"]
