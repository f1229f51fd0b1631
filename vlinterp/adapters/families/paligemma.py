"""PaliGemma / PaliGemma 2 (``PaliGemmaForConditionalGeneration``): a SigLIP tower, a linear
projector and a Gemma (2) LM that attends bidirectionally over the prefix (image tokens and
prompt: ``token_type_ids`` 0) and causally over the suffix (appended answers: ``token_type_ids``
1); positions count from 1. The processor puts the image tokens first and ``<bos>`` after them;
there is no chat template (``chat=True`` writes one ``<image>`` per image before the prompt)."""
from ..gemma_layout import paligemma_image_run, paligemma_position_ids, paligemma_vision_layouts
from . import Family


def _build_tiny(variant, **kw):
    from ..gemma_tiny import build_tiny

    return build_tiny(variant, **kw)


FAMILY = Family(
    name="paligemma",
    model_types={"paligemma": "PaliGemmaForConditionalGeneration"},
    tiny=("paligemma",),
    build_tiny=_build_tiny,
    vision_embed=("model.vision_tower.embeddings", "model.vision_tower.vision_model.embeddings"),
    vision_blocks=("model.vision_tower.encoder.layers", "model.vision_tower.vision_model.encoder.layers"),
    projector=("model.multi_modal_projector",),
    lm=("model.language_model",),
    image_token="<image>",
    image_placeholder="<image>",
    image_token_id=lambda config: config.image_token_id,
    image_run=paligemma_image_run,
    vision_layouts=paligemma_vision_layouts,
    position_ids=paligemma_position_ids,
    drop_inputs=("labels",),
    answer_token_types={"token_type_ids": 1},
    lm_resumable=False,
)
