"""CLIP family: open_clip ``CLIP``, transformers ``CLIPModel``, ``SiglipModel`` and ``Siglip2Model``
behind one adapter (SigLIP/SigLIP2: see :mod:`vlinterp.adapters.clip_siglip` for their layouts,
no CLS, attention-pooling head, NaFlex grids, and sigmoid scores).

Streams (one :class:`TokenLayout` each):

* ``vision`` (main): one row per image, ``1 CLS (special) + rows*cols patches`` with
  ``(row, col)`` on the patch grid; the tile box is the centre-crop region mapped back to
  original-image pixels, so ``layout.to_heatmap`` returns maps at the original size.
* ``text``: one row per prompt, ``SOT (special) + words (text, span "prompt") + EOT
  (special, spans "eot" and "last": the position the model pools) + padding (pad)``.
  open_clip pools at ``argmax(ids)`` (EOT has the largest id), transformers at the first
  ``eos_token_id``; the layout follows the backend's own rule.

Sites: ``vision.embed`` (patch + position embeddings, before ``ln_pre``) and
``vision.blocks.{i}.{attn,mlp,resid}`` ``[n, 1+R*C, W]``; ``text.blocks.{i}.{attn,mlp,resid}``
``[m, T, W]``; ``vision.post`` ``[n, D]`` / ``text.post`` ``[m, D]`` (pooled, projected, not yet
normalised; no sequence dim, so ``positions=`` does not apply). No ``logits`` site: both
libraries compute logits outside any module.

``run(batch).logits``: images and text -> ``logit_scale.exp() * img_n @ txt_n.T`` ``[n, m]``
(plus ``logit_bias`` for open_clip models that have one); images only -> normalised image
embeddings ``[n, D]``; text only -> normalised text embeddings ``[m, D]``.
``out.raw`` = ``{"image_embeds", "text_embeds", "logit_scale"}`` (embeds normalised or ``None``).

Backends: open_clip here, transformers in :mod:`vlinterp.adapters.clip_hf`. open_clip's text
projection is a bare parameter, so a parameter-free ``nn.Identity`` child ``vlinterp_text_post``
is attached to an open_clip ``CLIP`` and the text features pass through it (``text.post``
hooks it; state dict unchanged). open_clip transformers built seq-first (``batch_first=False``)
are switched to batch-first in place (same weights and outputs): every site is ``[B, T, D]``.
"""
from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F

from ..core.attention import mha_attention
from ..core.errors import ArgumentError, LoadError, PromptError, UnsupportedError
from ..core.hooks import Site
from ..core.images import load_image
from ..core.layout import LayoutBuilder, Tile
from ..core.types import Batch
from .base import Adapter, block_sites

OC_CONFIG, OC_WEIGHTS = "open_clip_config.json", ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# ViT-B-32 (open_clip built-in config) scaled down: 64x64 images, patch 16 -> 4x4 grid + CLS
TINY_OC_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_OC_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                      "interpolation": "bicubic", "resize_mode": "shortest"}


