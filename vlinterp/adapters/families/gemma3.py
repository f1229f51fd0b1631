"""Gemma 3 (``Gemma3ForConditionalGeneration``): a SigLIP tower, a pooling projector (``P x P``
patches averaged to 16x16 soft tokens, RMS-normed, projected) and a Gemma 3 LM whose attention
is bidirectional among the tokens of one image (``token_type_ids``; the attention recomputation
uses the mask each layer receives). The prompt placeholder is ``<start_of_image>``; the tokens
the model fills are ``config.image_token_id`` (``<image_soft_token>``). Pan-and-scan crops are
further runs of soft tokens of the same image (:mod:`vlinterp.adapters.gemma_layout`)."""
from ..gemma_layout import gemma3_image_run, gemma3_special_ids, gemma3_vision_layouts
from . import Family


def _build_tiny(variant, **kw):
    from ..gemma_tiny import build_tiny

    return build_tiny(variant, **kw)


FAMILY = Family(
    name="gemma3",
    model_types={"gemma3": "Gemma3ForConditionalGeneration"},
    tiny=("gemma3",),
    build_tiny=_build_tiny,
    vision_embed=("model.vision_tower.embeddings", "model.vision_tower.vision_model.embeddings"),
    vision_blocks=("model.vision_tower.encoder.layers", "model.vision_tower.vision_model.encoder.layers"),
    projector=("model.multi_modal_projector",),
    lm=("model.language_model",),
    image_token="<start_of_image>",
    image_token_id=lambda config: config.image_token_id,
    processor_image_token_id=lambda processor: getattr(processor.tokenizer, "image_token_id", None),
    special_ids=gemma3_special_ids,
    image_run=gemma3_image_run,
    vision_layouts=gemma3_vision_layouts,
    nest_images=True,
    lm_resumable=False,
)
