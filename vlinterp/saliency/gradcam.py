"""Grad-CAM on transformer tokens via pytorch-grad-cam (``pytorch_grad_cam.GradCAM``).

The target layer is a hook site's module; its ``[B, T, D]`` output is turned into the
``[B, D, rows, cols]`` map Grad-CAM expects by a ``reshape_transform`` built from our layout
(special positions dropped, patches put on their grid). On a VLM whose image reaches the LM as
tiles or packed patches (LLaVA-NeXT, OneVision, Qwen2/2.5/3-VL, InternVL, SmolVLM) the map is taken
at ``blocks.0.resid`` (the first LM block's output at the image tokens of every tile; the projected
tokens themselves are scattered into the LM input inside the model's forward, where no module
outputs them) over the image's token positions in one row, so it runs on every family. Default sites: ViT/CLIP
``vision.blocks.{n-2}.resid`` (the input of the last block: the last block's patch outputs do
not reach a CLS-pooled head, so their gradients are zero), LLaVA ``projector`` (the image tokens
the language model reads; llava-1.5 layouts, one image per prompt). Option ``layer`` picks
``vision.blocks.{layer}.resid``, the OUTPUT of block ``layer`` (``-n..n-1``, negative from the
end, like every method's layers; out of range: :class:`LayerRangeError`); ``site`` any site of the
``vision``/``projector`` stream. A site whose patch outputs get no gradient from the explained score
is refused (:class:`ConfigError`) instead of returning an all-zero map: on a CLS-pooled head
(ViT, CLIP) that is the last block's output (``layer=-1``), which the head never reads at the
patches; Grad-CAM's "last layer" is the last block's input, ``layer=-2`` (the default).
Scores are Grad-CAM's per-patch map before its upsampling and min-max scaling, ReLU'd.
Hooks are pytorch-grad-cam's own, released in ``finally``; parameter ``.grad``
is restored after its ``backward()``. (Not ``with GradCAM(...)``: its ``__exit__`` swallows IndexError.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError, LayerRangeError, ShapeMismatchError, UnsupportedError
from .base import AnswerConfig, SaliencyMethod, keep_param_grads, pixel_forward, pixels, tiled_input
from .targets import Targets


class _Wrapped(torch.nn.Module):
    """pixels -> explained scalars ``[k, n_targets]``, as a module for pytorch-grad-cam."""

    def __init__(self, fn, model):
        super().__init__()
        self.fn, self.inner = fn, model

    def forward(self, x):
        return self.fn(x)


def layout_reshape(layout, image_index: int = 0):
    """``reshape_transform``: ``[B, T, D]`` -> ``[B, D, rows, cols]`` keeping image ``image_index``'s
    patch positions (the same in every row of a stream)."""
    pos = layout.image_positions(image_index)
    rows, cols = layout.grid(image_index)

    def transform(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] <= int(pos.max()):
            raise ShapeMismatchError(f"gradcam: the target site's output {tuple(x.shape)} is not [B, T, D] over the layout's positions")
        x = x[:, pos.to(x.device)]
        return x.reshape(x.shape[0], rows, cols, x.shape[-1]).permute(0, 3, 1, 2)

    return transform


def tokens_reshape(layout, image_index: int = 0):
    """``reshape_transform`` for a token site of the LM stream: ``[B, T, D]`` -> ``[B, D, 1, P]``,
    image ``image_index``'s ``P`` patch positions (every tile, ``image_positions`` order) in one row.
    Grad-CAM's weights are the gradient's mean over the map, so one row of all patches gives each
    patch what a per-tile grid would, with the mean over the whole image."""
    pos = layout.image_positions(image_index)

    def transform(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] <= int(pos.max()):
            raise ShapeMismatchError(f"gradcam: the target site's output {tuple(x.shape)} is not [B, T, D] over the layout's positions")
        return x[:, pos.to(x.device)].permute(0, 2, 1)[:, :, None]

    return transform


def _token_forward(adapter, t: Targets):
    """``f(x) -> [1, n_targets]``: the batch as prepared (``x``, a placeholder of the map's shape for
    pytorch-grad-cam, is not read: the map lives on the LM's image tokens, not on pixels)."""
    def f(x: torch.Tensor) -> torch.Tensor:
        return t.select(adapter.run(t.batch, grad=True).logits).float()
    return f


def _cam_class():
    from pytorch_grad_cam import GradCAM

    class PatchGradCAM(GradCAM):
        """GradCAM keeping the raw per-patch cam (before ReLU, upsampling and scaling)."""

        raw: list
        grad_max: list

        def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth=False):
            cam = super().get_cam_image(input_tensor, target_layer, targets, activations, grads, eigen_smooth)
            self.raw.append(cam)
            self.grad_max.append(float(np.abs(np.asarray(grads)).max()))
            return cam

    return PatchGradCAM


