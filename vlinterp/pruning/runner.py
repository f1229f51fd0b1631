"""Run a LLaVA language model with visual tokens really removed, layer by layer.

:class:`PrunedLM` drives the decoder layers of a transformers LLaVA (llava-1.5 layout) itself:
image features are merged into the embeddings, then before each layer ``l`` a pruner may drop
image positions. Dropped positions leave the hidden states, the rotary position table, the
attention mask and that layer's (and every later layer's) key/value cache; the kept ones keep
their original position ids. Nothing is masked while kept in compute.

Until the first drop, the layers get exactly the mask and position table the model's own forward
builds, so with nothing dropped the logits are bit-identical to ``model(**inputs)``.

Shapes: ``B`` rows, ``T`` the prompt length, ``T'`` the current (pruned) length, ``N`` image
tokens per row, ``D`` the LM width, ``V`` the vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.attention import hf_self_attention
from ..core.compat import cache_kwarg
from ..core.errors import PromptError, UnsupportedError
from ..core.types import Batch, Generation


@dataclass
class LayerCtx:
    """What a pruner sees before layer ``layer``.

    ``h`` ``[B, T', D]`` input of the layer; ``index`` ``[B, T']`` original sequence index of each
    current position; ``image`` ``[B, T']`` bool, image tokens; ``grid`` ``[B, T']`` index of the
    image token among the row's ``N`` image tokens (``-1`` elsewhere); ``attn`` ``[B, H, T', T']``
    the previous layer's attention probabilities (when the pruner asked for them) and
    ``attn_in`` ``[B, T', D]`` that layer's normed attention input; ``n_image`` = ``N``."""

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
        share the prompt; benchmarks time decoding at a batch size without running that prefill)."""
        rep = lambda t: None if t is None else t.repeat_interleave(n, 0)  # noqa: E731
        kv = _LayerKV(len(self.cache.k))
        kv.k, kv.v = [rep(t) for t in self.cache.k], [rep(t) for t in self.cache.v]
        return Prefill(rep(self.logits), {l: rep(i) for l, i in self.kept.items()}, rep(self.image_kept), kv,
                       [rep(v) for v in self.valid], rep(self.positions), [rep(b) for b in self.bias])


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
    """Pruned prefill and greedy decoding for one LLaVA adapter (``adapter.kind == "vlm"``,
    llava-1.5 feature layout, sdpa or eager attention)."""

    def __init__(self, adapter):
        if adapter.kind != "vlm":
            raise UnsupportedError(f"visual token pruning needs a LLaVA-family model, not {adapter.family!r}")
        cfg = adapter.config
        if cfg.model_type != "llava":
            raise UnsupportedError(f"pruning supports the llava-1.5 layout; {cfg.model_type!r} (tiles + newline tokens) is not supported yet")
        self.adapter = adapter
        inner = adapter.model.model
        self.inner, self.lm, self.head = inner, inner.language_model, adapter.model.lm_head
        self.layers = list(self.lm.layers)
        self.L = len(self.layers)
        self.impl = self.lm.config._attn_implementation
        if self.impl not in ("sdpa", "eager"):
            raise UnsupportedError(f"pruning builds its own attention masks for sdpa/eager; the model runs {self.impl!r} (load it with attn_implementation='sdpa')")
        self.image_token = cfg.image_token_index
        self.cache_arg = cache_kwarg(type(self.layers[0]).forward)
        self.timing: dict[str, float] = {}  # seconds of the last prefill: vision side (tower, projector, embedding) and LM

    def tower_shape(self):
        """``(vision config, tower layers, feature depth)``: the depth is how many tower layers
        feed the projector (``vision_feature_layer`` -2 of 24 layers: 23)."""
        cfg = self.adapter.config
        vcfg = cfg.vision_config
        Lv = vcfg.num_hidden_layers
        fl = cfg.vision_feature_layer
        depth = fl if isinstance(fl, int) and fl >= 0 else Lv + 1 + (fl if isinstance(fl, int) else -1)
        return vcfg, Lv, depth

    # ---------------------------------------------------------------- inputs
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image features ``[n_images, N, D]`` as the model's own forward makes them."""
        cfg = self.adapter.config
        pixel_values = pixel_values.to(self.adapter.device)  # callers may pass a prepared (CPU) batch's pixels
        out = self.inner.get_image_features(pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
                                            vision_feature_select_strategy=cfg.vision_feature_select_strategy)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        return torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats

    def embed(self, batch: Batch, feats: torch.Tensor):
        """``(embeds [B, T, D], image [B, T] bool, grid [B, T])`` with ``feats`` ``[n_images, N, D]``
        scattered into the image positions (images in prompt order)."""
        ids = batch.inputs["input_ids"]
        image = ids == self.image_token
        n_per_row = image.sum(1)
        if int(n_per_row.min()) != int(n_per_row.max()):
            raise PromptError(f"pruning needs the same number of image tokens in every row; got {sorted(set(n_per_row.tolist()))}")
        emb = self.lm.embed_tokens(ids)
        flat = feats.reshape(-1, feats.shape[-1]).to(emb.dtype)
        if flat.shape[0] != int(image.sum()):
            raise PromptError(f"{flat.shape[0]} image features for {int(image.sum())} image tokens")
        emb = emb.masked_scatter(image[..., None].expand_as(emb), flat)
        grid = (image.long().cumsum(1) - 1).masked_fill(~image, -1)
        return emb, image, grid

    # ----------------------------------------------------------------- masks
    def _mask(self, index: torch.Tensor, valid: torch.Tensor, bias: torch.Tensor | None = None, additive: bool = False):
        """Mask ``[B, 1, T', T']`` over the current positions ``index``: causal by original index,
        padding keys excluded, each query sees itself; ``bias`` ``[B, T']`` (log group sizes of
        merged tokens) is added to the keys' attention logits. ``additive``: always the float form
        (what the eager kernel takes)."""
        allowed = (index[:, None, :] <= index[:, :, None]) & valid[:, None, :].bool()
        allowed |= index[:, None, :] == index[:, :, None]
        return self._finish(allowed[:, None], bias, additive)

    def _finish(self, allowed: torch.Tensor, bias: torch.Tensor | None, additive: bool = False):
        """Bool ``allowed`` ``[B, 1, Tq, Tk]`` -> the form the attention kernel takes (bool for
        sdpa without bias, else additive float)."""
        if self.impl == "sdpa" and bias is None and not additive:
            return allowed
        dtype = self.lm.embed_tokens.weight.dtype
        m = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
        if bias is not None:
            m = m + bias[:, None, None, :].to(dtype).masked_fill(~allowed, 0)
        return m

    def _hf_mask(self, h, valid, pos):
        from transformers.masking_utils import create_causal_mask

        return create_causal_mask(config=self.lm.config, inputs_embeds=h, attention_mask=valid, position_ids=pos,
                                  **{cache_kwarg(create_causal_mask): None})

    def _layer_with_probs(self, layer, h, mask, pe, pos, cache):
        """Run ``layer`` once with the eager attention kernel and keep what it computes on the way:
        ``(output, probabilities [B, H, T', T'], normed attention input [B, T', D])``. The ranking of a
        pruner at the next layer (FastV) is fused into the prefill: no second pass over this
        layer's queries and keys (a recomputation costs ~1/6 of a Llama layer at 600 tokens)."""
        got = {}

        def tap(module, args, kwargs, output):
            got["in"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            got["attn"] = output[1] if isinstance(output, tuple) and len(output) > 1 else None

        with self.adapter.raw_hooks() as hooks:
            hooks.forward(layer.self_attn, tap, with_kwargs=True)
            hooks.setattr(layer.self_attn.config, "_attn_implementation", "eager")
            out = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=pos, use_cache=True, **{self.cache_arg: cache})
        if got.get("attn") is None:  # an attention module that returns no probabilities: recompute them
            got["attn"] = hf_self_attention(layer.self_attn, (got["in"],), {"position_embeddings": pe, "attention_mask": mask})
        return out, got["attn"], got["in"]

    # --------------------------------------------------------------- prefill
    @torch.no_grad()
    def prefill(self, batch: Batch, pruner=None, generator: torch.Generator | None = None, removed: dict | None = None,
                feats: torch.Tensor | None = None) -> Prefill:
        """Run the prompt with ``pruner`` (``None``: nothing dropped). ``feats`` ``[n_images, N, D]``:
        image features already computed for these images (skips the tower).

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
        if vis is not None:
            feats = vis[0]
        elif feats is None:
            feats = self.features(batch.inputs["pixel_values"])
        h, image, grid = self.embed(batch, feats)
        index = torch.arange(T, device=h.device)[None].expand(B, T)
        pos = index
        hidden_keys = torch.zeros(B, T, dtype=torch.bool, device=h.device)
        pruned = False
        bias = None
        if vis is not None:
            keep = ~image | torch.gather(vis[1].reshape(B, -1), 1, grid.clamp(min=0))
            if len(vis) > 2 and vis[2] is not None and bool((vis[2] > 1).any()):  # merged tokens: proportional attention
                sizes = torch.gather(vis[2].reshape(B, -1).float(), 1, grid.clamp(min=0))
                bias = torch.where(image, sizes.clamp(min=1).log(), torch.zeros_like(sizes))
            h, index, pos, valid, image, grid = _take(keep, h, index, pos, valid, image, grid)
            if bias is not None:
                (bias,) = _take(keep, bias)
            hidden_keys = torch.gather(hidden_keys, 1, index)
            pruned = not bool(keep.all())
        n_image = int((ids[0] == self.image_token).sum())
        t1 = time.perf_counter()
        cache = _LayerKV(self.L)
        kept: dict[int, torch.Tensor] = {}
        valids: list[torch.Tensor] = []
        biases: list[torch.Tensor | None] = []
        attn = attn_in = None
        mask = None
        for l, layer in enumerate(self.layers):
            if pruner is not None:
                ctx = LayerCtx(l, h, index, image, grid, n_image, attn, attn_in, self.layers[l - 1] if l else None, generator)
                keep = pruner.at_layer(ctx)
                if keep is not None and not bool(keep.all()):
                    h, index, pos, valid, image, grid, hidden_keys = _take(keep, h, index, pos, valid, image, grid, hidden_keys)
                    if bias is not None:
                        (bias,) = _take(keep, bias)
                    pruned, mask = True, None
            if removed is not None and l in removed:
                hidden_keys = hidden_keys | torch.gather(removed[l].to(h.device), 1, index)
                mask = None
            kept[l] = index
            key_ok = valid.bool() & ~hidden_keys
            valids.append(key_ok)
            biases.append(bias)
            if mask is None:
                mask = self._mask(index, key_ok, bias) if (pruned or hidden_keys.any()) else self._hf_mask(h, valid, pos)
            pe = self.lm.rotary_emb(h, position_ids=pos)
            want = pruner is not None and pruner.wants_attention(l + 1)  # this layer's probabilities rank the next drop
            if want and _drops(pruner):
                out, attn, attn_in = self._layer_with_probs(layer, h, self._mask(index, key_ok, bias, additive=True), pe, pos, cache)
            else:
                attn = attn_in = None
                if want:  # keep=1: the model's own kernel runs (bit-identical), the probabilities recomputed beside it
                    attn_in = layer.input_layernorm(h)
                    attn = hf_self_attention(layer.self_attn, (attn_in,), {"position_embeddings": pe, "attention_mask": mask})
                out = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=pos, use_cache=True, **{self.cache_arg: cache})
            h = out[0] if isinstance(out, tuple) else out
        logits = self.head(self.lm.norm(h))[:, -1]
        if logits.is_cuda:  # the timings are of finished work, not of queued kernels (t1 follows a sync: int(...))
            torch.cuda.synchronize(logits.device)
        self.timing = {"vision": t1 - t0, "lm": time.perf_counter() - t1}
        img_kept = torch.stack([grid[b][image[b]] for b in range(B)]) if image.any() else grid[:, :0]
        return Prefill(logits, kept, img_kept, cache, valids, pos[:, -1], biases)

    # -------------------------------------------------------------- generate
    @torch.no_grad()
    def generate(self, batch: Batch, pruner=None, max_new_tokens: int = 8, generator: torch.Generator | None = None) -> Generation:
        """Greedy decoding after a pruned prefill; each decode step attends to each layer's own
        kept keys plus the generated tokens, at positions continuing the original ones."""
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
        tok = self.adapter.tokenizer
        eos = tok.eos_token_id if stop_at_eos else None
        B = pre.logits.shape[0]
        nxt = pre.logits.argmax(-1)
        new, scores = [nxt], [pre.logits]
        done = nxt == eos if eos is not None else torch.zeros(B, dtype=torch.bool, device=nxt.device)
        valids, biases = list(pre.valid), list(pre.bias)
        pos = pre.positions
        for _ in range(max_new_tokens - 1):
            if bool(done.all()):
                break
            pos = pos + 1
            h = self.lm.embed_tokens(nxt)[:, None]
            p = pos[:, None]
            pe = self.lm.rotary_emb(h, position_ids=p)
            for l, layer in enumerate(self.layers):
                valids[l] = torch.cat([valids[l], torch.ones(B, 1, dtype=torch.bool, device=h.device)], 1)
                if biases[l] is not None:
                    biases[l] = torch.cat([biases[l], torch.zeros(B, 1, dtype=biases[l].dtype, device=h.device)], 1)
                mask = self._finish(valids[l][:, None, None, :], biases[l])
                out = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=p, use_cache=True, **{self.cache_arg: pre.cache})
                h = out[0] if isinstance(out, tuple) else out
            logits = self.head(self.lm.norm(h))[:, -1]
            nxt = logits.argmax(-1)
            if eos is not None:
                nxt = torch.where(done, torch.full_like(nxt, tok.pad_token_id if tok.pad_token_id is not None else eos), nxt)
                done = done | (nxt == eos)
            new.append(nxt)
            scores.append(logits)
        return torch.stack(new, 1), torch.stack(scores)


def _drops(pruner) -> bool:
    """Whether ``pruner`` can drop tokens (``keep < 1``); at ``keep=1`` the prefill stays bit-identical
    to the model's own forward, so its layers keep their own attention kernel."""
    keep = getattr(getattr(pruner, "config", None), "keep", None)
    return keep is None or float(keep) < 1.0


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
