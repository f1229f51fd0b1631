"""SigLIP / SigLIP2 backend of :class:`vlinterp.adapters.clip.ClipAdapter` (transformers
``SiglipModel`` and ``Siglip2Model``).

Sites (the declarative table :data:`SITES`): ``vision.embed`` (patch + position embeddings),
``vision.blocks.{i}.{attn,mlp,resid}`` ``[n, T, W]``, ``vision.pool.attn`` (the attention-pooling
head's ``nn.MultiheadAttention``: one probe query over the sequence, ``[n, 1, W]``), ``vision.post``
(the pooled image embedding ``[n, D]``), ``text.blocks.{i}.*`` ``[m, L, W]``, ``text.post`` ``[m, D]``.

Layouts. SigLIP has **no CLS token**: the pooled image embedding is read by a multihead
attention-pooling (MAP) head whose learned probe attends over the whole sequence. Every vision
position is a patch (``image``, with ``(row, col)``); SigLIP2 NaFlex inputs are padded to the
processor's ``max_num_patches``: the first ``rows*cols`` positions are patches, the rest ``pad``
(``pixel_attention_mask`` 0). The grid is the processor's own ``spatial_shapes`` (NaFlex) or
the processed pixels divided by the patch size. Saliency methods explain the MAP probe (spans and
:attr:`SiglipBackend.pool_site`; see :mod:`vlinterp.saliency.targets`).
Text rows are padded to ``max_length`` (``text_config.max_position_embeddings``), as SigLIP was
trained; the model pools the LAST position whatever it holds: that position is span ``eot`` /
``last`` (``special`` when it is not a word), words are ``text`` (span ``prompt``), EOS/BOS
``special``, padding ``pad``.

Inputs. SigLIP: ``pixel_values`` ``[n, 3, H, W]`` from ``SiglipImageProcessor``. SigLIP2 NaFlex:
its processor returns flattened patches ``[n, N, 3*p*p]``; the adapter folds each image's
``rows x cols`` patches back into pixels ``[n, 3, R*p, C*p]`` (the exact inverse of
``convert_image_to_patches``; a batch of different grids is zero-padded right/bottom) and
re-patchifies them in the forward pass, bit-identically, so pixel-space methods (IG, occlusion,
Grad-CAM) work on an image; ``spatial_shapes`` ``[n, 2]`` and ``pixel_attention_mask`` ``[n, N]``
ride along. ``run(batch).logits`` with images and texts: ``logits_per_image`` ``[n, m]`` =
``cos * logit_scale.exp() + logit_bias``, the logits of SigLIP's SIGMOID image-text scores
(``sigmoid(logits)`` is the probability of a match; texts do not compete in a softmax).
"""
from __future__ import annotations

import functools
import io
import os
import tempfile

import torch

from ..core.attention import hf_self_attention, mha_attention
from ..core.errors import LoadError, ShapeMismatchError, UnsupportedError
from ..core.hooks import Site
from ..core.layout import LayoutBuilder, Tile
from .base import block_sites

MODEL_TYPES = ("siglip", "siglip2")
# uniform site name -> module path inside SiglipModel / Siglip2Model ({i}: block index)
SITES = {
    "vision.embed": "vision_model.embeddings",
    "vision.blocks.{i}.attn": "vision_model.encoder.layers.{i}.self_attn",
    "vision.blocks.{i}.mlp": "vision_model.encoder.layers.{i}.mlp",
    "vision.blocks.{i}.resid": "vision_model.encoder.layers.{i}",
    "vision.pool.attn": "vision_model.head.attention",
    "vision.post": "vision_model.head",
    "text.blocks.{i}.attn": "text_model.encoder.layers.{i}.self_attn",
    "text.blocks.{i}.mlp": "text_model.encoder.layers.{i}.mlp",
    "text.blocks.{i}.resid": "text_model.encoder.layers.{i}",
    "text.post": "text_model.head",
}
POOL_SITE = "vision.pool.attn"
# tiny models: google/siglip-base-patch16-224 and siglip2-base-patch16-naflex scaled down
TINY = dict(hidden=64, layers=2, heads=2, image_size=64, patch_size=16, context=16)
TINY_WORDS = (
    "a an and the is there are what color colour how many of in image shows with photo picture "
    "yes no zero one two three four red green blue yellow purple orange circle square triangle cross "
    "circles squares triangles crosses left right top bottom"
).split()


