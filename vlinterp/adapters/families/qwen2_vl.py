"""Qwen2-VL (``Qwen2VLForConditionalGeneration``): a ViT over a packed sequence of every image's
14-px patches (2-D rotary, full attention per image), a 2x2 patch merger into the LM width, and a
Qwen2 language model with M-RoPE (3-D position ids: temporal, row, column). Layout and positions
come from the processor's ``image_grid_thw`` (:mod:`vlinterp.adapters.qwen_layout`)."""
from ..qwen_layout import image_run, mrope_position_ids, vision_layouts, vision_special_ids
from . import Family


def _build_tiny(variant, **kw):
    from ..qwen_tiny import build_tiny

    return build_tiny(variant, **kw)


FAMILY = Family(
    name="qwen2-vl",
    model_types={"qwen2_vl": "Qwen2VLForConditionalGeneration"},
    tiny=("qwen2-vl",),
    build_tiny=_build_tiny,
    vision_embed=("pre:model.visual.blocks.0", "pre:visual.blocks.0"),
    vision_blocks=("model.visual.blocks", "visual.blocks"),
    vision_attn="attn",
    projector=("model.visual.merger", "visual.merger"),
    lm=("model.language_model", "model"),
    vision_attention="varlen",
    vision_packed=True,
    image_token="<|image_pad|>",
    image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
    image_token_id=lambda config: config.image_token_id,
    special_ids=vision_special_ids,
    image_inputs=("pixel_values", "image_grid_thw"),
    image_run=image_run,
    vision_layouts=vision_layouts,
    position_ids=mrope_position_ids,
)
