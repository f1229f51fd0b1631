"""VLM families as data: one small declarative :class:`Family` entry per file in this package.

The generic :class:`~vlinterp.adapters.vlm.VlmAdapter` reads an entry to build the site table,
prepare batches, lay out tokens, recompute attention and load checkpoints; a family adds code
only where it really differs (its image-token layout, a packed vision tower). To add a family,
write ``families/<name>.py`` defining ``FAMILY = Family(...)`` and list the module in
:data:`MODULES` (see the README's "add a model family").

Module paths are tuples of candidates (the first one present in the model wins), so an entry
survives transformers moving a submodule (``model.language_model`` in 5.x, ``language_model.model``
before). ``{i}`` in a block path is the block index.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from ...core.errors import LoadError

# family name -> module defining FAMILY; the order is the order checkpoints are matched in
MODULES: dict[str, str] = {
    "llava": "vlinterp.adapters.families.llava",
    "qwen2-vl": "vlinterp.adapters.families.qwen2_vl",
    "qwen2.5-vl": "vlinterp.adapters.families.qwen2_5_vl",
    "qwen3-vl": "vlinterp.adapters.families.qwen3_vl",
    "llava-onevision": "vlinterp.adapters.families.llava_onevision",
    "gemma3": "vlinterp.adapters.families.gemma3",
    "paligemma": "vlinterp.adapters.families.paligemma",
    "internvl": "vlinterp.adapters.families.internvl",
    "smolvlm": "vlinterp.adapters.families.smolvlm",
}


@dataclass(frozen=True)
class Family:
    """One VLM family.

    * ``name``: ``adapter.family``; ``model_types``: the ``config.model_type`` values it loads, each
      mapped to its transformers class name (``{"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}``);
      ``tiny``: ``tiny:<variant>`` names it builds (``build_tiny(variant, **kw) -> (model, processor)``).
    * module paths: ``vision_embed`` (a ``pre:`` prefix = the *input* of that module),
      ``vision_blocks`` (a ``ModuleList``) with ``vision_attn``/``vision_mlp`` inside a block,
      ``projector``, ``lm`` (the text model: ``lm_layers``, ``lm_embed``, ``lm_norm`` inside it;
      ``lm_attn``/``lm_mlp`` inside a layer), ``head``. ``extra_sites(model) -> {name: Site}``
      adds family-only sites (Qwen3-VL's DeepStack mergers).
    * attention flavour: ``vision_attention`` is ``"hf"`` (q/k projections, one sequence per row:
      CLIP) or ``"varlen"`` (one ``qkv`` projection over a packed sequence split by ``cu_seqlens``,
      rotary: Qwen); the language model is always ``"hf"``. ``vision_packed``: vision tensors
      are ``[N, D]`` without a batch dimension.
    * how the processor marks images: ``image_token`` (the placeholder a raw prompt holds once
      per image), ``image_placeholder`` (what ``chat=True`` inserts when the processor has no chat
      template), ``image_token_id(config)`` (the id the processor expands into one position per
      feature), ``special_ids(config)`` (extra ids laid out as specials: vision start/end),
      ``image_inputs`` (processor outputs concatenated over images, for ``Batch.repeat``);
      ``processor_special_ids(processor)``: more ids laid out as specials (InternVL's ``<img>``,
      SmolVLM's ``<fake_token_around_image>`` / ``<row_r_col_c>``); ``processor_image_token_id(processor)``:
      the id the processor expands (checked against the model's; Gemma 3's processor calls its
      placeholder ``<start_of_image>`` the image token, the expanded soft token is the tokenizer's);
      ``nest_images``: the processor takes one list of images per prompt (it tells multi-image
      prompts apart: OneVision, Gemma 3, SmolVLM); ``drop_inputs``: processor outputs the model must
      not get (PaliGemma's ``labels``); ``answer_token_types``: the value of per-token inputs at
      appended answer tokens (PaliGemma: ``token_type_ids`` 1, the causal suffix);
      ``zero_image_is_padding``: the model drops an image whose pixel values are all zero as
      padding (Idefics3 / SmolVLM), so a method's all-zero baseline image must not be exactly zero.
    * layout: ``image_run(adapter, enc, k, (H, W)) -> ImageRun`` (the LM positions of image ``k``),
      ``vision_layouts(adapter, enc, sizes) -> {stream: TokenLayout}``;
      ``position_ids(adapter, batch) -> LongTensor`` (``[3, B, T]`` for M-RoPE; ``None``: 1-D).
    * ``lm_resumable``: the LM can resume from a cached decoder-layer input at a later position
      (False when the model adds to the residual stream between decoder layers: Qwen3-VL's
      DeepStack; or when earlier positions attend to later ones: Gemma 3's bidirectional image
      blocks, PaliGemma's bidirectional prefix).
    """

    name: str
    model_types: dict[str, str]
    tiny: tuple[str, ...]
    build_tiny: Callable
    vision_embed: tuple[str, ...]
    vision_blocks: tuple[str, ...]
    projector: tuple[str, ...]
    lm: tuple[str, ...]
    image_token: str
    image_token_id: Callable
    image_run: Callable
    vision_layouts: Callable
    head: tuple[str, ...] = ("lm_head", "language_model.lm_head")
    vision_attn: str = "self_attn"
    vision_mlp: str = "mlp"
    lm_layers: str = "layers"
    lm_embed: str = "embed_tokens"
    lm_norm: str = "norm"
    lm_attn: str = "self_attn"
    lm_mlp: str = "mlp"
    vision_attention: str = "hf"
    vision_packed: bool = False
    image_placeholder: str | None = None
    special_ids: Callable = field(default=lambda config: ())
    image_inputs: tuple[str, ...] = ("pixel_values",)
    position_ids: Callable | None = None
    extra_sites: Callable | None = None
    lm_resumable: bool = True
    processor_special_ids: Callable = field(default=lambda processor: ())
    processor_image_token_id: Callable = field(default=lambda processor: getattr(processor, "image_token_id", None))
    nest_images: bool = False
    drop_inputs: tuple[str, ...] = ()
    answer_token_types: dict = field(default_factory=dict)
    zero_image_is_padding: bool = False


_LOADED: dict[str, Family] = {}


def get(name: str) -> Family:
    """The entry of family ``name`` (imported on first use)."""
    if name not in _LOADED:
        if name not in MODULES:
            raise LoadError(f"unknown VLM family {name!r}; known: {', '.join(MODULES)}")
        _LOADED[name] = importlib.import_module(MODULES[name]).FAMILY
    return _LOADED[name]


def all_families() -> list[Family]:
    return [get(n) for n in MODULES]


def for_model_type(model_type: str) -> Family | None:
    """The family whose checkpoints have ``config.model_type == model_type`` (or ``None``)."""
    return next((f for f in all_families() if model_type in f.model_types), None)


def for_tiny(variant: str) -> Family | None:
    """The family that builds ``tiny:<variant>`` (or ``None``)."""
    return next((f for f in all_families() if variant in f.tiny), None)


def model_class(family: Family, model_type: str):
    """The transformers class of ``model_type`` checkpoints."""
    import transformers

    return getattr(transformers, family.model_types[model_type])


__all__ = ["Family", "MODULES", "get", "all_families", "for_model_type", "for_tiny", "model_class"]
