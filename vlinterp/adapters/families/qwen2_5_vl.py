"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): Qwen2-VL's layout with windowed vision
attention (``window_size`` px windows of merged blocks; full attention at ``fullatt_block_indexes``).
The blocks see the patches regrouped window by window, so the ``vision`` and ``projector`` layouts
follow the model's own ``window_index`` (the merger output is put back in row-major order before
the LM)."""
from dataclasses import replace

from ..qwen_layout import windowed_vision_layouts
from .qwen2_vl import FAMILY as QWEN2_VL

FAMILY = replace(
    QWEN2_VL,
    name="qwen2.5-vl",
    model_types={"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"},
    tiny=("qwen2.5-vl",),
    vision_layouts=windowed_vision_layouts,
)