def table_sites(table: dict[str, str], layers: dict[str, int]) -> dict[str, Site]:
    """Expand a declarative ``{site name: module path}`` table (``{i}`` = block index; the stream is
    the name's first component) into :class:`Site` entries, blocks grouped layer by layer."""
    out: dict[str, Site] = {}
    for name, path in table.items():
        stream = name.split(".")[0]
        if "{i}" not in name:
            out[name] = Site(path, stream)
            continue
        prefix = name.split("{i}.")[0]
        if any(k.startswith(prefix) for k in out):
            continue
        fmt = {k.split("{i}.")[1]: v for k, v in table.items() if k.startswith(prefix + "{i}.")}
        out.update(block_sites(prefix, fmt, layers[stream], stream))
    return out


# ------------------------------------------------------------------ patches <-> pixels
def unpatchify(patches: torch.Tensor, rows: int, cols: int, p: int) -> torch.Tensor:
    """``[rows*cols, p*p*C]`` (``Siglip2ImageProcessor``'s order: patch row, patch col, then
    ``(y, x, channel)`` inside a patch) -> image ``[C, rows*p, cols*p]``."""
    C = patches.shape[-1] // (p * p)
    x = patches.reshape(rows, cols, p, p, C).permute(4, 0, 2, 1, 3)
    return x.reshape(C, rows * p, cols * p)


