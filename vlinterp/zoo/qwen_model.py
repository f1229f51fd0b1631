"""The shapes-qwen organism's model, processor and the fast paths its training uses.

A ``Qwen2_5_VLForConditionalGeneration`` at small widths: the real vision tower (patch 14, temporal
patch 2, 2D rotary, RMSNorm + SwiGLU blocks, window attention in all blocks but
:data:`FULLATT`), the 2x2 patch merger, and the M-RoPE Qwen2 LM; its ``Qwen2_5_VLProcessor`` is
built offline from the word tokenizer (:func:`vlinterp.adapters.wordtok.word_tokenizer`) with Qwen's
named image tokens and a Qwen-style chat template. ``min_pixels = max_pixels = 140^2``, so every
128x128 scene becomes 140x140: a 10x10 patch grid (the patch density of shapes-llava), 5x5 = 25 image
tokens after the merger, in four attention windows of 3x3 / 3x2 / 2x3 / 2x2 merged units.

Training fast paths (checked against the HF forward in ``tests/test_zoo_qwen.py``):

* :func:`pixels`: the processor's resize as uint8 (pools store these); :func:`patchify` turns
  normalised ``[B, 3, 140, 140]`` into the processor's ``pixel_values`` rows.
* :class:`FastVisual`: the tower's blocks on a batch of same-size images at once (one attention call
  per block with a window mask instead of one per window and image).
* :func:`lm_loss`: the LM stage's loss from cached tower outputs, through the real
  ``Qwen2_5_VLModel.forward`` (``mm_encoder_outputs``), so M-RoPE positions are the model's own.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE, PATCH, MERGE, TEMPORAL = 140, 14, 2, 2
GRID = IMAGE_SIZE // PATCH                     # 10x10 patches
N_TOKENS = (GRID // MERGE) ** 2                # 25 image tokens
WINDOW = 84                                    # pixels: 3x3 merged units per window
FULLATT = [2, 5]                               # blocks with full attention (the others: windows)
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
NAMED = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "vision_start_token": "<|vision_start|>",
         "vision_end_token": "<|vision_end|>"}
# Qwen's ChatML layout (no default system turn); an image is <|vision_start|><|image_pad|><|vision_end|>
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer():
    """The word tokenizer with Qwen's specials: no BOS, ``<|im_end|>`` ends a turn (EOS), named image tokens."""
    from ..adapters.wordtok import word_tokenizer
    from .llava_data import WORDS

    return word_tokenizer(words=WORDS + ["system"], specials=["<pad>", "<unk>", "<s>", "</s>"] + QWEN_SPECIALS,
                          eos_token="<|im_end|>", add_bos=False, named=NAMED)


def config(tok, vision_layers: int = 6, width: int = 128, lm_layers: int = 4):
    """A tiny ``Qwen2_5_VLConfig``: vision ``vision_layers x width`` (4 heads, SwiGLU 3*width), merger to
    the LM width, LM ``lm_layers x width`` (4 heads, 2 KV heads, head_dim 32: ``mrope_section`` [4, 6, 6]
    sums to head_dim / 2)."""
    from transformers import Qwen2_5_VLConfig

    ids = {k: tok.convert_tokens_to_ids(v) for k, v in NAMED.items()}
    cfg = Qwen2_5_VLConfig(
        vision_config=dict(depth=vision_layers, hidden_size=width, intermediate_size=3 * width, num_heads=4,
                           patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL,
                           window_size=WINDOW, out_hidden_size=width, fullatt_block_indexes=list(FULLATT)),
        text_config=dict(vocab_size=len(tok), hidden_size=width, intermediate_size=4 * width,
                         num_hidden_layers=lm_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=tok.pad_token_id, bos_token_id=None,
                         eos_token_id=tok.eos_token_id,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}),
        image_token_id=ids["image_token"], video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_start_token"], vision_end_token_id=ids["vision_end_token"])
    cfg._attn_implementation = "sdpa"
    return cfg


def processor(tok):
    """The real ``Qwen2_5_VLProcessor``: every image is resized to 140x140 (``min_pixels = max_pixels``)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": IMAGE_SIZE ** 2, "longest_edge": IMAGE_SIZE ** 2}
    kw = dict(size=size, patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL, image_mean=MEAN, image_std=STD)
    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**kw), tokenizer=tok,
                               video_processor=Qwen2VLVideoProcessor(**kw), chat_template=CHAT_TEMPLATE)


# ------------------------------------------------------------------------ pixels
def pixels(img) -> np.ndarray:
    """The processor's resize (torchvision bicubic, antialiased) of a PIL image: uint8 ``[3, 140, 140]``."""
    from torchvision.transforms.v2 import functional as tvF

    x = torch.from_numpy(np.asarray(img.convert("RGB"), np.uint8).copy()).permute(2, 0, 1)
    y = tvF.resize(x, [IMAGE_SIZE, IMAGE_SIZE], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
    return y.numpy().copy()


def patchify(x: torch.Tensor) -> torch.Tensor:
    """Normalised ``[B, 3, H, W]`` -> the processor's ``pixel_values`` rows ``[B, P, 3 * 2 * 14 * 14]``
    (patches grouped by 2x2 merge unit, each frame repeated over the temporal patch)."""
    B, C, H, W = x.shape
    gh, gw = H // PATCH, W // PATCH
    p = x.reshape(B, C, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH).permute(0, 2, 5, 3, 6, 1, 4, 7)
    return p.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, TEMPORAL, -1, -1).reshape(B, gh * gw, C * TEMPORAL * PATCH * PATCH)


