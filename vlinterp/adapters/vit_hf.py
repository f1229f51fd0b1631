"""transformers ``ViTForImageClassification`` backend of the ViT family (see :mod:`vlinterp.adapters.vit`).

Preprocessing is the checkpoint's own image processor (``ViTImageProcessor``: a plain resize
to ``size``, so the patch grid covers the whole original image). Attention maps are
recomputed from each ``ViTAttention`` module's input with
:func:`vlinterp.core.attention.hf_self_attention`, whatever kernel (sdpa by default) runs.
"""
from __future__ import annotations

import os

import torch
from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor

from ..core.attention import hf_self_attention
from ..core.errors import LoadError, ShapeMismatchError, UnsupportedError
from ..core.hooks import Site
from ..core.types import Batch
from .base import block_sites
from .vit import VitAdapter, is_hf_vit


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def processor_box(processor, width: int, height: int) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of the original ``width x height`` image that the processor's
    output covers: the whole image after a plain resize to ``size={"height", "width"}``;
    the centre-crop region after a ``shortest_edge`` resize + ``crop_size`` crop."""
    size = dict(getattr(processor, "size", None) or {})
    sx = sy = 1.0
    w, h = width, height
    if getattr(processor, "do_resize", True) and size:
        if "height" in size and "width" in size:
            w, h = int(size["width"]), int(size["height"])
        elif "shortest_edge" in size:
            s = int(size["shortest_edge"])
            w, h = (s, int(s * height / width)) if width <= height else (int(s * width / height), s)
        else:
            raise UnsupportedError(f"image processor size {size} is not supported by the ViT adapter")
        sx, sy = width / w, height / h
    x0 = y0 = 0.0
    if getattr(processor, "do_center_crop", False):
        crop = processor.crop_size
        cw, ch = int(crop["width"]), int(crop["height"])
        off = lambda n, c: -((c - n) // 2) if c > n else int(round((n - c) / 2.0))  # noqa: E731
        x0, y0 = off(w, cw) * sx, off(h, ch) * sy
        w, h = cw, ch
    return (x0, y0, x0 + w * sx, y0 + h * sy)


class HfVitAdapter(VitAdapter):
    """transformers ``ViTForImageClassification`` + its image processor."""

    backend = "hf"

    def __init__(self, model: torch.nn.Module, processor=None, name: str = ""):
        if not isinstance(model, ViTForImageClassification):
            raise LoadError(f"expected a transformers ViTForImageClassification, got {type(model).__name__}")
        if not hasattr(model.vit, "layers"):
            raise LoadError("this ViTForImageClassification has no vit.layers (transformers >= 5 layout expected)")
        if processor is None:
            processor = ViTImageProcessor(size=dict(zip(("height", "width"), _pair(model.config.image_size))))
        super().__init__(model, processor, name)

    # --------------------------------------------------------------- loading
    @classmethod
    def can_load(cls, path) -> bool:
        return is_hf_vit(path)

    @classmethod
    def from_path(cls, path, device=None, dtype=None, attn_implementation: str | None = None, **kw) -> "HfVitAdapter":
        """``ViTForImageClassification.from_pretrained(local_dir)`` + its image processor
        (``preprocessor_config.json``, else a ``ViTImageProcessor`` at the config's image size)."""
        path = os.fspath(path)
        if attn_implementation is not None:
            kw["attn_implementation"] = attn_implementation
        if dtype is not None:
            kw["dtype"] = dtype
        model = ViTForImageClassification.from_pretrained(path, local_files_only=True, **kw)
        proc = None
        if os.path.isfile(os.path.join(path, "preprocessor_config.json")):
            proc = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        return cls(model.to(device) if device is not None else model, proc, name=os.path.basename(os.path.normpath(path)))

    @classmethod
    def tiny(cls, variant: str = "vit-hf", num_labels: int = 10, image_size: int = 64, patch_size: int = 16,
             hidden_size: int = 64, num_hidden_layers: int = 2, num_attention_heads: int = 2,
             attn_implementation: str = "sdpa", id2label=None, device=None, dtype=None, **kw) -> "HfVitAdapter":
        """Random ``ViTForImageClassification`` (seed 0): 64 px, 16 px patches (4x4 grid),
        hidden 64, 2 layers, 2 heads, 10 labels; other ``kw`` go to ``ViTConfig``."""
        if id2label is not None:
            kw["id2label"] = {int(k): str(v) for k, v in (id2label.items() if isinstance(id2label, dict) else enumerate(id2label))}
            num_labels = len(kw["id2label"])
        cfg = ViTConfig(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                        intermediate_size=kw.pop("intermediate_size", 4 * hidden_size), image_size=image_size,
                        patch_size=patch_size, num_labels=num_labels, **kw)
        cfg._attn_implementation = attn_implementation
        torch.manual_seed(0)
        model = ViTForImageClassification(cfg)
        proc = ViTImageProcessor(size=dict(zip(("height", "width"), _pair(image_size))))
        return cls(model.to(device=device, dtype=dtype), proc, name=f"tiny:{variant}")

    def save_pretrained(self, out_dir: str) -> str:
        """HF format: ``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``."""
        from .base import save_pretrained_dir

        return save_pretrained_dir(out_dir, self.model, self.processor)

    # ----------------------------------------------------------------- sites
    def build_sites(self) -> dict[str, Site]:
        n = len(self.model.vit.layers)
        sites = {"vision.embed": Site("vit.embeddings", "vision")}
        fmt = {"attn": "vit.layers.{i}.attention", "mlp": "vit.layers.{i}.mlp", "resid": "vit.layers.{i}"}
        sites.update(block_sites("vision.blocks.", fmt, n, "vision"))
        sites["vision.norm"] = Site("vit.layernorm", "vision")
        sites["logits"] = Site("classifier", "vision")
        return sites

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    def _label_names(self):
        return dict(self.model.config.id2label or {}) or None

    # --------------------------------------------------------------- running
    def prepare(self, images=None, text=None, **kw) -> Batch:
        """``images`` -> ``Batch``: ``inputs["pixel_values"]`` ``[B, 3, H, W]`` from the image
        processor; layout ``[B, 1 + rows*cols]`` (CLS, patches)."""
        imgs = self._images(images, text)
        x = self.processor(images=imgs, return_tensors="pt")["pixel_values"]
        H, W = x.shape[-2:]
        want = _pair(self.model.config.image_size)
        if (H, W) != want:
            raise ShapeMismatchError(f"the image processor gave {H}x{W} pixels; the model takes {want[0]}x{want[1]}")
        p = _pair(self.model.config.patch_size)
        rows, cols = H // p[0], W // p[1]
        boxes = []
        for im in imgs:
            x0, y0, x1, y1 = processor_box(self.processor, im.width, im.height)
            boxes.append((x0, y0, x0 + (x1 - x0) * cols * p[1] / W, y0 + (y1 - y0) * rows * p[0] / H))
        layout = self._layout([(im.height, im.width) for im in imgs], boxes, (rows, cols), 1, 0)
        return Batch({"pixel_values": x}, {"vision": layout}, "vision", images=imgs, text=[], meta={"backend": "hf"})

    def _forward(self, batch: Batch):
        """Class logits ``[B, num_labels]``; raw is the ``ImageClassifierOutput``."""
        out = self.model(pixel_values=batch.inputs["pixel_values"].to(self.dtype))
        return out.logits, out

    def _attention_probs(self, site, module, args, kwargs, output) -> torch.Tensor:
        """``[B, heads, T, T]`` from ``ViTAttention``'s input hidden states (and mask, if any)."""
        if not hasattr(module, "q_proj"):
            raise UnsupportedError(f"{site}: attention module {type(module).__name__} has no q_proj/k_proj")
        kw = dict(kwargs)
        if len(args) > 1 and "attention_mask" not in kw:
            kw["attention_mask"] = args[1]
        return hf_self_attention(module, args[:1], kw)
