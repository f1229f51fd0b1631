"""What a VLM's own forward hands its decoder layers, recorded without running them.

Pruning drives the decoder layers itself, so it needs exactly what the model's forward gives
layer ``l``: the merged input embeddings (image features included), the attention mask (causal,
padding, Gemma 3's bidirectional image blocks, PaliGemma's bidirectional prefix, sliding windows:
one per layer), the rotary position table (M-RoPE's 3-D positions already folded in for Qwen) and
whatever the text model adds to the residual stream between layers (Qwen3-VL's DeepStack
features). :func:`record` runs the model's own forward with the decoder-layer list swapped for
recorders (plain modules: hooks on the real layers do not fire), so no family needs code here; the
last recorder stops the forward, so the final norm and head do not run either.

Shapes: ``B`` rows, ``T`` positions, ``D`` the LM width, ``hd`` the head dim.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.compat import CACHE_NAMES
from ..core.errors import PromptError
from ..core.layout import IMAGE
from ..core.types import Batch

# call kwargs that belong to the model's own cache / output plumbing, not to one layer's computation
DROP = CACHE_NAMES + ("use_cache", "output_attentions", "hidden_states", "cache_position")


class _Stop(Exception):
    """Raised by the last recorder: the forward has nothing left to give."""


class _Recorder(torch.nn.Module):
    """Stands in for decoder layer ``i``: records its input and call kwargs, returns the input."""

    def __init__(self, i: int, last: int, got: dict):
        super().__init__()
        self.i, self.last, self.got = i, last, got

    def forward(self, *args, **kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        self.got[self.i] = (h.detach().clone(), {k: v for k, v in kwargs.items() if k not in DROP})
        if self.i == self.last:
            raise _Stop
        return h


def layer_list_owner(adapter, layers=None) -> tuple[torch.nn.Module, str]:
    """``(module, attribute)`` holding a ``ModuleList`` of the model (default the decoder layers:
    ``adapter.lm``, ``"layers"``)."""
    layers = adapter.lm_layers if layers is None else layers
    for name, child in adapter.lm.named_children():
        if child is layers:
            return adapter.lm, name
    for mod in adapter.model.modules():
        for name, child in mod.named_children():
            if child is layers:
                return mod, name
    raise PromptError(f"{adapter.family}: cannot find the module holding a layer list")


def _run_recorded(adapter, call, layers=None, stop: int | None = None) -> dict[int, tuple[torch.Tensor, dict]]:
    """Call ``call()`` with every decoder layer (or every module of the list ``layers``) replaced by a
    recorder that stops the forward after layer ``stop`` (default the last); ``{layer: (input, kwargs)}``."""
    layers = adapter.lm_layers if layers is None else layers
    owner, attr = layer_list_owner(adapter, layers)
    L = len(layers) if stop is None else stop + 1
    got: dict = {}
    stubs = torch.nn.ModuleList([_Recorder(i, L - 1, got) for i in range(len(layers))])
    with torch.no_grad(), adapter.raw_hooks() as hk:
        hk.setattr(owner, attr, stubs)
        try:
            call()
        except _Stop:
            pass
    if len(got) != L:
        raise PromptError(f"{adapter.family}: the model's forward called {len(got)} of {L} layers")
    return got


def record_vision(adapter, batch: Batch) -> torch.Tensor:
    """The input of vision block 0 (``[n_crops, t, Dv]``: patch and position embeddings, CLS, any
    pre-norm) as the model's own forward makes it for ``batch``; no vision block runs."""
    batch = adapter._on_device(batch)
    got = _run_recorded(adapter, lambda: adapter.run(batch), adapter.vision_blocks, stop=0)
    return got[0][0]