# ------------------------------------------------------------------ shared helpers
def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def crop_offset(size: int, crop: int, rounding: bool) -> int:
    """Offset (in the pre-crop image) of a centre crop; negative when the image is padded."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0)) if rounding else (size - crop) // 2


class Affine:
    """Per-axis map from the current (processed) pixel frame to original pixels: ``orig = a * cur + b``."""

    def __init__(self):
        self.ax, self.bx, self.ay, self.by = 1.0, 0.0, 1.0, 0.0

    def step(self, sx: float, sy: float, ox: float = 0.0, oy: float = 0.0):
        """Compose with ``prev = s * cur + o`` (resize: ``s = prev/new``; crop: ``o = offset``)."""
        self.bx, self.by = self.ax * ox + self.bx, self.ay * oy + self.by
        self.ax, self.ay = self.ax * sx, self.ay * sy

    def box(self, w: float, h: float) -> tuple[float, float, float, float]:
        """Original-pixel box of the processed region ``[0, w] x [0, h]``."""
        return (self.bx, self.by, self.ax * w + self.bx, self.ay * h + self.by)


def vision_layout(images, boxes, grid):
    """``[n, 1 + R*C]`` layout: CLS (special, span ``cls``) then the patch grid, one row per image."""
    rows, cols = grid
    lb = LayoutBuilder()
    for i, (img, box) in enumerate(zip(images, boxes)):
        lb.special(1, span="cls", image_index=i)
        lb.image_grid(i, rows, cols)
        lb.add_image(i, (img.height, img.width), [Tile((rows, cols), tuple(float(v) for v in box))])
        lb.end_row()
    return lb.build()


def text_layout(ids: torch.Tensor, pool_index: list[int], bos_id: int | None):
    """``[m, T]`` layout: SOT special, words ``text`` (span ``prompt``), the pooled EOT
    position ``special`` (spans ``eot`` and ``last``), everything after it ``pad``."""
    lb = LayoutBuilder()
    for b, p in enumerate(pool_index):
        start = 1 if bos_id is not None and p > 0 and int(ids[b, 0]) == bos_id else 0
        if start:
            lb.special(1, span="sot")
        lb.text(max(p - start, 0), span="prompt")
        lb.special(1, span="eot")
        lb.end_row()
    return lb.build(length=ids.shape[1])  # "last" = the last pushed position = the pooled EOT


# ----------------------------------------------------------------- open_clip backend
class OpenClipBackend:
    """open_clip ``CLIP`` / ``CustomTextCLIP`` with a ``VisionTransformer`` and a ``TextTransformer``.
    ``processor`` = ``{"image": eval transform, "tokenizer": open_clip tokenizer}``."""

    name = "open_clip"

    def __init__(self, model, processor):
        from open_clip.transformer import TextTransformer, VisionTransformer

        if not isinstance(getattr(model, "visual", None), VisionTransformer):
            raise UnsupportedError(f"open_clip vision tower {type(getattr(model, 'visual', None)).__name__} is not supported (ViT only)")
        processor = default_open_clip_processor(model) if processor is None else processor
        if isinstance(processor, (tuple, list)):
            processor = {"image": processor[0], "tokenizer": processor[1]}
        self.model, self.image_tf, self.tokenizer = model, processor["image"], processor["tokenizer"]
        text = getattr(model, "text", None)
        if text is not None and not isinstance(text, TextTransformer):
            raise UnsupportedError(f"open_clip text tower {type(text).__name__} is not supported (TextTransformer only)")
        self.text_prefix = "text." if text is not None else ""
        owner = text if text is not None else model
        self.pool_type = getattr(owner, "pool_type", None) or getattr(model, "text_pool_type", "argmax")
        self.eos_id = getattr(owner, "eos_id", None) if text is not None else getattr(model, "text_eos_id", None)
        if self.pool_type not in ("argmax", "eos"):
            raise UnsupportedError(f"open_clip text pool_type {self.pool_type!r} is not supported (argmax or eos)")
        for tr in (model.visual.transformer, owner.transformer):
            if not hasattr(tr, "batch_first"):
                raise UnsupportedError("this open_clip version runs its transformer seq-first only; install open_clip_torch>=2.24")
            if not tr.batch_first:  # same maths, batch-first hooks: [B, T, D] at every site
                tr.batch_first = True
                for blk in tr.resblocks:
                    blk.attn.batch_first = True
        self.n_vision = len(model.visual.transformer.resblocks)
        self.n_text = len(owner.transformer.resblocks)
        if text is not None:
            self.text_post = "text"
            self.post = None
        elif isinstance(model.text_projection, torch.nn.Linear):
            self.text_post, self.post = "text_projection", None
        else:
            if not hasattr(model, "vlinterp_text_post"):
                model.add_module("vlinterp_text_post", torch.nn.Identity())
            self.text_post, self.post = "vlinterp_text_post", model.vlinterp_text_post

    def sites(self) -> dict[str, Site]:
        fmt = {"attn": "{p}resblocks.{{i}}.attn", "mlp": "{p}resblocks.{{i}}.mlp", "resid": "{p}resblocks.{{i}}"}
        vis = {k: v.format(p="visual.transformer.") for k, v in fmt.items()}
        txt = {k: v.format(p=self.text_prefix + "transformer.") for k, v in fmt.items()}
        return {
            "vision.embed": Site("visual.patch_dropout", "vision"),
            **block_sites("vision.blocks.", vis, self.n_vision, "vision"),
            "vision.post": Site("visual", "vision"),
            **block_sites("text.blocks.", txt, self.n_text, "text"),
            "text.post": Site(self.text_post, "text"),
        }

    def preprocess(self, images):
        """PIL images -> (pixels ``[n, 3, H, W]``, original-pixel boxes of the patch grid, grid)."""
        steps = getattr(self.image_tf, "transforms", [self.image_tf])
        pix, maps = [], []
        for img in images:
            x, aff = img, Affine()
            for t in steps:
                w0, h0 = _wh(x)
                x = t(x)
                w1, h1 = _wh(x)
                kind = type(t).__name__
                if "Crop" in kind:
                    aff.step(1.0, 1.0, crop_offset(w0, w1, True), crop_offset(h0, h1, True))
                elif "Resize" in kind:
                    aff.step(w0 / w1, h0 / h1)
                elif (w0, h0) != (w1, h1):
                    raise UnsupportedError(f"open_clip transform {kind} changes the image size; cannot map the patch grid back")
            pix.append(x)
            maps.append(aff)
        pixels = torch.stack(pix)
        ph, pw = self.model.visual.patch_size
        grid = (pixels.shape[-2] // ph, pixels.shape[-1] // pw)
        return pixels, [a.box(grid[1] * pw, grid[0] * ph) for a in maps], grid

    def tokenize(self, texts):
        """-> (inputs ``{"input_ids": [m, T]}``, pool index per row, SOT id, truncated flags)."""
        ids = self.tokenizer(texts)
        pool = self.pool_index(ids)
        enc = getattr(self.tokenizer, "encode", None)
        ctx = ids.shape[1]
        trunc = [len(enc(t)) + 2 > ctx for t in texts] if callable(enc) else [False] * len(texts)
        return {"input_ids": ids}, pool, getattr(self.tokenizer, "sot_token_id", None), trunc

    def pool_index(self, ids) -> list[int]:
        if self.pool_type == "argmax":
            return ids.argmax(dim=-1).tolist()
        return (ids == self.eos_id).int().argmax(dim=-1).tolist()

    def image_features(self, inputs):
        return self.model.encode_image(inputs["pixel_values"])

    def text_features(self, inputs):
        x = self.model.encode_text(inputs["input_ids"])
        return self.post(x) if self.post is not None else x

    def logits(self, img, txt):
        """Both normalised; mirrors ``CLIP.get_logits``."""
        out = self.model.logit_scale.exp() * img @ txt.T
        return out + self.model.logit_bias if getattr(self.model, "logit_bias", None) is not None else out

    @staticmethod
    def normalize(x):
        return F.normalize(x, dim=-1)

    def logit_scale(self):
        return self.model.logit_scale.exp()

    def attention_probs(self, site, module, args, kwargs, output):
        """``nn.MultiheadAttention`` hooked with kwargs: q/k are its (post ``ln_1``) inputs."""
        q = args[0] if args else kwargs["query"]
        k = args[1] if len(args) > 1 else kwargs.get("key", q)
        if not module.batch_first:
            q, k = q.transpose(0, 1), k.transpose(0, 1)
        mask = kwargs.get("attn_mask")
        if mask is not None:
            if mask.dtype == torch.bool:  # nn.MultiheadAttention: True = not allowed
                mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(mask, float("-inf"))
            if mask.dim() == 3:
                mask = mask.view(q.shape[0], module.num_heads, *mask.shape[-2:])
        return mha_attention(module, q, k, mask)


def default_open_clip_processor(model) -> dict:
    """Eval transform from the model's preprocess config (open_clip defaults if unset) and a
    ``SimpleTokenizer`` with the model's context length (open_clip's bundled BPE)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = {k: v for k, v in open_clip.get_model_preprocess_cfg(model).items() if k in PreprocessCfg.__dataclass_fields__}
    cfg.setdefault("size", model.visual.image_size)
    tok = open_clip.SimpleTokenizer(context_length=getattr(model, "context_length", None) or model.text.context_length)
    return {"image": image_transform_v2(PreprocessCfg(**cfg), is_train=False), "tokenizer": tok}