class GradCAMMethod(SaliencyMethod):
    name = "gradcam"

    @dataclass
    class Config(AnswerConfig):
        """``layer``: ``vision.blocks.{layer}.resid`` (``None``: ``n - 2``); ``site``: any site name
        (wins over ``layer``)."""

        layer: int | None = None
        site: str | None = None

    def target_site(self, t: Targets) -> tuple[str, str]:
        """``(site, stream)`` of the target layer."""
        a, c = self.adapter, self.config
        if c.site is not None:
            site = a.sites(c.site)[0]
            return site, a.site_table[site].stream
        if a.kind == "vlm":
            if c.layer is not None:
                raise UnsupportedError("gradcam on LLaVA uses the projector output; pass site='vision.blocks.{i}.resid' for another")
            return "projector", "projector"
        n = a.num_layers("vision")
        if c.layer is not None and not -n <= c.layer < n:
            raise LayerRangeError(f"gradcam: layer {c.layer} out of range: the vision tower has {n} blocks ({-n}..{n - 1})")
        layer = n - 2 if c.layer is None else c.layer % n
        return ("vision.embed" if layer < 0 else f"vision.blocks.{layer}.resid"), "vision"

    def compute(self, t: Targets) -> np.ndarray:
        if self.adapter.kind == "vlm" and self.config.site is None and tiled_input(t):
            return self._run(t, "blocks.0.resid", tokens_reshape(t.layout, t.image_index),
                             torch.zeros(1, 1, 1, len(t.layout.image_positions(t.image_index))), _token_forward(self.adapter, t))
        site, stream = self.target_site(t)
        if stream not in t.batch.layouts:
            raise UnsupportedError(f"gradcam: site {site!r} is in stream {stream!r}, which this batch has no layout for")
        lay = t.batch.layouts[stream]
        if len(lay.images[0].tiles) != 1 or lay.grid(0) != t.layout.grid(t.image_index):
            raise UnsupportedError(f"gradcam: the {stream} grid {lay.grid(0)} differs from the explained image's patch grid")
        x = pixels(t).detach().clone().requires_grad_(True)
        return self._run(t, site, layout_reshape(lay), x, pixel_forward(self.adapter, t, grad=True))

    def _run(self, t: Targets, site: str, reshape, x: torch.Tensor, fn) -> np.ndarray:
        """pytorch-grad-cam at ``site`` (``reshape``: its output -> ``[B, D, rows, cols]``), the model
        run by ``fn(x)``: one raw per-patch map per target, ReLU'd, ``[n_targets, n_patches]``."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        model = _Wrapped(fn, self.adapter.model)
        t.meta["site"] = site
        out = []
        with keep_param_grads(self.adapter.model):
            cam = _cam_class()(model, [self.adapter.module(site)], reshape_transform=reshape)
            try:  # not `with cam:`, whose __exit__ swallows IndexError
                for k in range(t.n):
                    cam.raw, cam.grad_max = [], []
                    cam(x, targets=[ClassifierOutputTarget(k)])
                    if cam.grad_max[0] == 0.0:
                        self._no_gradient(site)
                    out.append(np.maximum(np.asarray(cam.raw[0])[0], 0).reshape(-1))
            finally:
                cam.activations_and_grads.release()
        return np.stack(out)

    def _no_gradient(self, site: str):
        c = self.config
        why = (f"gradcam: the explained score has no gradient at {site!r}: its patch outputs do not reach the "
               "model's output (a CLS-pooled head reads only CLS after the last block), so the map would be all zero")
        if c.site is None and c.layer is None:
            raise UnsupportedError(why)
        n = self.adapter.num_layers("vision") if self.adapter.kind != "vlm" else 0
        hint = f"; use a layer up to {n - 2} (the default, {n - 2}, is the last block's input)" if n >= 2 and c.site is None else ""
        raise ConfigError(why + hint)
