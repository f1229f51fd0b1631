"""DINOv2 backend of the ViT family (see :mod:`vlinterp.adapters.vit`): transformers ``Dinov2Model``,
``Dinov2WithRegistersModel`` and their ``...ForImageClassification`` heads.

The family entry is data: :data:`ENTRIES` (model type -> classes, the base model's attribute in the
classifier) and :data:`SITES` (uniform site -> module path; blocks are ``encoder.layer``, singular).
Layout, one row per image: CLS (``special``, span ``cls``), the registers (``special``, span
``registers``; ``Dinov2WithRegistersModel``), then the ``rows x cols`` patches (``image``). The grid
is the processed pixels divided by the patch size (the position embeddings are interpolated to any
size); the box of original pixels it covers follows ``BitImageProcessor``'s shortest-edge resize and
centre crop, so ``layout.to_heatmap`` lands on the original image.

The explained score (``run(batch).logits``, ``class_names()``), chosen in this order:

* a checkpoint WITH a classifier (``Dinov2ForImageClassification``): its class logits ``[B, labels]``
  (the linear head on ``[CLS, mean of patches]``);
* prototypes set by :meth:`Dinov2Adapter.set_prototypes` / :meth:`~Dinov2Adapter.set_references`:
  the cosine similarity of the pooled feature (CLS after the final LayerNorm, ``pooler_output``)
  with each prototype, ``[B, K]`` (e.g. "what in this image makes it look like the reference");
* otherwise ``feature_norm`` ``[B, 1]``: the L2 norm of the CLS token entering the final
  LayerNorm (the output of the last block). The pooled feature itself is a LayerNorm output whose
  norm the normalisation pins (exactly constant with unit LayerNorm weights): nothing to explain.
  The pre-norm CLS norm is the magnitude of what the backbone accumulated in its summary token, a
  label-free score every gradient and perturbation method can explain; set prototypes to ask a
  sharper question.
"""
from __future__ import annotations

import json
import os

import torch

from ..core.attention import hf_self_attention
from ..core.errors import LoadError, PromptError, UnsupportedError
from ..core.hooks import Site
from ..core.types import Batch
from .clip_siglip import table_sites
from .vit import VitAdapter

# model_type -> transformers classes (base model, classifier, config) and the base model's attribute
# inside the classifier
ENTRIES = {
    "dinov2": dict(base="Dinov2Model", head="Dinov2ForImageClassification", config="Dinov2Config", attr="dinov2"),
    "dinov2_with_registers": dict(base="Dinov2WithRegistersModel", head="Dinov2WithRegistersForImageClassification",
                                  config="Dinov2WithRegistersConfig", attr="dinov2_with_registers"),
}
# uniform site -> module path inside the base model
SITES = {
    "vision.embed": "embeddings",
    "vision.blocks.{i}.attn": "encoder.layer.{i}.attention",
    "vision.blocks.{i}.mlp": "encoder.layer.{i}.mlp",
    "vision.blocks.{i}.resid": "encoder.layer.{i}",
    "vision.norm": "layernorm",
}
# facebook/dinov2-small scaled down: 14 px patches, 56 px crops -> 4x4 grid (+ CLS, + 4 registers)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14)
NORM_LABEL = "feature_norm"


def dinov2_model_type(path: str) -> str | None:
    """``dinov2`` / ``dinov2_with_registers`` when ``path`` is a transformers directory of one."""
    path = os.fspath(path)
    try:
        with open(os.path.join(path, "config.json")) as f:
            mt = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return mt if mt in ENTRIES else None


def _classes(model_type: str):
    """``(base class, classifier class, config class, base attribute)`` of ``model_type``."""
    import transformers

    e = ENTRIES[model_type]
    return getattr(transformers, e["base"]), getattr(transformers, e["head"]), getattr(transformers, e["config"]), e["attr"]


