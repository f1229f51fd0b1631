"""SmolVLM / Idefics3 (``SmolVLMForConditionalGeneration``, ``Idefics3ForConditionalGeneration``;
the SmolVLM-256M/500M/2B checkpoints are ``idefics3``): a SigLIP-style tower, a pixel-shuffle +
linear connector and a Llama LM (``model.text_model``); tiles and the global image each in its own
run of ``<image>`` between tile markers (:mod:`vlinterp.adapters.smolvlm_layout`)."""
from ..smolvlm_layout import image_run, special_ids, vision_layouts
from . import Family


def _build_tiny(variant, **kw):
    from ..smolvlm_tiny import build_tiny

    return build_tiny(variant, **kw)


FAMILY = Family(
    name="smolvlm",
    model_types={"smolvlm": "SmolVLMForConditionalGeneration", "idefics3": "Idefics3ForConditionalGeneration"},
    tiny=("smolvlm", "idefics3"),
    build_tiny=_build_tiny,
    vision_embed=("model.vision_model.embeddings",),
    vision_blocks=("model.vision_model.encoder.layers",),
    projector=("model.connector",),
    lm=("model.text_model",),
    image_token="<image>",
    image_token_id=lambda config: config.image_token_id,
    processor_special_ids=special_ids,
    image_run=image_run,
    vision_layouts=vision_layouts,
    nest_images=True,
    zero_image_is_padding=True,
)
