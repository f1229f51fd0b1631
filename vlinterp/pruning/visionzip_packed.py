"""VisionZip on a packed vision tower without a CLS token (Qwen2-VL, Qwen2.5-VL), as the VisionZip
authors carry it over to such towers: the dominant tokens are the language-model image tokens whose
patches receive the most attention in the tower's last block (heads and the image's own queries
averaged; summed over each token's ``m x m`` patches). The rest are merged into evenly spaced context
tokens by cosine similarity, with proportional attention, as on CLS towers
(:func:`.visionzip._select_and_merge`).

The merger maps every ``m x m`` block of patches to one token, so there is no tower patch to drop
on its own: selection and merging act on the merger's output, the features the language model
reads. The tower runs whole (``tower_layer`` does not apply). Qwen3-VL adds DeepStack features
from inside the tower to the language model's image positions, which merged tokens would not
match, so it is refused, as are several images per prompt and video frames.

Shapes: ``n`` images (one per prompt), ``N`` language-model image tokens per image, ``P`` patches
per image (``N * m * m``), ``D`` the language model's width.
"""
from __future__ import annotations

import torch

from ..core.errors import UnsupportedError


def supported_packed(adapter, batch, tower_layer) -> None:
    """:class:`UnsupportedError` naming why VisionZip cannot run on this packed tower for ``batch``."""
    fam = adapter.family
    if tower_layer is not None:
        raise UnsupportedError(f"visionzip: tower_layer needs a CLS token to carry through the tower; {fam}'s packed "
                               "tower has none, so it selects after the whole tower")
    if getattr(adapter.config.vision_config, "deepstack_visual_indexes", None):
        raise UnsupportedError(f"visionzip: {fam} adds DeepStack features from inside the tower to the image positions, "
                               "which merged tokens would not match")
    lm, vis = batch.layouts["lm"], batch.layouts.get("vision")
    if vis is None or "projector" not in batch.layouts:
        raise UnsupportedError(f"visionzip: {fam} has no vision/projector layouts to select patches in")
    if len({g.batch_row for g in lm.images}) != lm.num_images or lm.num_images != batch.inputs["input_ids"].shape[0]:
        raise UnsupportedError("visionzip selects per image: give one image per prompt")
    thw = batch.inputs.get("image_grid_thw")
    if thw is None or bool((thw[:, 0] != 1).any()):
        raise UnsupportedError("visionzip: still images only (one temporal patch)")


def received_per_patch(module, args, kwargs) -> torch.Tensor:
    """The attention each packed row receives ``[Np]`` in a varlen vision block (inputs as the block's
    attention module gets them: ``hidden_states`` ``[Np, D]``, ``cu_seqlens``, rotary
    ``position_embeddings``), heads and its own sequence's queries averaged. One sequence at a time, so
    no ``[Np, Np]`` map of a whole batch of images is built."""
    from ..core.attention import varlen_qkv_attention

    h = args[0] if args else kwargs["hidden_states"]
    cu = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
    pe = kwargs.get("position_embeddings", args[2] if len(args) > 2 else None)
    out = torch.zeros(h.shape[0], device=h.device)
    bounds = [int(x) for x in cu.tolist()]
    for a, z in zip(bounds[:-1], bounds[1:]):
        kw = {"hidden_states": h[a:z], "cu_seqlens": torch.tensor([0, z - a], device=cu.device),
              "position_embeddings": None if pe is None else tuple(t[a:z] for t in pe)}
        out[a:z] = varlen_qkv_attention(module, (), kw)[0].float().mean(0).mean(0)
    return out


def received_attention(batch, per_patch: torch.Tensor) -> torch.Tensor:
    """``per_patch`` ``[Np]`` (the packed vision row) -> ``[n, N]``: the attention each language-model
    image token's ``m x m`` patches receive, per image, in the LM grid's row-major order."""
    vis, proj = batch.layouts["vision"], batch.layouts["projector"]
    rows = []
    for i in range(vis.num_images):
        got = per_patch[vis.image_positions(i).to(per_patch.device)]   # [P], the image's patches row-major
        h, w = vis.grid(i)
        r, c = proj.grid(i)
        m = h // r
        rows.append(got.reshape(r, m, c, m).sum((1, 3)).reshape(-1))  # each token's m x m patches
    return torch.stack(rows)


def packed_vision(pruner, runner, batch):
    """``(features [n, N, D], keep [n, N] bool, group sizes [n, N] or None, LM inputs)``: the merger's
    output with the dominant tokens kept and the rest merged into context tokens (see the module doc),
    and the decoder-layer inputs recorded while the tower ran, with the merged features in place
    (layer 0 reads the token embeddings as they are in these families), so the runner records nothing twice."""
    import dataclasses

    from .visionzip import _select_and_merge

    a = runner.adapter
    supported_packed(a, batch, pruner.tower_layer)
    got = {}

    def hook(module, args, kwargs, output):
        got["received"] = received_per_patch(module, args, kwargs)

    with a.raw_hooks() as hooks:
        hooks.forward(a.module(f"vision.blocks.{len(a.vision_blocks) - 1}.attn"), hook, with_kwargs=True)
        inputs = runner.lm_inputs(batch)                          # runs the tower once, records the LM's inputs
    score = received_attention(batch, got["received"])            # [n, N]
    n, N = score.shape
    feats = torch.zeros(n, N, inputs.h.shape[-1], dtype=inputs.h.dtype, device=inputs.h.device)
    for b in range(n):
        img = inputs.image[b]
        feats[b, inputs.grid[b, img]] = inputs.h[b, img]          # layer 0's input there: the merger's output
    k_d, k_c = pruner.split(N)
    keep, merged, sizes = _select_and_merge(feats, score.to(feats.device), k_d, k_c)
    h = inputs.h.clone()
    for b in range(n):
        img = inputs.image[b]
        h[b, img] = merged[b, inputs.grid[b, img]]
    return merged, keep, (sizes if pruner.proportional else None), dataclasses.replace(inputs, h=h)


__all__ = ["packed_vision", "received_attention", "received_per_patch", "supported_packed"]
