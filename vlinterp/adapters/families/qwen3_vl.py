"""Qwen3-VL (``Qwen3VLForConditionalGeneration``): Qwen2-VL's layout with 16-px patches, a learned
position grid added before the first vision block (so ``vision.embed``, the input of block 0,
includes it), interleaved M-RoPE, and DeepStack: mergers on chosen vision blocks whose outputs are
added to the LM's residual stream at the image positions after the first decoder layers (sites
``deepstack.{k}``; ``blocks.{i}.resid`` is the decoder layer's output before that addition, so the
LM cannot resume from a cached layer input)."""
from dataclasses import replace

from ...core.hooks import Site
from .qwen2_vl import FAMILY as QWEN2_VL


def _deepstack_sites(adapter) -> dict:
    n = len(adapter.config.vision_config.deepstack_visual_indexes or [])
    path = adapter._path(("model.visual.deepstack_merger_list", "visual.deepstack_merger_list"), "DeepStack merger list")
    return {f"deepstack.{k}": Site(f"{path}.{k}", "projector", packed=True) for k in range(n)}


FAMILY = replace(
    QWEN2_VL,
    name="qwen3-vl",
    model_types={"qwen3_vl": "Qwen3VLForConditionalGeneration"},
    tiny=("qwen3-vl",),
    extra_sites=_deepstack_sites,
    lm_resumable=False,
)