def _wh(x) -> tuple[int, int]:
    return (x.shape[-1], x.shape[-2]) if isinstance(x, torch.Tensor) else tuple(x.size)


# ------------------------------------------------------------------------- adapter
class ClipAdapter(Adapter):
    """CLIP-style dual encoder (open_clip ``CLIP`` or transformers ``CLIPModel``); see the module doc."""

    family = "clip"
    kind = "clip"
    main_stream = "vision"

    def __init__(self, model, processor=None, name: str = ""):
        if type(model).__module__.startswith("open_clip"):
            self.backend = OpenClipBackend(model, processor)
        elif getattr(getattr(model, "config", None), "model_type", None) in ("siglip", "siglip2"):
            from .clip_siglip import SiglipBackend

            self.backend = SiglipBackend(model, processor)
        else:
            from .clip_hf import HFClipBackend

            self.backend = HFClipBackend(model, processor)
        super().__init__(model, processor, name)

    def build_sites(self) -> dict[str, Site]:
        return self.backend.sites()

    @property
    def pool_site(self) -> str | None:
        """Site of the attention-pooling head whose probe reads the vision sequence (SigLIP's MAP
        head), or ``None`` when a CLS token is pooled (CLIP)."""
        return getattr(self.backend, "pool_site", None)

    @property
    def sigmoid_scores(self) -> bool:
        """True when ``run().logits`` are logits of independent sigmoid image-text scores
        (SigLIP), False for softmax-over-texts CLIP logits."""
        return bool(getattr(self.backend, "sigmoid", False))

    def prepare(self, images=None, text=None, **kw) -> Batch:
        """``images``: list (or one) of paths/PIL/arrays; ``text``: list (or one) of prompts.
        Either or both. Inputs: ``pixel_values`` ``[n, 3, H, W]``, ``input_ids`` ``[m, T]``
        (+ ``attention_mask`` for transformers). Layouts: ``vision`` and/or ``text``."""
        if kw:
            raise ArgumentError(f"prepare() got unexpected arguments: {', '.join(kw)}")
        images, text = _as_list(images), _as_list(text)
        if not images and not text:
            raise PromptError("CLIP needs images, text or both; got neither")
        for j, t in enumerate(text):
            if not isinstance(t, str):
                raise PromptError(f"text[{j}] must be a string, got {type(t).__name__}")
        inputs, layouts, meta = {}, {}, {"backend": self.backend.name}
        pil = [load_image(x, name=f"images[{i}]") for i, x in enumerate(images)]
        if pil and hasattr(self.backend, "prepare_images"):  # SigLIP: its own inputs and layout
            enc, layouts["vision"] = self.backend.prepare_images(pil, self.dtype)
            inputs.update(enc)
        elif pil:
            pixels, boxes, grid = self.backend.preprocess(pil)
            inputs["pixel_values"] = pixels.to(self.dtype)
            layouts["vision"] = vision_layout(pil, boxes, grid)
        if text and hasattr(self.backend, "text_layout"):
            enc, meta["truncated"] = self.backend.tokenize(text)
            inputs.update(enc)
            layouts["text"] = self.backend.text_layout(enc)
        elif text:
            enc, pool, bos, trunc = self.backend.tokenize(text)
            inputs.update(enc)
            layouts["text"] = text_layout(enc["input_ids"], pool, bos)
            meta["truncated"] = trunc
        return Batch(inputs, layouts, "vision" if pil else "text", pil, text, meta)

    def _forward(self, batch: Batch):
        be, inp = self.backend, batch.inputs
        img = be.normalize(be.image_features(inp)) if "pixel_values" in inp else None
        txt = be.normalize(be.text_features(inp)) if "input_ids" in inp else None
        if img is not None and txt is not None:
            logits = be.logits(img, txt)
        else:
            logits = img if img is not None else txt
        extra = be.raw_extra() if hasattr(be, "raw_extra") else {}
        return logits, {"image_embeds": img, "text_embeds": txt, "logit_scale": be.logit_scale(), **extra}

    def _encode(self, batch: Batch, key: str, fn) -> torch.Tensor:
        if key not in batch.inputs:
            raise PromptError(f"this batch has no {'images' if key == 'pixel_values' else 'text'}")
        batch = self._on_device(batch)
        with torch.no_grad(), self._running(batch):
            return self.backend.normalize(fn(batch.inputs))

    def encode_images(self, batch: Batch) -> torch.Tensor:
        """Normalised image embeddings ``[n, D]`` (active edits apply)."""
        return self._encode(batch, "pixel_values", self.backend.image_features)

    def encode_text(self, batch: Batch) -> torch.Tensor:
        """Normalised text embeddings ``[m, D]`` (active edits apply)."""
        return self._encode(batch, "input_ids", self.backend.text_features)

    def _attention_probs(self, site, module, args, kwargs, output) -> torch.Tensor:
        return self.backend.attention_probs(site, module, args, kwargs, output)

    # ---------------------------------------------------------------- loading
    @classmethod
    def can_load(cls, path: str) -> bool:
        path = os.fspath(path)
        if not os.path.isdir(path):
            return False
        oc = os.path.join(path, OC_CONFIG)
        if os.path.isfile(oc):
            try:
                with open(oc) as f:
                    ok = "model_cfg" in json.load(f)
            except (OSError, ValueError):
                return False
            return ok and any(os.path.isfile(os.path.join(path, w)) for w in OC_WEIGHTS)
        cfg = os.path.join(path, "config.json")
        if os.path.isfile(cfg):
            try:
                with open(cfg) as f:
                    return json.load(f).get("model_type") in ("clip", "siglip", "siglip2")
            except (OSError, ValueError):
                return False
        return False

    @classmethod
    def from_path(cls, path: str, device=None, dtype=None, attn_implementation: str | None = None, **kw) -> "ClipAdapter":
        """open_clip directory (``open_clip_config.json`` + weights) via open_clip's own
        ``local-dir:`` loading (weights_only), or a transformers CLIP directory via ``from_pretrained``."""
        from .dtypes import resolve_dtype

        path = os.fspath(path)
        name = os.path.basename(os.path.normpath(path))
        dtype = resolve_dtype(dtype, path, device)  # "auto": the checkpoint's, never fp16 on a CPU
        if not os.path.isfile(os.path.join(path, OC_CONFIG)):
            with open(os.path.join(path, "config.json")) as f:
                model_type = json.load(f).get("model_type")
            if model_type in ("siglip", "siglip2"):
                from .clip_siglip import load_siglip

                return cls(*load_siglip(path, device=device, dtype=dtype, attn_implementation=attn_implementation, **kw), name=name)
            from .clip_hf import load_hf

            return cls(*load_hf(path, device=device, dtype=dtype, attn_implementation=attn_implementation, **kw), name=name)
        if not any(os.path.isfile(os.path.join(path, w)) for w in OC_WEIGHTS):
            raise LoadError(f"{path!r}: {OC_CONFIG} found but no weights ({' or '.join(OC_WEIGHTS)})")
        import open_clip

        # "pure_*": every weight, norm and embedding in that dtype. open_clip's "fp16"/"bf16" keep
        # LayerNorms and embeddings in fp32 (OpenAI's mixed precision), which no single input dtype suits.
        precision = {None: "fp32", torch.float32: "fp32", torch.float16: "pure_fp16", torch.bfloat16: "pure_bf16"}.get(dtype)
        if precision is None:
            raise LoadError(f"dtype {dtype} is not supported by open_clip (float32, float16, bfloat16)")
        model, _, preprocess = open_clip.create_model_and_transforms(
            "local-dir:" + os.path.abspath(path), precision=precision, device=device or "cpu", weights_only=True, **kw)
        tok = open_clip.get_tokenizer("local-dir:" + os.path.abspath(path))
        return cls(model, {"image": preprocess, "tokenizer": tok}, name=name)

    @classmethod
    def tiny(cls, variant: str = "clip", device=None, dtype=None, **kw) -> "ClipAdapter":
        """``clip``: open_clip ``CLIP`` (ViT-B-32 layout scaled down); ``clip-hf``: transformers ``CLIPModel``;
        ``siglip`` / ``siglip2``: transformers ``SiglipModel`` / ``Siglip2Model`` (NaFlex)."""
        if variant in ("siglip", "siglip2"):
            from .clip_siglip import build_tiny

            model, proc = build_tiny(variant, **kw)
        elif variant == "clip-hf":
            from .clip_hf import build_tiny_hf

            model, proc = build_tiny_hf(**kw)
        elif variant == "clip":
            model, proc = build_tiny_open_clip(**kw)
        else:
            raise LoadError(f"unknown CLIP tiny variant {variant!r} (clip, clip-hf, siglip, siglip2)")
        model.to(device=device, dtype=dtype)
        return cls(model, proc, name=f"tiny:{variant}")