@dataclass
class LMInputs:
    """``h`` ``[B, T, D]`` decoder layer 0's input; ``kwargs[l]`` layer ``l``'s call kwargs (its
    ``attention_mask`` ``[B, 1, T, T]`` or ``None``, ``position_embeddings`` (cos, sin) ``[B|1, T, hd]``,
    ``position_ids``...); ``adds[l]`` ``[B, T, D]`` what the text model adds to the residual stream
    after layer ``l`` (only layers where it adds something); ``positions`` the model's position ids
    (``adapter.position_ids``: ``[B, T]`` or ``[3, B, T]``); ``image`` ``[B, T]`` bool, the image
    patch positions (the layout's, newline/separator tokens excluded); ``grid`` ``[B, T]`` index of
    each image position among its row's (``-1`` elsewhere)."""

    h: torch.Tensor
    kwargs: list[dict]
    positions: torch.Tensor
    image: torch.Tensor
    grid: torch.Tensor
    adds: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def n_image(self) -> int:
        return int(self.image[0].sum()) if self.image.shape[0] else 0

    def repeat(self, n: int) -> "LMInputs":
        """The inputs of a batch made of one row repeated ``n`` times (``B`` must be 1)."""
        if self.h.shape[0] != 1:
            raise PromptError(f"LMInputs.repeat needs a one-row batch, got {self.h.shape[0]} rows")
        rep0 = lambda t: t.expand(n, *t.shape[1:]) if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[0] == 1 else t  # noqa: E731
        kws = []
        for kw in self.kwargs:
            out = {}
            for k, v in kw.items():
                if k == "position_ids" and isinstance(v, torch.Tensor):
                    out[k] = v.expand(*v.shape[:-2], n, v.shape[-1]) if v.shape[-2] == 1 else v
                elif k == "position_embeddings" and isinstance(v, tuple):
                    out[k] = tuple(rep0(t) for t in v)
                else:
                    out[k] = rep0(v)
            kws.append(out)
        pos = self.positions.expand(*self.positions.shape[:-2], n, self.positions.shape[-1])
        return LMInputs(rep0(self.h), kws, pos, rep0(self.image), rep0(self.grid), {l: rep0(a) for l, a in self.adds.items()})


def image_positions(batch: Batch, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image [B, T] bool, grid [B, T])`` from the ``lm`` layout (see :class:`LMInputs`)."""
    lay = batch.layouts["lm"]
    image = torch.as_tensor(lay.modality == IMAGE, device=device)
    grid = (image.long().cumsum(1) - 1).masked_fill(~image, -1)
    return image, grid


def record(adapter, batch: Batch, features: torch.Tensor | None = None) -> LMInputs:
    """The model's own decoder-layer inputs for ``batch`` (see the module doc).

    ``features`` ``[n_images, N, D]``: image features to use instead of the vision tower's (a
    vision-side pruner's, images in prompt order): the model is then fed ``inputs_embeds`` (the token
    embeddings with these scattered into the positions of the image token) and its own position ids,
    without pixels, so the tower does not run."""
    batch = adapter._on_device(batch)
    ids = batch.inputs["input_ids"]
    if features is None:
        got = _run_recorded(adapter, lambda: adapter.run(batch))
    else:
        slots = ids == adapter.image_token_id
        flat = features.reshape(-1, features.shape[-1])
        if flat.shape[0] != int(slots.sum()):
            raise PromptError(f"{flat.shape[0]} image features for {int(slots.sum())} image tokens")
        emb = adapter.text_embeddings(ids)
        emb = emb.masked_scatter(slots[..., None].expand_as(emb), flat.to(emb.dtype))
        skip = set(batch.meta.get("image_inputs", ())) | {"input_ids", "pixel_values"}
        inputs = {k: v for k, v in batch.inputs.items() if k not in skip}
        inputs["inputs_embeds"] = emb
        inputs["position_ids"] = adapter.position_ids(batch)
        got = _run_recorded(adapter, lambda: adapter.model(**inputs))
    L = len(got)
    h = got[0][0]
    adds = {}
    for l in range(L - 1):
        nxt = got[l + 1][0]
        if not torch.equal(nxt, got[l][0]):  # the text model added something between layers l and l+1
            adds[l] = nxt - got[l][0]
    image, grid = image_positions(batch, h.device)
    return LMInputs(h, [got[l][1] for l in range(L)], adapter.position_ids(batch).to(h.device), image, grid, adds)


def record_step(adapter, embeds: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """``(h [B, 1, D], kwargs per layer)`` the text model gives its decoder layers for one new token
    (``embeds`` = ``adapter.text_embeddings(token)`` ``[B, 1, D]``, ``position_ids`` ``[B, 1]`` or
    ``[3, B, 1]``): the rotary table of the new position per layer, and the input scaled as the text
    model scales it (Gemma 2's normaliser)."""
    got = _run_recorded(adapter, lambda: adapter.lm(inputs_embeds=embeds, position_ids=position_ids, use_cache=False))
    return got[0][0], [got[l][1] for l in range(len(got))]


__all__ = ["LMInputs", "record", "record_step", "record_vision", "image_positions", "layer_list_owner", "DROP"]