def tiny_processor(crop: int):
    """``BitImageProcessor`` as DINOv2 checkpoints ship it (shortest edge 256 -> crop 224, bicubic,
    ImageNet mean/std), scaled to ``crop``."""
    from transformers import BitImageProcessor

    return BitImageProcessor(size={"shortest_edge": round(crop * 256 / 224)}, crop_size={"height": crop, "width": crop},
                             resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


class Dinov2Adapter(VitAdapter):
    """transformers DINOv2 (+ registers), with or without a classifier; see the module doc."""

    backend = "hf-dinov2"

    def __init__(self, model: torch.nn.Module, processor=None, name: str = ""):
        mt = getattr(getattr(model, "config", None), "model_type", None)
        if mt not in ENTRIES:
            raise LoadError(f"expected a transformers DINOv2 model, got {type(model).__name__}")
        base_cls, head_cls, _, attr = _classes(mt)
        if isinstance(model, head_cls):
            self.base_path, self.base = attr + ".", getattr(model, attr)
        elif isinstance(model, base_cls):
            self.base_path, self.base = "", model
        else:
            raise LoadError(f"expected {base_cls.__name__} or {head_cls.__name__}, got {type(model).__name__}")
        self.has_classifier = bool(self.base_path) and model.config.num_labels > 0
        self.n_registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
        self.prototypes: torch.Tensor | None = None
        self.prototype_names: list[str] = []
        if processor is None:
            processor = tiny_processor(_pair(model.config.image_size)[0])
        super().__init__(model, processor, name)

    # --------------------------------------------------------------- loading
    @classmethod
    def can_load(cls, path) -> bool:
        return dinov2_model_type(path) is not None

    @classmethod
    def from_path(cls, path, device=None, dtype=None, attn_implementation: str | None = None, **kw) -> "Dinov2Adapter":
        """``from_pretrained(local_dir)`` of the classifier class when ``config.json`` names it in
        ``architectures``, else of the base model; the image processor from ``preprocessor_config.json``
        (else DINOv2's default ``BitImageProcessor`` at the config's image size)."""
        from transformers import AutoImageProcessor

        path = os.fspath(path)
        mt = dinov2_model_type(path)
        if mt is None:
            raise LoadError(f"{path!r} is not a DINOv2 directory (config.json model_type dinov2 / dinov2_with_registers)")
        base_cls, head_cls, _, _ = _classes(mt)
        with open(os.path.join(path, "config.json")) as f:
            archs = json.load(f).get("architectures") or []
        cls_ = head_cls if head_cls.__name__ in archs else base_cls
        if attn_implementation is not None:
            kw["attn_implementation"] = attn_implementation
        if dtype is not None:
            kw["dtype"] = dtype
        model = cls_.from_pretrained(path, local_files_only=True, **kw).eval()
        proc = None
        if os.path.isfile(os.path.join(path, "preprocessor_config.json")):
            proc = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        return cls(model.to(device) if device is not None else model, proc, name=os.path.basename(os.path.normpath(path)))

    @classmethod
    def tiny(cls, variant: str = "dinov2", num_labels: int = 0, id2label=None, attn_implementation: str = "sdpa",
             device=None, dtype=None, **kw) -> "Dinov2Adapter":
        """Random ``Dinov2Model`` (``dinov2``) or ``Dinov2WithRegistersModel`` (``dinov2-reg``, 4
        registers), seed 0: 56 px crops, 14 px patches (4x4 grid), width 64, 2 layers, 2 heads;
        ``num_labels`` > 0 (or ``id2label``) builds the ``...ForImageClassification`` instead."""
        mt = {"dinov2": "dinov2", "dinov2-reg": "dinov2_with_registers"}.get(variant)
        if mt is None:
            raise LoadError(f"unknown DINOv2 tiny variant {variant!r}; known: dinov2, dinov2-reg")
        base_cls, head_cls, cfg_cls, _ = _classes(mt)
        if id2label is not None:
            kw["id2label"] = {int(k): str(v) for k, v in (id2label.items() if isinstance(id2label, dict) else enumerate(id2label))}
            num_labels = len(kw["id2label"])
        if num_labels and "id2label" not in kw:
            kw["num_labels"] = num_labels
        cfg = cfg_cls(**{**TINY, **kw})
        cfg._attn_implementation = attn_implementation
        torch.manual_seed(0)
        model = (head_cls if num_labels else base_cls)(cfg).eval()
        return cls(model.to(device=device, dtype=dtype), tiny_processor(cfg.image_size), name=f"tiny:{variant}")

    def save_pretrained(self, out_dir: str) -> str:
        """HF format: ``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``."""
        from .base import save_pretrained_dir

        return save_pretrained_dir(out_dir, self.model, self.processor)

    # ----------------------------------------------------------------- sites
    def build_sites(self) -> dict[str, Site]:
        table = {k: self.base_path + v for k, v in SITES.items()}
        sites = table_sites(table, {"vision": self.model.config.num_hidden_layers})
        if self.has_classifier:
            sites["logits"] = Site("classifier", "vision")
        return sites

    # ---------------------------------------------------------------- scores
    @property
    def num_classes(self) -> int:
        if self.has_classifier:
            return int(self.model.config.num_labels)
        return len(self.prototype_names) if self.prototypes is not None else 1

    def _label_names(self):
        if self.has_classifier:
            return dict(self.model.config.id2label or {}) or None
        return list(self.prototype_names) if self.prototypes is not None else [NORM_LABEL]

    @property
    def score_kind(self) -> str:
        """``classifier``, ``prototypes`` or ``feature_norm``: what ``logits`` are (see the module doc)."""
        return "classifier" if self.has_classifier else ("prototypes" if self.prototypes is not None else NORM_LABEL)

    def set_prototypes(self, features: torch.Tensor | None, names=None) -> None:
        """Explain cosine similarity to ``features`` ``[K, hidden]`` (pooled-feature space) named
        ``names``; ``None`` goes back to ``feature_norm``. Not for checkpoints with a classifier."""
        if self.has_classifier:
            raise UnsupportedError(f"{self.name} has a classifier; its class logits are the explained score")
        if features is None:
            self.prototypes, self.prototype_names = None, []
            return
        f = torch.as_tensor(features).detach().float()
        D = self.model.config.hidden_size
        if f.dim() != 2 or f.shape[1] != D or f.shape[0] == 0:
            raise PromptError(f"prototypes must be [K, {D}] features, got {tuple(f.shape)}")
        names = [f"prototype_{k}" for k in range(len(f))] if names is None else [str(n) for n in names]
        if len(names) != len(f) or len(set(names)) != len(names):
            raise PromptError(f"need {len(f)} distinct prototype names, got {names}")
        self.prototypes, self.prototype_names = f, names

    def set_references(self, images, names=None) -> None:
        """Prototypes = the pooled features of reference ``images`` (paths/PIL/arrays); names default
        to ``reference_{k}``."""
        images = images if isinstance(images, (list, tuple)) else [images]
        saved, self.prototypes = self.prototypes, None
        try:
            with torch.no_grad():
                feats = self.features(self.prepare(images=list(images)))
        finally:
            self.prototypes = saved
        self.set_prototypes(feats, names if names is not None else [f"reference_{k}" for k in range(len(images))])

    def features(self, batch: Batch) -> torch.Tensor:
        """Pooled features ``[B, hidden]`` (CLS after the final LayerNorm; active edits apply)."""
        batch = self._on_device(batch)
        with torch.no_grad(), self._running(batch):
            return self.base(pixel_values=batch.inputs["pixel_values"].to(self.dtype)).pooler_output

    # --------------------------------------------------------------- running
    def prepare(self, images=None, text=None, **kw) -> Batch:
        """``images`` -> ``Batch``: ``inputs["pixel_values"]`` ``[B, 3, H, W]`` from the image
        processor; layout ``[B, 1 + registers + rows*cols]``."""
        from .clip_hf import HFClipBackend

        imgs = self._images(images, text)
        x = self.processor(images=imgs, return_tensors="pt")["pixel_values"]
        p = _pair(self.model.config.patch_size)
        rows, cols = x.shape[-2] // p[0], x.shape[-1] // p[1]
        if rows < 1 or cols < 1:
            raise UnsupportedError(f"the image processor gave {tuple(x.shape[-2:])} pixels: smaller than one {p} patch")
        boxes = [HFClipBackend._box(self.processor, im.height, im.width, (rows, cols), p[0]) for im in imgs]
        layout = self._layout([(im.height, im.width) for im in imgs], boxes, (rows, cols), 1, self.n_registers)
        return Batch({"pixel_values": x}, {"vision": layout}, "vision", images=imgs, text=[],
                     meta={"backend": self.backend, "score": self.score_kind})

    def _forward(self, batch: Batch):
        """Explained scores ``[B, K]`` (see the module doc); raw is the model output."""
        x = batch.inputs["pixel_values"].to(self.dtype)
        if self.has_classifier:
            out = self.model(pixel_values=x)
            return out.logits, out
        out = self.base(pixel_values=x, output_hidden_states=True)
        if self.prototypes is not None:
            f = out.pooler_output.float()
            proto = self.prototypes.to(f.device)
            sims = (f / f.norm(dim=-1, keepdim=True)) @ (proto / proto.norm(dim=-1, keepdim=True)).T
            return sims, out
        return out.hidden_states[-1][:, 0].float().norm(dim=-1, keepdim=True), out

    def _attention_probs(self, site, module, args, kwargs, output) -> torch.Tensor:
        """``[B, heads, T, T]`` from the attention module's input hidden states (and mask, if any)."""
        if not hasattr(module, "q_proj"):
            raise UnsupportedError(f"{site}: attention module {type(module).__name__} has no q_proj/k_proj")
        kw = dict(kwargs)
        if len(args) > 1 and "attention_mask" not in kw:
            kw["attention_mask"] = args[1]
        return hf_self_attention(module, args[:1], kw)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))