class FastVisual:
    """The tower's blocks on ``B`` same-grid images at once (window attention as a block mask).

    ``__call__(rows [B, P, 1176]) -> [B, P, D]``: the last block's output in the tower's own
    (window-permuted) order, which is what its merger reads; :meth:`merge` applies the merger and puts
    the tokens back in LM order; :meth:`rowmajor` reorders patch features to the row-major grid."""

    def __init__(self, visual, grid: int = GRID):
        from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

        self.visual, cfg = visual, visual.config
        thw = torch.tensor([[1, grid, grid]])
        m = cfg.spatial_merge_size
        unit = m * m
        win, cu = get_vision_window_index(thw, m, cfg.window_size, cfg.patch_size)
        self.win = win
        self.unwin = torch.argsort(win)
        P = grid * grid
        perm = (win[:, None] * unit + torch.arange(unit)[None]).reshape(-1)   # permuted row -> processor row
        self.perm = perm
        pos = get_vision_position_ids(thw, m)                                  # [P, 2] in processor order
        cos, sin = visual.rotary_pos_emb(torch.zeros(1), pos)
        self.cos, self.sin = cos[perm], sin[perm]
        wid = torch.repeat_interleave(torch.arange(len(cu) - 1), (cu[1:] - cu[:-1]).long())
        self.window_mask = wid[:, None] == wid[None, :]                        # [P, P] same window
        # processor row -> row-major patch index
        g = grid // m
        ur, uc, kr, kc = np.meshgrid(np.arange(g), np.arange(g), np.arange(m), np.arange(m), indexing="ij")
        proc_to_rm = torch.as_tensor(((ur * m + kr) * grid + (uc * m + kc)).reshape(-1))
        self.rm_index = torch.argsort(proc_to_rm[perm])                       # row-major -> permuted row
        self.P = P

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

        v = self.visual
        dev = rows.device
        B = rows.shape[0]
        w = v.patch_embed.proj.weight
        x = F.linear(rows[:, self.perm.to(dev)].to(w.dtype), w.reshape(w.shape[0], -1))   # [B, P, D]
        cos, sin = self.cos.to(dev), self.sin.to(dev)
        mask = self.window_mask.to(dev)
        for i, blk in enumerate(v.blocks):
            a = blk.attn
            h = blk.norm1(x)
            q, k, val = a.qkv(h).reshape(B, self.P, 3, a.num_heads, -1).unbind(2)
            q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), val.transpose(1, 2),
                                               attn_mask=None if i in v.fullatt_block_indexes else mask)
            x = x + a.proj(o.transpose(1, 2).reshape(B, self.P, -1))
            x = x + blk.mlp(blk.norm2(x))
        return x

    def merge(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, P, D]`` (tower order) -> merged image tokens ``[B, P / 4, out]`` in LM order."""
        B = h.shape[0]
        out = self.visual.merger(h.reshape(-1, h.shape[-1])).reshape(B, -1, self.visual.merger.mlp[-1].out_features)
        return out[:, self.unwin.to(h.device)]

    def rowmajor(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, P, D]`` (tower order) -> ``[B, P, D]`` over the row-major patch grid."""
        return h[:, self.rm_index.to(h.device)]


def lm_loss(model, ids, mask, labels, feats):
    """The LM stage's loss (:func:`vlinterp.zoo.recipe_llava.answer_loss`) with image rows' cached tower
    outputs ``feats [b, P, D]`` (tower order) merged by the model's merger and placed by the model's own
    forward (placeholder check, M-RoPE positions from ``mm_token_type_ids`` and ``image_grid_thw``)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from .recipe_llava import answer_loss

    inner = model.model
    is_img = ids == model.config.image_token_id
    kw = {}
    if feats is not None and feats.shape[0]:
        fv = fast_visual(model)
        merged = fv.merge(feats.to(inner.visual.merger.mlp[0].weight.dtype))
        kw = dict(mm_token_type_ids=is_img.int(), image_grid_thw=torch.tensor([[1, GRID, GRID]] * feats.shape[0], device=ids.device),
                  mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=(merged.reshape(-1, merged.shape[-1]),))})
    out = inner(input_ids=ids, attention_mask=mask, use_cache=False, **kw)
    return answer_loss(model.lm_head(out.last_hidden_state[:, :-1]), labels)


def fast_visual(model) -> FastVisual:
    """The :class:`FastVisual` of ``model``'s tower (built once, kept on the model as a plain attribute)."""
    fv = model.__dict__.get("_fast_visual")
    if fv is None or fv.visual is not model.model.visual:
        fv = FastVisual(model.model.visual)
        model.__dict__["_fast_visual"] = fv
    return fv


def features(model):
    """``fn(normalised pixels [b, 3, 140, 140]) -> [b, P, D]``: the tower's block output (what the
    merger reads; cached for the LM stages)."""
    fv = fast_visual(model)
    return lambda x: fv(patchify(x))


__all__ = ["IMAGE_SIZE", "GRID", "N_TOKENS", "tokenizer", "config", "processor", "pixels", "patchify", "FastVisual",
           "fast_visual", "lm_loss", "features"]
