"""Run a VLM's language model with visual tokens really removed, layer by layer.

:class:`PrunedLM` drives the decoder layers of any VLM family itself (LLaVA, LLaVA-NeXT, Qwen2-VL,
Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, Gemma 3, PaliGemma, InternVL, SmolVLM / Idefics3): the
model's own forward first gives what its decoder layers receive (:mod:`.lm_inputs`: the merged
embeddings, each layer's attention mask and rotary table, DeepStack additions), then before each
layer ``l`` a pruner may drop image positions. Dropped positions leave the hidden states, the
rotary table, the attention mask and that layer's (and every later layer's) key/value cache; the
kept ones keep their original position ids (Qwen's 3-D M-RoPE ids included) and their original
attention pattern (the model's mask restricted to the kept positions: Gemma 3's bidirectional
image blocks, PaliGemma's bidirectional prefix, sliding windows by original index). Nothing is
masked while kept in compute.

Until the first drop, the layers get exactly the mask and position table the model's own forward
builds, so with nothing dropped the logits are bit-identical to ``model(**inputs)``.

Shapes: ``B`` rows, ``T`` the prompt length, ``T'`` the current (pruned) length, ``N`` image
tokens per row (patch positions of the layout: image newlines and separators are not pruned),
``D`` the LM width, ``V`` the vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.attention import hf_self_attention
from ..core.compat import cache_kwarg
from ..core.errors import PromptError, UnsupportedError
from ..core.layout import IMAGE
from ..core.types import Batch, Generation
from .lm_inputs import LMInputs, record, record_step, record_vision


@dataclass
class LayerCtx:
    """What a pruner sees before layer ``layer``.

    ``h`` ``[B, T', D]`` input of the layer; ``index`` ``[B, T']`` original sequence index of each
    current position; ``image`` ``[B, T']`` bool, image tokens; ``grid`` ``[B, T']`` index of the
    image token among the row's ``N`` image tokens (``-1`` elsewhere); ``attn`` ``[B, H, T', T']``
    the previous layer's attention probabilities (when the pruner asked for them) and
    ``attn_in`` ``[B, T', D]`` that layer's normed attention input, ``prev_attn`` its attention
    module (``v_proj``/``o_proj``); ``n_image`` = ``N``."""

    layer: int
    h: torch.Tensor
    index: torch.Tensor
    image: torch.Tensor
    grid: torch.Tensor
    n_image: int
    attn: torch.Tensor | None = None
    attn_in: torch.Tensor | None = None
    prev_layer: torch.nn.Module | None = None
    generator: torch.Generator | None = None
    prev_attn: torch.nn.Module | None = None

    def keep_top(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """Keep mask ``[B, T']``: every non-image position plus the ``k`` image positions with
        the highest ``scores`` ``[B, T']`` per row (ties broken by position)."""
        s = scores.float().masked_fill(~self.image, float("-inf"))
        n_img = int(self.image[0].sum())
        k = max(0, min(int(k), n_img))
        keep = ~self.image.clone()
        if k:
            top = s.topk(k, dim=1).indices
            keep.scatter_(1, top, True)
        return keep


@dataclass
class Prefill:
    """``logits`` ``[B, V]`` at the last prompt position; ``kept`` maps each layer to the original
    sequence indices ``[B, T'_l]`` it computed; ``image_kept`` ``[B, k]`` grid indices of the image
    tokens left after the last drop; ``cache``/``valid``/``positions`` carry on to decoding."""

    logits: torch.Tensor
    kept: dict[int, torch.Tensor]
    image_kept: torch.Tensor
    cache: "_LayerKV" = None
    valid: list = field(default_factory=list)
    positions: torch.Tensor | None = None
    bias: list = field(default_factory=list)

    def repeat(self, n: int) -> "Prefill":
        """This prefill's state for ``n`` copies of each row (a decode batch of ``B * n`` rows that
        share the prompt; benchmarks time decoding at a batch size without running that prefill).
        ``positions`` is ``[B]`` or ``[3, B]`` (M-RoPE): rows are its last dimension."""
        rep = lambda t: None if t is None else t.repeat_interleave(n, 0)  # noqa: E731
        kv = _LayerKV(len(self.cache.k))
        kv.k, kv.v = [rep(t) for t in self.cache.k], [rep(t) for t in self.cache.v]
        pos = None if self.positions is None else self.positions.repeat_interleave(n, -1)
        return Prefill(rep(self.logits), {l: rep(i) for l, i in self.kept.items()}, rep(self.image_kept), kv,
                       [rep(v) for v in self.valid], pos, [rep(b) for b in self.bias])


class _LayerKV:
    """Per-layer key/value store with the cache protocol ``update(k, v, layer_idx) -> (k, v)``;
    layers may hold different lengths (each keeps only its own kept tokens)."""

    def __init__(self, n_layers: int):
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers

    def update(self, k, v, layer_idx, *args, **kwargs):
        i = int(layer_idx)
        if self.k[i] is not None:
            k, v = torch.cat([self.k[i], k], 2), torch.cat([self.v[i], v], 2)
        self.k[i], self.v[i] = k, v
        return k, v

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.k[layer_idx] is None else int(self.k[layer_idx].shape[2])


class PrunedLM:
    """Pruned prefill and greedy decoding for one VLM adapter (``adapter.kind == "vlm"``, any
    family; sdpa or eager attention)."""

    def __init__(self, adapter):
        if adapter.kind != "vlm":
            raise UnsupportedError(f"visual token pruning needs a vision-language model, not a {adapter.family} ({adapter.kind}) model")
        self.adapter = adapter
        self.layers = list(adapter.lm_layers)
        self.L = len(self.layers)
        self.attn = [adapter.module(f"blocks.{l}.attn") for l in range(self.L)]
        self.impl = adapter.text_config._attn_implementation
        if self.impl not in ("sdpa", "eager"):
            raise UnsupportedError(f"pruning builds its own attention masks for sdpa/eager; the model runs {self.impl!r} (load it with attn_implementation='sdpa')")
        self.image_token = adapter.image_token_id
        self.cache_arg = cache_kwarg(type(self.layers[0]).forward)
        self.softcap = getattr(adapter.text_config, "final_logit_softcapping", None)
        self.timing: dict[str, float] = {}  # seconds of the last prefill: vision side (tower, projector, embedding) and LM

    def tower_shape(self):
        """``(vision config, tower layers, feature depth)``: the depth is how many tower layers
        feed the projector (``vision_feature_layer`` -2 of 24 layers: 23; the whole tower when the
        config names no feature layer)."""
        cfg = self.adapter.config
        vcfg = getattr(cfg, "vision_config", None)
        Lv = len(self.adapter.vision_blocks)
        fl = getattr(cfg, "vision_feature_layer", -1)
        depth = fl if isinstance(fl, int) and fl >= 0 else Lv + 1 + (fl if isinstance(fl, int) else -1)
        return vcfg, Lv, depth

    def n_image(self, batch: Batch) -> int:
        """Image patch tokens per row of ``batch`` (``N``; the same in every row)."""
        counts = (batch.layouts["lm"].modality == IMAGE).sum(1)
        if counts.min() != counts.max():
            raise PromptError(f"pruning needs the same number of image tokens in every row; got {sorted(set(counts.tolist()))}")
        return int(counts[0])

    # ---------------------------------------------------------------- inputs
    def lm_inputs(self, batch: Batch, features: torch.Tensor | None = None) -> LMInputs:
        """What the model's own forward gives its decoder layers for ``batch`` (:func:`.lm_inputs.record`);
        ``features`` ``[n_images, N, D]`` replace the tower's image features."""
        self.n_image(batch)
        return record(self.adapter, batch, features)

    def vision_input(self, batch: Batch) -> torch.Tensor:
        """The input of vision block 0 ``[n_crops, t, Dv]`` as the model's own forward makes it
        (patch + position embeddings and any pre-norm), without running the tower's blocks."""
        return record_vision(self.adapter, batch)

    # ----------------------------------------------------------------- masks
    def _finish(self, allowed: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype | None = None):
        """Bool ``allowed`` ``[B, 1, Tq, Tk]`` -> the form the attention kernel takes (bool for
        sdpa without bias, else additive float in ``dtype``, default the model's). A decoding step
        passes ``dtype``: ``adapter.dtype`` walks every module (~2 ms on a 0.8B model), which at
        every layer of every step cost VisionZip's biased cache 1.3x plain decoding per token."""
        if self.impl == "sdpa" and bias is None:
            return allowed
        dtype = dtype or self.adapter.dtype
        m = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
        if bias is not None:
            m = m + bias[:, None, None, :].to(dtype).masked_fill(~allowed, 0)
        return m

    @staticmethod
    def _allowed(mask: torch.Tensor, B: int) -> torch.Tensor:
        """A recorded mask ``[B|1, 1, T, T]`` (bool, or additive float) as bool ``[B, T, T]`` (True = attend)."""
        m = mask[:, 0] if mask.dim() == 4 else mask
        m = m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min / 2
        return m.expand(B, -1, -1)

    def _mask(self, full, index: torch.Tensor, key_ok: torch.Tensor, bias: torch.Tensor | None):
        """The mask over the current positions ``index`` ``[B, T']``: the model's own pattern
        between them (``full``, the recorded mask), padding and hidden keys excluded, each query
        sees itself; ``bias`` ``[B, T']`` (log group sizes of merged tokens) is added to the keys'
        attention logits."""
        B, Tc = index.shape
        if full is None:  # the kernel's causal mask: causal by original index
            allowed = index[:, None, :] <= index[:, :, None]
        else:
            allowed = self._allowed(full, B)
            T = allowed.shape[-1]
            allowed = torch.gather(allowed, 1, index[:, :, None].expand(B, Tc, T))
            allowed = torch.gather(allowed, 2, index[:, None, :].expand(B, Tc, Tc))
        allowed = allowed & key_ok[:, None, :].bool()
        allowed |= index[:, None, :] == index[:, :, None]
        return self._finish(allowed[:, None], bias)

    @staticmethod
    def _gather_pos(v, index: torch.Tensor):
        """Position ids ``[B|1, T]`` / ``[k, B|1, T]`` or a rotary table ``(cos, sin)`` ``[B|1, T, hd]``
        at the current positions ``index`` ``[B, T']``."""
        B = index.shape[0]
        if isinstance(v, tuple):
            return tuple(torch.gather(t.expand(B, *t.shape[1:]), 1, index[..., None].expand(-1, -1, t.shape[-1])) for t in v)
        if isinstance(v, torch.Tensor) and v.dim() >= 2:
            lead = v.shape[:-2]
            e = v.expand(*lead, B, v.shape[-1])
            return torch.gather(e, -1, index.expand(*lead, -1, -1))
        return v

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, T', V]`` from the last layer's output: final norm, head, soft-capping (Gemma 2)."""
        a = self.adapter
        logits = a.lm_head(a.lm_norm(h))
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    # --------------------------------------------------------------- prefill
    @torch.no_grad()
    def prefill(self, batch: Batch, pruner=None, generator: torch.Generator | None = None, removed: dict | None = None,
                inputs: LMInputs | None = None) -> Prefill:
        """Run the prompt with ``pruner`` (``None``: nothing dropped). ``inputs``: the decoder-layer
        inputs of ``batch`` recorded already (:meth:`lm_inputs`; skips the vision tower).

        ``removed`` (analysis): ``{layer: bool [B, T]}`` original positions hidden as keys from
        that layer on, without changing the sequence (each row of a batch can hide a different
        token), for per-token information by removal."""
        import time

        a = self.adapter
        t0 = time.perf_counter()
        batch = a._on_device(batch)
        ids, valid = batch.inputs["input_ids"], batch.inputs["attention_mask"]
        B, T = ids.shape
        if pruner is not None:
            pruner.bind(self)
        vis = pruner.vision(self, batch) if pruner is not None and pruner.acts_on_vision else None
        if inputs is None:  # a vision-side pruner may hand back the layer inputs it recorded already
            inputs = vis[3] if vis is not None and len(vis) > 3 else self.lm_inputs(batch, vis[0] if vis is not None else None)
        h, image, grid = inputs.h, inputs.image, inputs.grid
        kwargs = inputs.kwargs
        index = torch.arange(T, device=h.device)[None].expand(B, T)
        hidden_keys = torch.zeros(B, T, dtype=torch.bool, device=h.device)
        pruned = False
        bias = None
        if vis is not None:
            keep = ~image | torch.gather(vis[1].reshape(B, -1), 1, grid.clamp(min=0))
            if len(vis) > 2 and vis[2] is not None and bool((vis[2] > 1).any()):  # merged tokens: proportional attention
                sizes = torch.gather(vis[2].reshape(B, -1).float(), 1, grid.clamp(min=0))
                bias = torch.where(image, sizes.clamp(min=1).log(), torch.zeros_like(sizes))
            h, index, valid, image, grid = _take(keep, h, index, valid, image, grid)
            if bias is not None:
                (bias,) = _take(keep, bias)
            hidden_keys = torch.gather(hidden_keys, 1, index)
            pruned = not bool(keep.all())
        n_image = inputs.n_image
        t1 = time.perf_counter()
        cache = _LayerKV(self.L)
        kept: dict[int, torch.Tensor] = {}
        valids: list[torch.Tensor] = []
        biases: list[torch.Tensor | None] = []
        attn = attn_in = None
        want = [pruner is not None and pruner.wants_attention(l + 1) for l in range(self.L)]
        seen: dict = {}  # per recorded mask / table: its form at the current positions
        tapped: dict = {}  # the attention probabilities and input of the layer just run

        def tap(module, args, kw, output):
            tapped["attn"] = hf_self_attention(module, args, kw)
            tapped["attn_in"] = kw.get("hidden_states", args[0] if args else None)

        with a.raw_hooks() as hooks:
            for l in range(self.L):
                if want[l]:
                    hooks.forward(self.attn[l], tap, with_kwargs=True)
            for l, layer in enumerate(self.layers):
                if pruner is not None:
                    ctx = LayerCtx(l, h, index, image, grid, n_image, attn, attn_in, self.layers[l - 1] if l else None, generator,
                                   self.attn[l - 1] if l else None)
                    keep = pruner.at_layer(ctx)
                    if keep is not None and not bool(keep.all()):
                        h, index, valid, image, grid, hidden_keys = _take(keep, h, index, valid, image, grid, hidden_keys)
                        if bias is not None:
                            (bias,) = _take(keep, bias)
                        pruned = True
                        seen.clear()
                if removed is not None and l in removed:
                    hidden_keys = hidden_keys | torch.gather(removed[l].to(h.device), 1, index)
                    seen.clear()
                kept[l] = index
                key_ok = valid.bool() & ~hidden_keys
                valids.append(key_ok)
                biases.append(bias)
                kw = self._layer_kwargs(kwargs[l], index, key_ok, bias, pruned or bool(hidden_keys.any()), seen)
                out = layer(h, use_cache=True, **{self.cache_arg: cache}, **kw)
                h = out[0] if isinstance(out, tuple) else out
                if l in inputs.adds:  # what the text model adds between layers (DeepStack), at the kept positions
                    add = inputs.adds[l]
                    h = h + torch.gather(add, 1, index[..., None].expand(-1, -1, add.shape[-1]))
                attn, attn_in = (tapped.pop("attn", None), tapped.pop("attn_in", None)) if want[l] else (None, None)
        logits = self._logits(h)[:, -1]
        if logits.is_cuda:  # the timings are of finished work, not of queued kernels (t1 follows a sync: int(...))
            torch.cuda.synchronize(logits.device)
        self.timing = {"vision": t1 - t0, "lm": time.perf_counter() - t1}
        img_kept = torch.stack([grid[b][image[b]] for b in range(B)]) if image.any() else grid[:, :0]
        return Prefill(logits, kept, img_kept, cache, valids, inputs.positions[..., -1], biases)

    def _layer_kwargs(self, rec: dict, index: torch.Tensor, key_ok: torch.Tensor, bias, changed: bool, seen: dict) -> dict:
        """Layer kwargs at the current positions: the recorded ones while nothing changed, else
        the mask restricted to ``index`` (:meth:`_mask`) and the position ids / rotary table gathered."""
        if not changed and bias is None:
            return rec
        out = {}
        for k, v in rec.items():
            key = (k, id(v))
            if key not in seen:
                if k == "attention_mask":
                    seen[key] = self._mask(v, index, key_ok, bias)
                elif k in ("position_ids", "position_embeddings"):
                    seen[key] = self._gather_pos(v, index)
                else:
                    seen[key] = v
            out[k] = seen[key]
        if "attention_mask" not in rec:
            out["attention_mask"] = self._mask(None, index, key_ok, bias)
        return out

    # -------------------------------------------------------------- generate
    @torch.no_grad()
    def generate(self, batch: Batch, pruner=None, max_new_tokens: int = 8, generator: torch.Generator | None = None) -> Generation:
        """Greedy decoding after a pruned prefill; each decode step attends to each layer's own
        kept keys plus the generated tokens (within the layer's sliding window, by original index),
        at positions continuing the original ones (Qwen: the next M-RoPE text position)."""
        pre = self.prefill(batch, pruner, generator)
        new_t, scores = self.decode(pre, max_new_tokens)
        tok = self.adapter.tokenizer
        texts = [tok.decode(r, skip_special_tokens=True).strip() for r in new_t]
        seq = torch.cat([batch.inputs["input_ids"].to(new_t.device), new_t], 1)
        return Generation(seq, new_t, texts, scores)

    @torch.no_grad()
    def decode(self, pre: Prefill, max_new_tokens: int = 8, stop_at_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy tokens ``[B, n]`` and their logits ``[n, B, V]`` from a prefill's state (``pre`` is
        extended in place: its cache grows). ``stop_at_eos=False`` always makes ``max_new_tokens``."""
        a = self.adapter
        tok = a.tokenizer
        eos = tok.eos_token_id if stop_at_eos else None
        B = pre.logits.shape[0]
        T = int(pre.kept[0][:, -1].max()) + 1  # the prompt length: every row's last position is T - 1 (left padding)
        nxt = pre.logits.argmax(-1)
        new, scores = [nxt], [pre.logits]
        done = nxt == eos if eos is not None else torch.zeros(B, dtype=torch.bool, device=nxt.device)
        valids, biases = list(pre.valid), list(pre.bias)
        keypos = [pre.kept[l] for l in range(self.L)]  # original index of every cached key, per layer
        windows = [getattr(m, "sliding_window", None) for m in self.attn]
        pos = pre.positions
        dtype = self.adapter.dtype  # once: the property walks every module
        for step in range(max_new_tokens - 1):
            if bool(done.all()):
                break
            pos = pos + 1
            q = T + step  # the new token's original index
            h, kws = record_step(a, a.text_embeddings(nxt)[:, None], pos[..., None])
            for l, layer in enumerate(self.layers):
                valids[l] = torch.cat([valids[l], torch.ones(B, 1, dtype=torch.bool, device=h.device)], 1)
                keypos[l] = torch.cat([keypos[l], torch.full((B, 1), q, dtype=keypos[l].dtype, device=h.device)], 1)
                if biases[l] is not None:
                    biases[l] = torch.cat([biases[l], torch.zeros(B, 1, dtype=biases[l].dtype, device=h.device)], 1)
                allowed = valids[l]
                if windows[l]:
                    allowed = allowed & (q - keypos[l] < windows[l])
                kw = {**kws[l], "attention_mask": self._finish(allowed[:, None, None, :], biases[l], dtype)}
                out = layer(h, use_cache=True, **{self.cache_arg: pre.cache}, **kw)
                h = out[0] if isinstance(out, tuple) else out
            logits = self._logits(h)[:, -1]
            nxt = logits.argmax(-1)
            if eos is not None:
                nxt = torch.where(done, torch.full_like(nxt, tok.pad_token_id if tok.pad_token_id is not None else eos), nxt)
                done = done | (nxt == eos)
            new.append(nxt)
            scores.append(logits)
        return torch.stack(new, 1), torch.stack(scores)


def _take(keep: torch.Tensor, *tensors: torch.Tensor):
    """Gather the positions where ``keep`` ``[B, T']`` is True (same count per row, order kept)
    from each ``[B, T', ...]`` tensor."""
    counts = keep.sum(1)
    if int(counts.min()) != int(counts.max()):
        from ..core.errors import ShapeMismatchError

        raise ShapeMismatchError(f"a pruner kept different numbers of positions per row: {counts.tolist()}")
    B = keep.shape[0]
    idx = keep.nonzero()[:, 1].reshape(B, -1)
    out = []
    for t in tensors:
        g = idx.view(B, -1, *[1] * (t.dim() - 2)).expand(B, idx.shape[1], *t.shape[2:])
        out.append(torch.gather(t, 1, g))
    return tuple(out)


__all__ = ["PrunedLM", "Prefill", "LayerCtx"]
