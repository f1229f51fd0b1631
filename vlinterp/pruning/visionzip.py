"""VisionZip-style pruning (Yang et al. 2024), on the vision side before the language model.

Dominant tokens: the image tokens the vision tower's CLS token attends to most (heads averaged,
in the layer whose output feeds the projector). Contextual tokens: the remaining tokens are
grouped around ``round(contextual * k)`` evenly spaced targets by cosine similarity of their
features and each group is averaged into its target's slot. The projector then maps the
``k = dominant + contextual`` features; only those enter the language model, each at its own
position (a merged token at its target's). ``proportional=1`` (default) adds ``log(group size)``
to every attention logit on a merged token, so it draws the attention of the tokens it stands
for (ToMe's proportional attention); ``0`` turns that off.

Where it applies (:func:`supported` says why not elsewhere): a CLIP-style tower with a CLS token,
one crop per image and a projector mapping each tower patch to one language-model token
(llava-1.5); and Qwen2-VL / Qwen2.5-VL's packed towers, ranked by the attention their patches
receive instead (:mod:`.visionzip_packed`). Tiled inputs (LLaVA-NeXT, OneVision, InternVL,
SmolVLM), other towers without CLS (SigLIP: Gemma 3, PaliGemma, OneVision) and other merging
projectors (Gemma 3's pooling, pixel shuffle) are refused with the reason.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from ..core.attention import hf_self_attention
from ..core.errors import ConfigError, LayerRangeError, UnsupportedError
from ..core.layout import SPECIAL
from .base import Pruner, check_ratio


def _run_layer(layer, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One CLIP/SigLIP encoder layer on ``h`` ``[n, T, D]``; ``mask``: additive ``[n, 1, T, T]`` or
    None (transformers 4.x and 5.x)."""
    params = inspect.signature(layer.forward).parameters
    out = layer(h, mask, None) if "causal_attention_mask" in params else layer(h, mask)
    return out[0] if isinstance(out, tuple) else out


def _select_and_merge(hid: torch.Tensor, cls_attn: torch.Tensor, k_d: int, k_c: int):
    """All images at once: ``hid`` ``[n, N, D]``, ``cls_attn`` ``[n, N]`` -> ``(keep [n, N] bool,
    merged [n, N, D], sizes [n, N])``. Dominant: the ``k_d`` patches CLS attends to most. Of the
    rest (in grid order), ``k_c`` evenly spaced ones are context targets; every other remaining
    patch joins the target its feature is most cosine-similar to, and each target's slot holds
    its group's mean (``sizes``: group sizes, 1 elsewhere)."""
    n, N, D = hid.shape
    dev = hid.device
    keep = torch.zeros(n, N, dtype=torch.bool, device=dev)
    if k_d:
        keep.scatter_(1, cls_attn.topk(k_d, dim=1).indices, True)
    merged = hid.clone()
    sizes = torch.ones(n, N, device=dev)
    rest = (~keep).nonzero()[:, 1].view(n, N - k_d)                      # [n, N - k_d], grid order
    if not k_c or not rest.shape[1]:
        return keep, merged, sizes
    pick = torch.linspace(0, rest.shape[1] - 1, k_c, device=dev).round().long().unique()
    is_t = torch.zeros(rest.shape[1], dtype=torch.bool, device=dev)
    is_t[pick] = True
    targets, others = rest[:, is_t], rest[:, ~is_t]                       # [n, k_c'], [n, o]
    keep.scatter_(1, targets, True)
    if not others.shape[1]:
        return keep, merged, sizes
    f = torch.nn.functional.normalize(hid.float(), dim=-1)
    ft = torch.gather(f, 1, targets[..., None].expand(-1, -1, D))
    fo = torch.gather(f, 1, others[..., None].expand(-1, -1, D))
    near = torch.einsum("nod,ntd->not", fo, ft).argmax(-1)                # [n, o] group of each other patch
    sums = torch.gather(hid, 1, targets[..., None].expand(-1, -1, D)).clone()
    sums.scatter_add_(1, near[..., None].expand(-1, -1, D), torch.gather(hid, 1, others[..., None].expand(-1, -1, D)))
    count = torch.ones(n, targets.shape[1], device=dev).scatter_add_(1, near, torch.ones(near.shape, device=dev))
    merged.scatter_(1, targets[..., None].expand(-1, -1, D), sums / count[..., None].to(sums.dtype))
    sizes.scatter_(1, targets, count)
    return keep, merged, sizes


