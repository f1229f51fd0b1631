"""LLaVA (llava-1.5: ``LlavaForConditionalGeneration``) and LLaVA-NeXT (any-resolution tiles +
image-newline tokens: ``LlavaNextForConditionalGeneration``): a CLIP vision tower, an MLP
projector and a Llama/Mistral language model. The image runs differ between the two (see
:mod:`vlinterp.adapters.llava_layout`); the rest is the generic adapter."""
from ..llava_layout import image_run, vision_layouts
from . import Family


def _build_tiny(variant, **kw):
    from ..llava_tiny import build_tiny

    return build_tiny(variant, **kw)


def _image_token_id(config) -> int:
    return config.image_token_index if hasattr(config, "image_token_index") else config.image_token_id


FAMILY = Family(
    name="llava",
    model_types={"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration"},
    tiny=("llava", "llava-next"),
    build_tiny=_build_tiny,
    vision_embed=("model.vision_tower.vision_model.embeddings", "vision_tower.vision_model.embeddings",
                  "model.vision_tower.embeddings", "vision_tower.embeddings"),
    vision_blocks=("model.vision_tower.vision_model.encoder.layers", "vision_tower.vision_model.encoder.layers",
                   "model.vision_tower.encoder.layers", "vision_tower.encoder.layers"),
    projector=("model.multi_modal_projector", "multi_modal_projector"),
    lm=("model.language_model", "language_model.model", "language_model"),
    image_token="<image>",
    image_token_id=_image_token_id,
    image_run=image_run,
    vision_layouts=vision_layouts,
    image_inputs=("pixel_values", "image_sizes"),
)
