"""InternVL (``InternVLForConditionalGeneration``, InternVL3 ``-hf`` checkpoints): an InternViT tower
(blocks ``encoder.layer``, attention ``attention``), a pixel shuffle + MLP projector and a Qwen2
LM; tiles + thumbnail in one run of ``<IMG_CONTEXT>`` per image
(:mod:`vlinterp.adapters.internvl_layout`)."""
from ..internvl_layout import image_run, special_ids, vision_layouts
from . import Family


def _build_tiny(variant, **kw):
    from ..internvl_tiny import build_tiny

    return build_tiny(variant, **kw)


FAMILY = Family(
    name="internvl",
    model_types={"internvl": "InternVLForConditionalGeneration"},
    tiny=("internvl",),
    build_tiny=_build_tiny,
    vision_embed=("model.vision_tower.embeddings",),
    vision_blocks=("model.vision_tower.encoder.layer",),
    vision_attn="attention",
    projector=("model.multi_modal_projector",),
    lm=("model.language_model",),
    image_token="<IMG_CONTEXT>",
    image_token_id=lambda config: config.image_token_id,
    processor_special_ids=special_ids,
    image_run=image_run,
    vision_layouts=vision_layouts,
)