class VisionZip(Pruner):
    """Options: ``keep``; ``contextual`` (share of the kept tokens that are merged context
    tokens, [0, 1]); ``proportional`` (merged tokens draw the attention of their group);
    ``tower_layer`` (select after this vision layer, 1..feature depth; default: the feature layer)."""

    name = "visionzip"
    acts_on_vision = True

    @dataclass
    class Config(Pruner.Config):
        contextual: float = 0.3
        proportional: bool = True
        tower_layer: int | None = None

        def validate(self) -> None:
            super().validate()
            check_ratio("visionzip", self.contextual, "contextual")
            if self.tower_layer is not None and self.tower_layer < 1:
                raise ConfigError(f"visionzip: tower_layer must be >= 1, got {self.tower_layer}")

    def split(self, n_image: int) -> tuple[int, int]:
        """``(dominant, contextual)`` token counts of the ``n_keep(n_image)`` kept."""
        k = self.n_keep(n_image)
        k_c = min(k, int(round(self.contextual * k))) if k > 1 else 0
        return k - k_c, k_c

    def tower_schedule(self, n_image: int, n_tower_layers: int, feature_depth: int) -> list[int]:
        """Up to the feature layer only; after ``tower_layer`` the CLS token and the kept tokens."""
        m = feature_depth if self.tower_layer is None else self.tower_layer
        return [n_image + 1] * m + [self.n_keep(n_image) + 1] * (feature_depth - m)

    def vision(self, runner, batch):
        """``(features [n, N, D], keep [n, N] bool, group sizes [n, N] or None)`` for the images of ``batch``."""
        a = runner.adapter
        if a.site_table["vision.embed"].packed:   # no CLS token: rank by attention received (visionzip_packed)
            from .visionzip_packed import packed_vision

            return packed_vision(self, runner, batch)
        supported(a, batch)
        layers = a.vision_blocks
        li = runner.tower_shape()[2]  # the feature layer is the output of encoder layer li - 1
        m = li if self.tower_layer is None else self.tower_layer
        if not 1 <= m <= li:
            raise LayerRangeError(f"visionzip: tower_layer {m} must be in 1..{li} (the feature layer's depth)")
        got = {}

        def hook(module, args, kwargs, output):
            got["attn"] = hf_self_attention(module, args, kwargs)

        h = runner.vision_input(batch)                           # [n, 1 + N, Dv], CLS first
        with a.raw_hooks() as hooks:
            hooks.forward(a.module(f"vision.blocks.{m - 1}.attn"), hook, with_kwargs=True)
            for j in range(m):
                h = _run_layer(layers[j], h)
        hid = h[:, 1:]                                           # [n, N, Dv] after tower layer m
        cls_attn = got["attn"][:, :, 0, 1:].float().mean(1)     # [n, N]
        n, N, _ = hid.shape
        k_d, k_c = self.split(N)
        keep, merged, sizes = _select_and_merge(hid, cls_attn, k_d, k_c)
        if m < li:  # the rest of the tower on CLS + the kept tokens (every row keeps the same count)
            pos = keep.nonzero()[:, 1].view(n, -1)                                  # [n, k] grid indices
            idx = pos[..., None].expand(-1, -1, merged.shape[-1])
            x = torch.cat([h[:, :1], torch.gather(merged, 1, idx)], 1)               # [n, 1 + k, Dv]
            mask = None
            if self.proportional:  # merged tokens draw the attention of the tokens they stand for
                bias = torch.cat([torch.zeros(n, 1, device=sizes.device), torch.gather(sizes, 1, pos).log()], 1).to(x.dtype)
                mask = bias[:, None, None, :].expand(-1, 1, x.shape[1], -1)
            for j in range(m, li):
                x = _run_layer(layers[j], x, mask)
            merged = merged.scatter(1, idx, x[:, 1:])
        feats = a.module("projector")(merged)
        return feats, keep, (sizes if self.proportional else None)


def supported(adapter, batch) -> None:
    """:class:`UnsupportedError` naming why VisionZip cannot run on ``adapter`` for ``batch``. It
    ranks a vision tower's patches by the attention of its CLS token, merges the rest, and feeds
    the projector only the kept patches, so it needs: a CLS token in the tower, one tower crop per
    image (no tiles), a projector that maps each tower patch to one language-model token (no
    pooling, no pixel shuffle, no 2x2 merge), and the 'default' feature selection (CLS dropped) of
    one vision feature layer."""
    fam = adapter.family
    vis, proj, lm = (batch.layouts.get(k) for k in ("vision", "projector", "lm"))
    if vis is None or proj is None:
        raise UnsupportedError(f"visionzip: {fam} has no vision/projector layouts to select patches in")
    if adapter.site_table["vision.embed"].packed:
        from .visionzip_packed import supported_packed

        return supported_packed(adapter, batch, None)
    if not all(vis.modality[r, 0] == SPECIAL and (vis.modality[r] == SPECIAL).sum() == 1 for r in range(vis.shape[0])):
        raise UnsupportedError(f"visionzip ranks patches by the vision tower's CLS attention; {fam}'s tower has no CLS token")
    if vis.num_images != lm.num_images:
        raise UnsupportedError(f"visionzip needs one vision crop per image; {fam} splits these {lm.num_images} image(s) into "
                               f"{vis.num_images} crops (tiles)")
    if proj.grid(0) != vis.grid(0) or len(proj.image_positions(0)) != len(lm.image_positions(0)):
        raise UnsupportedError(f"visionzip feeds the projector only the kept tower patches, one language-model token each; "
                               f"{fam}'s projector maps the {vis.grid(0)} tower grid to {proj.grid(0)} tokens")
    if len({g.batch_row for g in lm.images}) != lm.num_images:
        raise UnsupportedError("visionzip selects per image: give one image per prompt")
    cfg = adapter.config
    if getattr(cfg, "vision_feature_select_strategy", None) != "default" or not isinstance(getattr(cfg, "vision_feature_layer", None), int):
        raise UnsupportedError("visionzip needs one vision feature layer and the 'default' (CLS dropped) feature selection")
