"""timm ``VisionTransformer`` backend of the ViT family (see :mod:`vlinterp.adapters.vit`).

Preprocessing is timm's own eval transform (``resolve_data_config`` + ``create_transform``:
resize + centre crop); the box of original pixels the patch grid covers is tracked through
the actual transform steps, so non-square originals map back exactly. Attention maps are
recomputed from each ``Attention`` module's input (timm's fused kernel returns none).
On disk: timm's hub format, ``config.json`` (``architecture``, ``num_classes``,
``model_args``, ``pretrained_cfg``) + ``model.safetensors``, loaded by timm's own
``create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))``.
"""
from __future__ import annotations

import dataclasses
import json
import os

import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.data.transforms import CenterCropOrPad, ResizeKeepRatio, TrimBorder
from timm.models import PretrainedCfg, VisionTransformer
from torchvision import transforms as T

from ..core.attention import timm_attention
from ..core.errors import LoadError, ShapeMismatchError, UnsupportedError
from ..core.hooks import Site
from ..core.types import Batch
from .base import block_sites
from .vit import TIMM_WEIGHTS, VitAdapter, timm_files

ARCH = "vit_small_patch16_224"  # ViT-S/16, scaled down by model_args in tiny()


def _center_offset(size: int, crop: int) -> int:
    """Left/top offset (in input pixels) of a centre crop, torchvision/timm rule (pads if needed)."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


def transform_with_box(transform, img):
    """Run a timm/torchvision eval ``Compose`` on PIL ``img`` step by step.

    Returns ``(pixels [3, h, w], box)`` where ``box = (x0, y0, x1, y1)`` is the region of
    ``img`` (original pixels; may extend past it where a step padded) that the output covers.
    """
    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    ax = ay = 0.0  # original x = ax + sx * current x
    sx = sy = 1.0
    cur = img
    for t in steps:
        if not isinstance(cur, Image.Image):  # tensor/array by now: only value ops follow
            cur = t(cur)
            continue
        w0, h0 = cur.size
        out = t(cur)
        if not isinstance(out, Image.Image):
            cur = out
            continue
        w1, h1 = out.size
        if isinstance(t, (T.Resize, ResizeKeepRatio)):
            sx, sy = sx * w0 / w1, sy * h0 / h1
        elif isinstance(t, (T.CenterCrop, CenterCropOrPad)):
            ax, ay = ax + sx * _center_offset(w0, w1), ay + sy * _center_offset(h0, h1)
        elif isinstance(t, TrimBorder):
            ax, ay = ax + sx * min(t.border_size, h0), ay + sy * min(t.border_size, h0)
        elif (w0, h0) != (w1, h1):
            raise UnsupportedError(f"cannot track image geometry through transform {type(t).__name__}")
        cur = out
    if not isinstance(cur, torch.Tensor):
        raise UnsupportedError("the timm transform did not produce a tensor")
    h, w = cur.shape[-2:]
    return cur, (ax, ay, ax + sx * w, ay + sy * h)


def _overlay_from_config(cfg: dict, weights: str) -> tuple[str, dict, dict]:
    """timm hub ``config.json`` -> ``(architecture, pretrained_cfg overlay, model kwargs)``,
    following timm's own parsing (legacy single-dict configs, top-level overrides)."""
    cfg = json.loads(json.dumps(cfg))
    if "pretrained_cfg" not in cfg:  # legacy single-dict config
        pcfg = dict(cfg)
        arch = pcfg.pop("architecture")
        if "labels" in pcfg:
            pcfg["label_names"] = pcfg.pop("labels")
        cfg = {"architecture": arch, "pretrained_cfg": pcfg, **{k: pcfg[k] for k in ("num_classes", "model_args") if k in pcfg}}
    pcfg = dict(cfg["pretrained_cfg"])
    for key in ("num_classes", "label_names", "label_descriptions"):
        if key in cfg:
            pcfg[key] = cfg[key]
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    overlay = {k: tuple(v) if isinstance(v, list) else v for k, v in pcfg.items() if k in fields}
    # weights from the local file only: clear every remote source
    overlay.update(file=weights, url=None, hf_hub_id=None, hf_hub_filename=None, source=None, state_dict=None, custom_load=False)
    kwargs = dict(cfg.get("model_args") or {})
    if "num_classes" in pcfg:
        kwargs["num_classes"] = pcfg["num_classes"]
    return cfg["architecture"], overlay, kwargs