def build_tiny_open_clip(seed: int = 0):
    """Random open_clip ``CLIP`` from :data:`TINY_OC_CFG` + its eval transform and tokenizer."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OC_CFG).eval()
    open_clip.set_model_preprocess_cfg(model, dict(TINY_OC_PREPROCESS, size=model.visual.image_size))
    return model, default_open_clip_processor(model)


def save_tiny(variant: str, out_dir: str, **kw) -> str:
    """Save the tiny model natively: ``clip`` -> open_clip hub layout (``open_clip_config.json``
    with ``model_cfg``/``preprocess_cfg`` + ``open_clip_model.safetensors``); ``clip-hf``, ``siglip``,
    ``siglip2`` -> ``save_pretrained`` of model and processor."""
    if variant in ("clip-hf", "siglip", "siglip2"):
        if variant == "clip-hf":
            from .clip_hf import build_tiny_hf

            model, proc = build_tiny_hf(**kw)
        else:
            from .clip_siglip import build_tiny

            model, proc = build_tiny(variant, **kw)
        from .base import save_pretrained_dir

        return save_pretrained_dir(out_dir, model, proc)
    if variant != "clip":
        raise LoadError(f"unknown CLIP tiny variant {variant!r} (clip, clip-hf, siglip, siglip2)")
    from safetensors.torch import save_file

    from ..core.io import output_dir

    model, _ = build_tiny_open_clip(**kw)
    with output_dir(out_dir, "out_dir") as tmp:  # never over files vlinterp did not write
        with open(os.path.join(tmp, OC_CONFIG), "w") as f:
            json.dump({"model_cfg": TINY_OC_CFG, "preprocess_cfg": TINY_OC_PREPROCESS}, f, indent=2)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(tmp, OC_WEIGHTS[0]))
    return out_dir
