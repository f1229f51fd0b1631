"""transformers ``CLIPModel`` backend of :class:`vlinterp.adapters.clip.ClipAdapter`.

Sites map to ``vision_model.embeddings`` (``vision.embed``), ``{vision,text}_model.encoder
.layers.{i}`` (``resid``), ``.self_attn`` (``attn``), ``.mlp`` (``mlp``), and the projections
``visual_projection`` / ``text_projection`` (``vision.post`` / ``text.post``, ``[B, D]``).
The tokenizer of the tiny model (and the fallback when a directory has no processor) is a
``CLIPTokenizer`` built offline from open_clip's bundled ``bpe_simple_vocab_16e6.txt.gz``
exactly as OpenAI CLIP builds its vocabulary (byte symbols, their ``</w>`` forms, one
token per merge, then ``<|startoftext|>``, ``<|endoftext|>``: 49408 tokens).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from ..core.attention import hf_self_attention
from ..core.errors import UnsupportedError
from ..core.hooks import Site
from .base import block_sites
from .clip import Affine, crop_offset

TINY_HF = dict(hidden=64, layers=2, heads=2, image_size=64, patch_size=16, context=16, projection_dim=32)


@functools.lru_cache(maxsize=1)
def _bpe_vocab_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    import gzip

    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def clip_tokenizer(model_max_length: int = 77):
    """A transformers ``CLIPTokenizer`` from open_clip's bundled BPE file (no download)."""
    from transformers import CLIPTokenizer

    vocab, merges = _bpe_vocab_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)