def patchify(image: torch.Tensor, p: int) -> torch.Tensor:
    """Image ``[C, R*p, C'*p]`` -> ``[R*C', p*p*C]`` (``convert_image_to_patches``)."""
    C, H, W = image.shape
    x = image.reshape(C, H // p, p, W // p, p).permute(1, 3, 2, 4, 0)
    return x.reshape((H // p) * (W // p), p * p * C)


# ------------------------------------------------------------------------ layouts
def siglip_vision_layout(images, grids, length: int):
    """``[n, length]``: image ``i``'s ``rows x cols`` patches (no CLS), then ``pad``."""
    lb = LayoutBuilder()
    for i, (img, (rows, cols, box)) in enumerate(zip(images, grids)):
        lb.image_grid(i, rows, cols)
        lb.add_image(i, (img.height, img.width), [Tile((rows, cols), tuple(float(v) for v in box))])
        lb.pad(length - rows * cols)
        lb.end_row()
    return lb.build(length=length)


def siglip_text_layout(ids: torch.Tensor, mask: torch.Tensor | None, tok):
    """``[m, L]`` text layout: real tokens (attention mask 1, or up to the first EOS when the
    tokenizer gives no mask) are words (``text``, span ``prompt``) or BOS/EOS (``special``);
    the rest ``pad``; the last position, which the model pools, is span ``eot``/``last``
    (``special`` unless it is a word)."""
    L = ids.shape[1]
    eos, bos = tok.eos_token_id, tok.bos_token_id
    lb = LayoutBuilder()
    for b in range(ids.shape[0]):
        row = ids[b].tolist()
        if mask is not None:
            real = [bool(v) for v in mask[b].tolist()]
        else:  # right padding: real up to and including the first EOS
            end = row.index(eos) + 1 if eos in row else L
            real = [j < end for j in range(L)]
        for j, t in enumerate(row):
            last = j == L - 1
            if real[j] and t not in (eos, bos):
                lb.text(1, span="prompt")
            elif real[j] or last:
                lb.special(1)
            else:
                lb.pad(1)
            if last:
                lb.mark("eot", [j])
        lb.end_row()
    return lb.build(length=L)


# ----------------------------------------------------------------------- backend
class SiglipBackend:
    """transformers ``SiglipModel`` / ``Siglip2Model`` + their processors (see the module doc)."""

    pool_site = POOL_SITE
    sigmoid = True

    def __init__(self, model, processor):
        from transformers import Siglip2Model, SiglipModel

        if not isinstance(model, (SiglipModel, Siglip2Model)):
            raise UnsupportedError(f"{type(model).__name__} is not a transformers SiglipModel or Siglip2Model")
        if not getattr(model.vision_model, "use_head", False):
            raise UnsupportedError("this SigLIP vision tower has no attention-pooling head (vision_use_head=False): "
                                   "it gives no pooled image embedding to score against text")
        self.model = model
        self.naflex = isinstance(model, Siglip2Model)
        self.name = "siglip2" if self.naflex else "siglip"
        if processor is None:
            raise LoadError(f"{self.name}: pass the checkpoint's processor (its tokenizer cannot be rebuilt from the config)")
        self.processor = processor
        self.tokenizer = self.processor.tokenizer
        vc = model.config.vision_config
        self.patch = int(vc.patch_size)

    def sites(self) -> dict[str, Site]:
        cfg = self.model.config
        return table_sites(SITES, {"vision": cfg.vision_config.num_hidden_layers, "text": cfg.text_config.num_hidden_layers})

    # ------------------------------------------------------------------ images
    def prepare_images(self, images, dtype):
        """PIL images -> (inputs, ``vision`` layout) through the checkpoint's image processor."""
        ip = self.processor.image_processor
        out = ip(images=images, return_tensors="pt")
        p = self.patch
        if not self.naflex:
            pixels = out["pixel_values"]
            H, W = pixels.shape[-2:]
            size = self.model.config.vision_config.image_size
            if (H, W) != (size, size):
                raise ShapeMismatchError(f"the image processor gave {H}x{W} pixels; this SigLIP takes {size}x{size}")
            rows, cols = H // p, W // p
            grids = [(rows, cols, (0.0, 0.0, im.width * cols * p / W, im.height * rows * p / H)) for im in images]
            return {"pixel_values": pixels.to(dtype)}, siglip_vision_layout(images, grids, rows * cols)
        patches, mask, shapes = out["pixel_values"], out["pixel_attention_mask"], out["spatial_shapes"]
        n, N = mask.shape
        R, C = int(shapes[:, 0].max()), int(shapes[:, 1].max())
        pixels = torch.zeros(n, patches.shape[-1] // (p * p), R * p, C * p, dtype=patches.dtype)
        grids = []
        for i, im in enumerate(images):
            rows, cols = int(shapes[i, 0]), int(shapes[i, 1])
            if int(mask[i].sum()) != rows * cols:
                raise ShapeMismatchError(f"image {i}: pixel_attention_mask marks {int(mask[i].sum())} patches, spatial_shapes {rows}x{cols}")
            pixels[i, :, : rows * p, : cols * p] = unpatchify(patches[i, : rows * cols], rows, cols, p)
            grids.append((rows, cols, (0.0, 0.0, float(im.width), float(im.height))))  # a plain resize to rows*p x cols*p
        inputs = {"pixel_values": pixels.to(dtype), "pixel_attention_mask": mask, "spatial_shapes": shapes}
        return inputs, siglip_vision_layout(images, grids, N)

    def native_pixels(self, inputs) -> dict:
        """The model's own vision inputs: NaFlex patches ``[n, N, 3*p*p]`` re-cut from the image
        tensor (broadcasting one image's mask/shapes over copies, as captum makes them)."""
        x = inputs["pixel_values"]
        if not self.naflex:
            return {"pixel_values": x}
        mask, shapes = inputs["pixel_attention_mask"], inputs["spatial_shapes"]
        if mask.shape[0] != x.shape[0]:
            if mask.shape[0] != 1:
                raise ShapeMismatchError(f"{x.shape[0]} images but {mask.shape[0]} pixel_attention_mask rows")
            mask, shapes = mask.expand(x.shape[0], -1), shapes.expand(x.shape[0], -1)
        p, N = self.patch, mask.shape[1]
        rows = []
        for i in range(x.shape[0]):
            r, c = int(shapes[i, 0]), int(shapes[i, 1])
            pt = patchify(x[i, :, : r * p, : c * p], p)
            rows.append(torch.nn.functional.pad(pt, (0, 0, 0, N - r * c)))
        return {"pixel_values": torch.stack(rows), "pixel_attention_mask": mask.to(x.device),
                "spatial_shapes": shapes.to(x.device)}

    # -------------------------------------------------------------------- text
    @property
    def max_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def tokenize(self, texts):
        """-> (inputs ``[m, L]`` as the tokenizer gives them, padded to ``max_length``; truncated flags)."""
        tok, L = self.tokenizer, self.max_length
        enc = tok(texts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
        keep = {k: enc[k] for k in ("input_ids", "attention_mask") if k in enc}
        trunc = [len(tok(t)["input_ids"]) > L for t in texts]
        return keep, trunc

    def text_layout(self, enc):
        return siglip_text_layout(enc["input_ids"], enc.get("attention_mask"), self.tokenizer)

    # ------------------------------------------------------------------ scores
    def image_features(self, inputs):
        out = self.model.get_image_features(**self.native_pixels(inputs))
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def text_features(self, inputs):
        out = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @staticmethod
    def normalize(x):
        return x / x.norm(p=2, dim=-1, keepdim=True)  # as SiglipModel.forward

    def logit_scale(self):
        return self.model.logit_scale.exp()

    def logits(self, img, txt):
        """Both normalised; mirrors ``SiglipModel.forward`` (``logits_per_image``, bias included)."""
        m = self.model
        return (torch.matmul(txt, img.t()) * m.logit_scale.exp() + m.logit_bias).t()

    def raw_extra(self) -> dict:
        return {"logit_bias": self.model.logit_bias.detach()}

    def attention_probs(self, site, module, args, kwargs, output):
        """Encoder layers: recomputed from the layer's input and mask. The pooling head: the
        probe's attention ``[B, H, 1, T]`` over the sequence (padding keys masked)."""
        if isinstance(module, torch.nn.MultiheadAttention):
            q = args[0] if args else kwargs["query"]
            k = args[1] if len(args) > 1 else kwargs["key"]
            kpm = kwargs.get("key_padding_mask")
            mask = None
            if kpm is not None:
                mask = torch.zeros(kpm.shape, dtype=q.dtype, device=q.device).masked_fill(kpm.bool(), float("-inf"))[:, None, None, :]
            return mha_attention(module, q, k, mask)
        return hf_self_attention(module, args, kwargs)


# ----------------------------------------------------------------- tiny + loading
@functools.lru_cache(maxsize=1)
def _spm_model() -> bytes:
    """A small SentencePiece BPE model trained offline on :data:`TINY_WORDS` (deterministic)."""
    import sentencepiece as spm

    words = sorted(set(TINY_WORDS))
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=3 * len(words), model_type="bpe",
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", minloglevel=2, character_coverage=1.0, num_threads=1)
    return buf.getvalue()


def siglip_tokenizer(max_length: int):
    """A real ``SiglipTokenizer`` (SentencePiece) over a vocabulary trained offline."""
    from transformers import SiglipTokenizer

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "spiece.model")
        with open(path, "wb") as f:
            f.write(_spm_model())
        return SiglipTokenizer(vocab_file=path, model_max_length=max_length)


def siglip2_tokenizer(max_length: int):
    """A real ``Siglip2Tokenizer`` (Gemma-style byte-fallback BPE, lower-casing) whose vocabulary
    and merges are trained offline on :data:`TINY_WORDS`."""
    import json

    from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Siglip2Tokenizer

    tk = Tokenizer(BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tk.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "▁")])
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
    words = sorted(set(TINY_WORDS))
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"],
                                                        show_progress=False))
    model = json.loads(tk.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return Siglip2Tokenizer(vocab=model["vocab"], merges=merges, model_max_length=max_length)


def build_tiny(variant: str = "siglip", seed: int = 0):
    """Random ``SiglipModel`` (``siglip``: google/siglip-base-patch16-224 layout scaled down: 64 px,
    16 px patches, 4x4 grid) or ``Siglip2Model`` (``siglip2``: siglip2-base-patch16-naflex scaled
    down: at most 16 patches of 16 px, any aspect ratio) + its real processor built offline."""
    from transformers import (Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor, SiglipConfig,
                              SiglipImageProcessor, SiglipModel, SiglipProcessor)

    h = TINY
    tok = siglip2_tokenizer(h["context"]) if variant == "siglip2" else siglip_tokenizer(h["context"])
    common = dict(hidden_size=h["hidden"], intermediate_size=2 * h["hidden"], num_hidden_layers=h["layers"], num_attention_heads=h["heads"])
    text = dict(vocab_size=len(tok), max_position_embeddings=h["context"], pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **common)
    n = (h["image_size"] // h["patch_size"]) ** 2
    torch.manual_seed(seed)
    if variant == "siglip2":
        cfg = Siglip2Config(text_config=text, vision_config=dict(patch_size=h["patch_size"], num_patches=n, **common))
        model = Siglip2Model(cfg)
        ip = Siglip2ImageProcessor(patch_size=h["patch_size"], max_num_patches=n)
        proc = Siglip2Processor(image_processor=ip, tokenizer=tok)
    elif variant == "siglip":
        cfg = SiglipConfig(text_config=text, vision_config=dict(image_size=h["image_size"], patch_size=h["patch_size"], **common))
        model = SiglipModel(cfg)
        ip = SiglipImageProcessor(size={"height": h["image_size"], "width": h["image_size"]}, resample=3)
        proc = SiglipProcessor(image_processor=ip, tokenizer=tok)
    else:
        raise LoadError(f"unknown SigLIP tiny variant {variant!r} (siglip, siglip2)")
    with torch.no_grad():  # a non-trivial scale and bias (both init to 0), as trained checkpoints have
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-1.0)
    return model.eval(), proc


def load_siglip(path: str, device=None, dtype=None, attn_implementation=None, **kw):
    """``SiglipModel`` / ``Siglip2Model`` ``.from_pretrained(path)`` + ``AutoProcessor.from_pretrained(path)``."""
    import json

    from transformers import AutoProcessor, Siglip2Model, SiglipModel

    with open(os.path.join(path, "config.json")) as f:
        mt = json.load(f).get("model_type")
    cls = Siglip2Model if mt == "siglip2" else SiglipModel
    extra = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation:
        extra["attn_implementation"] = attn_implementation
    model = cls.from_pretrained(path, local_files_only=True, **extra, **kw).eval()
    try:
        proc = AutoProcessor.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - the tokenizer needs files only the checkpoint has
        raise LoadError(f"{path}: no usable {mt} processor ({type(e).__name__}: {e}); save the processor "
                        "(image processor + tokenizer) next to the model") from e
    if device is not None:
        model.to(device)
    return model, proc