class TimmVitAdapter(VitAdapter):
    """timm ``VisionTransformer``. ``config`` is the hub-format ``config.json`` dict (if any)."""

    backend = "timm"

    def __init__(self, model: torch.nn.Module, config: dict | None = None, name: str = ""):
        if not isinstance(model, VisionTransformer):
            raise LoadError(f"expected a timm VisionTransformer, got {type(model).__name__}")
        self.config = dict(config or {})
        data_config = resolve_data_config(model=model)
        pe = model.patch_embed
        if not getattr(model, "dynamic_img_size", False) and tuple(data_config["input_size"][1:]) != tuple(pe.img_size):
            data_config = resolve_data_config({"input_size": (data_config["input_size"][0], *pe.img_size)}, model=model)
        self.data_config = data_config
        super().__init__(model, create_transform(**data_config), name or model.pretrained_cfg.get("architecture", ""))

    # --------------------------------------------------------------- loading
    @classmethod
    def can_load(cls, path) -> bool:
        return timm_files(path) is not None

    @classmethod
    def from_path(cls, path, device=None, dtype=None, **kw) -> "TimmVitAdapter":
        """``timm.create_model(architecture, pretrained=True, pretrained_cfg_overlay=dict(file=<local
        model.safetensors>), **model_args)``: timm's local-file loading, no network."""
        files = timm_files(path)
        if files is None:
            raise LoadError(f"{os.fspath(path)!r}: not a timm checkpoint (config.json with 'architecture' + {TIMM_WEIGHTS})")
        with open(files[0]) as f:
            cfg = json.load(f)
        arch, overlay, kwargs = _overlay_from_config(cfg, files[1])
        if not timm.is_model(arch):
            raise LoadError(f"{os.fspath(path)!r}: timm has no architecture {arch!r}")
        kwargs.update(kw)
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        return cls(model.to(device=device, dtype=dtype), cfg, name=os.path.basename(os.path.dirname(files[0])))

    @classmethod
    def tiny(cls, variant: str = "vit", num_classes: int = 10, img_size=64, patch_size: int = 16, reg_tokens: int = 0,
             embed_dim: int = 64, depth: int = 2, num_heads: int = 2, label_names=None, device=None, dtype=None,
             **kw) -> "TimmVitAdapter":
        """Random ViT-S/16-style ``VisionTransformer`` (seed 0): 64 px, 16 px patches (4x4 grid),
        width 64, 2 blocks, 2 heads, CLS token, 10 classes; other ``kw`` go to ``timm.create_model``."""
        torch.manual_seed(0)
        model = timm.create_model(ARCH, pretrained=False, num_classes=num_classes, img_size=img_size, patch_size=patch_size,
                                  reg_tokens=reg_tokens, embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kw)
        pc = model.pretrained_cfg
        for key in ("url", "hf_hub_id", "tag", "license"):  # random weights: no source to point at
            pc.pop(key, None)
        pc.update(input_size=(3, *model.patch_embed.img_size), num_classes=num_classes, custom_load=False)
        if label_names is not None:
            pc["label_names"] = tuple(label_names)
        return cls(model.to(device=device, dtype=dtype), {}, name=f"tiny:{variant}")

    def save_pretrained(self, out_dir: str) -> str:
        """timm hub format via timm's ``save_for_hf``: ``config.json`` + ``model.safetensors``."""
        from timm.models import save_for_hf

        from ..core.io import output_dir

        labels = self._label_names()
        with output_dir(out_dir, "out_dir") as tmp:  # never over files vlinterp did not write
            save_for_hf(self.model, tmp, model_config={"label_names": list(labels)} if labels else None, safe_serialization=True)
        return out_dir

    # ----------------------------------------------------------------- sites
    def build_sites(self) -> dict[str, Site]:
        n = len(self.model.blocks)
        sites = {"vision.embed": Site("norm_pre", "vision")}
        sites.update(block_sites("vision.blocks.", {"attn": "blocks.{i}.attn", "mlp": "blocks.{i}.mlp", "resid": "blocks.{i}"}, n, "vision"))
        sites["vision.norm"] = Site("norm", "vision")
        sites["logits"] = Site("head", "vision")
        return sites

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def _label_names(self):
        return self.config.get("label_names") or self.model.pretrained_cfg.get("label_names")

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid ``(rows, cols)`` for an input of ``height x width`` pixels."""
        pe = self.model.patch_embed
        if getattr(self.model, "dynamic_img_size", False):
            return tuple(pe.dynamic_feat_size((height, width)))
        if (height, width) != tuple(pe.img_size):
            raise ShapeMismatchError(f"input is {height}x{width} pixels; this model takes {pe.img_size[0]}x{pe.img_size[1]}")
        return tuple(pe.grid_size)

    # --------------------------------------------------------------- running
    def prepare(self, images=None, text=None, **kw) -> Batch:
        """``images`` -> ``Batch``: ``inputs["pixel_values"]`` ``[B, 3, H, W]`` from timm's eval
        transform; layout ``[B, prefix + rows*cols]`` (CLS, registers, patches)."""
        imgs = self._images(images, text)
        pix, boxes = zip(*(transform_with_box(self.processor, im) for im in imgs))
        x = torch.stack(pix)
        rows, cols = self.grid(*x.shape[-2:])
        p = self.model.patch_embed.patch_size
        # the grid covers rows*p x cols*p input pixels (all of them unless the model truncates)
        fy, fx = rows * p[0] / x.shape[-2], cols * p[1] / x.shape[-1]
        boxes = [(b[0], b[1], b[0] + fx * (b[2] - b[0]), b[1] + fy * (b[3] - b[1])) for b in boxes]
        n_reg = int(getattr(self.model, "num_reg_tokens", 0) or 0)
        n_cls = int(self.model.num_prefix_tokens) - n_reg
        layout = self._layout([(im.height, im.width) for im in imgs], boxes, (rows, cols), n_cls, n_reg)
        return Batch({"pixel_values": x}, {"vision": layout}, "vision", images=imgs, text=[],
                     meta={"backend": "timm", "data_config": self.data_config})

    def _forward(self, batch: Batch):
        """Class logits ``[B, num_classes]`` (raw output is the same tensor)."""
        logits = self.model(batch.inputs["pixel_values"].to(self.dtype))
        return logits, logits

    def _attention_probs(self, site, module, args, kwargs, output) -> torch.Tensor:
        """``[B, heads, T, T]`` from the ``Attention`` module's input ``x`` (``args[0]``)."""
        if not hasattr(module, "qkv"):
            raise UnsupportedError(f"{site}: attention module {type(module).__name__} has no fused qkv projection")
        if kwargs.get("attn_mask") is not None or kwargs.get("is_causal"):
            raise UnsupportedError(f"{site}: attention maps with an attention mask are not supported")
        x = args[0] if args else kwargs["x"]
        return timm_attention(module, x)