def default_processor(config):
    """``CLIPProcessor`` for ``config``: resize shortest edge + centre crop to the image size, bundled BPE."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    s = config.vision_config.image_size
    ip = CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s})
    return CLIPProcessor(image_processor=ip, tokenizer=clip_tokenizer(config.text_config.max_position_embeddings))


def build_tiny_hf(seed: int = 0):
    """Random ``CLIPModel`` (openai/clip-vit-base-patch32 layout scaled down) + ``CLIPProcessor``."""
    from transformers import CLIPConfig, CLIPModel

    h = TINY_HF
    common = dict(hidden_size=h["hidden"], intermediate_size=4 * h["hidden"], num_hidden_layers=h["layers"],
                  num_attention_heads=h["heads"])
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=h["context"], bos_token_id=49406, eos_token_id=49407, **common),
        vision_config=dict(image_size=h["image_size"], patch_size=h["patch_size"], **common),
        projection_dim=h["projection_dim"],
    )
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    return model, default_processor(cfg)


def load_hf(path: str, device=None, dtype=None, attn_implementation=None, **kw):
    """``CLIPModel.from_pretrained(path)`` + its ``CLIPProcessor`` (default one if the directory has none)."""
    from transformers import CLIPModel, CLIPProcessor

    extra = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation:
        extra["attn_implementation"] = attn_implementation
    model = CLIPModel.from_pretrained(path, local_files_only=True, **extra, **kw).eval()
    try:
        proc = CLIPProcessor.from_pretrained(path, local_files_only=True)
    except Exception as e:  # no processor files: build the standard one from the config
        warnings.warn(f"{path}: no usable CLIP processor ({type(e).__name__}); using the default for this config")
        proc = default_processor(model.config)
    if device is not None:
        model.to(device)
    return model, proc


class HFClipBackend:
    """transformers ``CLIPModel`` + ``CLIPProcessor``."""

    name = "transformers"

    def __init__(self, model, processor):
        from transformers import CLIPModel

        if not isinstance(model, CLIPModel):
            raise UnsupportedError(f"{type(model).__name__} is not an open_clip CLIP or a transformers CLIPModel")
        self.model = model
        self.processor = processor if processor is not None else default_processor(model.config)
        self.eos_id = model.text_model.eos_token_id

    def sites(self) -> dict[str, Site]:
        def fmt(tower):
            p = f"{tower}.encoder.layers.{{i}}"
            return {"attn": p + ".self_attn", "mlp": p + ".mlp", "resid": p}

        cfg = self.model.config
        return {
            "vision.embed": Site("vision_model.embeddings", "vision"),
            **block_sites("vision.blocks.", fmt("vision_model"), cfg.vision_config.num_hidden_layers, "vision"),
            "vision.post": Site("visual_projection", "vision"),
            **block_sites("text.blocks.", fmt("text_model"), cfg.text_config.num_hidden_layers, "text"),
            "text.post": Site("text_projection", "text"),
        }

    def preprocess(self, images):
        """PIL images -> (pixels ``[n, 3, H, W]``, original-pixel boxes of the patch grid, grid)."""
        ip = self.processor.image_processor
        pixels = ip(images=images, return_tensors="pt")["pixel_values"]
        p = self.model.config.vision_config.patch_size
        grid = (pixels.shape[-2] // p, pixels.shape[-1] // p)
        return pixels, [self._box(ip, img.height, img.width, grid, p) for img in images], grid

    @staticmethod
    def _box(ip, H: int, W: int, grid, p):
        from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio

        def get(d, k):  # SizeDict (transformers 5) or dict (4.x)
            return d.get(k) if isinstance(d, dict) else getattr(d, k, None)

        aff, h, w = Affine(), H, W
        if ip.do_resize:
            s = ip.size
            short, longest = get(s, "shortest_edge"), get(s, "longest_edge")
            if short and longest:
                nh, nw = get_size_with_aspect_ratio((h, w), short, longest)
            elif short:
                dummy = np.broadcast_to(np.zeros((), np.uint8), (3, h, w))
                nh, nw = get_resize_output_image_size(dummy, size=short, default_to_square=False, input_data_format="channels_first")
            elif get(s, "height") and get(s, "width"):
                nh, nw = get(s, "height"), get(s, "width")
            else:
                raise UnsupportedError(f"CLIP image processor size {s} is not supported for patch-grid mapping")
            aff.step(w / nw, h / nh)
            h, w = nh, nw
        if ip.do_center_crop:
            ch, cw = get(ip.crop_size, "height"), get(ip.crop_size, "width")
            if "Pil" in type(ip).__name__:  # numpy centre crop: floor offsets, also when padding
                aff.step(1.0, 1.0, (w - cw) // 2, (h - ch) // 2)
            else:  # torchvision backend
                aff.step(1.0, 1.0, crop_offset(w, cw, False), crop_offset(h, ch, False))
        return aff.box(grid[1] * p, grid[0] * p)

    def tokenize(self, texts):
        """-> (inputs ``{"input_ids", "attention_mask"}`` ``[m, T]``, pool index per row, BOS id, truncated flags)."""
        tok = self.processor.tokenizer
        n = self.model.config.text_config.max_position_embeddings
        enc = tok(texts, padding=True, truncation=True, max_length=n, return_tensors="pt")
        trunc = [len(tok(t)["input_ids"]) > n for t in texts]
        ids = enc["input_ids"]
        if self.eos_id == 2:  # legacy configs: transformers pools at argmax(ids)
            pool = ids.argmax(dim=-1).tolist()
        else:
            pool = (ids == self.eos_id).int().argmax(dim=-1).tolist()
        return {"input_ids": ids, "attention_mask": enc["attention_mask"]}, pool, tok.bos_token_id, trunc

    def image_features(self, inputs):
        out = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def text_features(self, inputs):
        out = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @staticmethod
    def normalize(x):
        return x / torch.pow(torch.sum(torch.pow(x, 2), dim=-1, keepdim=True), 0.5)  # as CLIPModel.forward

    def logit_scale(self):
        return self.model.logit_scale.exp()

    def logits(self, img, txt):
        """Both normalised; mirrors ``CLIPModel.forward`` (``logits_per_image``)."""
        return (torch.matmul(txt, img.t()) * self.model.logit_scale.exp()).t()

    def attention_probs(self, site, module, args, kwargs, output):
        """Recompute from the layer's inputs; the text tower is causal (sdpa may pass no mask)."""
        if kwargs.get("attention_mask") is None and kwargs.get("is_causal"):
            h = kwargs.get("hidden_states", args[0] if args else None)
            T = h.shape[1]
            kwargs = dict(kwargs, attention_mask=torch.ones(T, T, dtype=torch.bool, device=h.device).tril()[None, None])
        return hf_self_attention(module, args, kwargs)
