"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): a SigLIP tower, a 2-layer MLP
projector and a Qwen2 LM; any-resolution tiles with newline tokens for a single image, one padded
crop + newline per image in multi-image prompts (:mod:`vlinterp.adapters.onevision_layout`)."""
from ..onevision_layout import image_run, vision_layouts
from . import Family


def _build_tiny(variant, **kw):
    from ..onevision_tiny import build_tiny

    return build_tiny(variant, **kw)


FAMILY = Family(
    name="llava-onevision",
    model_types={"llava_onevision": "LlavaOnevisionForConditionalGeneration"},
    tiny=("llava-onevision",),
    build_tiny=_build_tiny,
    vision_embed=("model.vision_tower.embeddings", "model.vision_tower.vision_model.embeddings"),
    vision_blocks=("model.vision_tower.encoder.layers", "model.vision_tower.vision_model.encoder.layers"),
    projector=("model.multi_modal_projector",),
    lm=("model.language_model",),
    image_token="<image>",
    image_token_id=lambda config: config.image_token_id,
    image_run=image_run,
    vision_layouts=vision_layouts,
    image_inputs=("pixel_values", "image_sizes", "batch_num_images"),
    nest_images=True,
)
