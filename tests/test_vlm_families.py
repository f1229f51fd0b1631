"""One contract over every VLM family on the generic adapter (LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL,
Qwen3-VL, LLaVA-OneVision, Gemma 3, PaliGemma, InternVL, SmolVLM, Idefics3): uniform site names, the ``inputs_embeds`` site (what the first decoder layer receives, image
features included, unlike ``embed``), and the public surface methods use instead of model internals."""
import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp as vi
from vlinterp.adapters import families
from vlinterp.adapters.registry import FAMILIES, TINY
from vlinterp.core.errors import LoadError
from vlinterp.core.layout import IMAGE

VARIANTS = ["llava", "llava-next", "qwen2-vl", "qwen2.5-vl", "qwen3-vl", "llava-onevision", "gemma3", "paligemma",
            "internvl", "smolvlm", "idefics3"]
UNIFORM = ["vision.embed", "vision.blocks.0.attn", "vision.blocks.0.mlp", "vision.blocks.0.resid", "projector", "embed",
           "inputs_embeds", "blocks.0.attn", "blocks.0.mlp", "blocks.0.resid", "norm", "logits"]


@pytest.fixture(scope="module", params=VARIANTS)
def vlm(request):
    return vi.load(f"tiny:{request.param}")


def _img(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_sites_and_public_surface(vlm):
    assert vlm.kind == "vlm" and vlm.family == families.for_model_type(vlm.config.model_type).name
    assert set(UNIFORM) <= set(vlm.sites())
    assert vlm.sites().index("inputs_embeds") == vlm.sites().index("embed") + 1
    assert len(vlm.lm_layers) == vlm.num_layers() == vlm.text_config.num_hidden_layers
    assert len(vlm.vision_blocks) == vlm.num_layers("vision")
    assert vlm.lm_layers[0] is vlm.module("blocks.0.resid") and vlm.lm_head is vlm.module("logits")
    assert vlm.lm_norm is vlm.module("norm") and vlm.text_embeddings is vlm.module("embed")
    assert vlm.lm.layers is vlm.lm_layers
    b = vlm.prepare(images=[_img(40, 64), _img(32, 32, 1)], text=["is there a red circle?", "what color is the square?"])
    ids = b.inputs["input_ids"]
    out = vlm.run(b, capture=["embed", "inputs_embeds", "blocks.0.resid"])
    assert torch.equal(out.cache["embed"], vlm.text_embeddings(ids))
    pos = vlm.position_ids(b)
    assert pos.shape[-2:] == ids.shape and pos.dim() == (3 if vlm.family.startswith("qwen") else 2)
    for r in range(2):  # every image-token id sits at an image position (LLaVA-NeXT: also its newlines)
        tok = (ids[r] == vlm.image_token_id).numpy()
        img = b.layout.modality[r] == IMAGE
        assert tok[img].all() and tok.sum() >= img.sum() > 0


def test_inputs_embeds_holds_the_image_features(vlm):
    """``embed`` is the token embedding (the placeholder's embedding at image positions);
    ``inputs_embeds`` is what decoder layer 0 receives: the same at text positions, the projected
    image features at image positions; editing it changes the answer."""
    b = vlm.prepare(images=[_img(40, 64)], text=["is there a red circle?"])
    out = vlm.run(b, capture=["embed", "inputs_embeds", "projector"])
    emb, inp = out.cache["embed"][0], out.cache["inputs_embeds"][0]
    img = torch.as_tensor(b.layout.modality[0] == IMAGE)
    text = torch.as_tensor(b.layout.modality[0] == 1)
    assert torch.equal(emb[text], inp[text])
    assert not torch.allclose(emb[img], inp[img])
    placeholder = vlm.text_embeddings(torch.tensor([vlm.image_token_id]))[0]
    assert torch.equal(emb[img], placeholder.expand_as(emb[img]))
    if vlm.family == "llava" and vlm.config.model_type == "llava":  # one crop: the projector's rows in order
        assert torch.equal(inp[b.layout.image_positions(0)], out.cache["projector"][0])
    ref = vlm.run(b).logits
    moved = vlm.run(b, edits={"inputs_embeds": lambda t, layout: t + 1.0}).logits
    assert not torch.allclose(moved, ref)


def test_registry_and_family_table():
    for v in ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "llava-onevision", "gemma3", "paligemma", "internvl", "smolvlm"):
        assert TINY[v] == v and FAMILIES[v].endswith(":VlmAdapter")
        assert families.for_tiny(v).name == v
    assert TINY["idefics3"] == "smolvlm" and families.for_tiny("idefics3").name == "smolvlm"
    assert families.for_model_type("qwen2_5_vl").name == "qwen2.5-vl" and families.for_model_type("gpt2") is None
    for model_type, name in [("llava_onevision", "llava-onevision"), ("gemma3", "gemma3"), ("paligemma", "paligemma"),
                             ("internvl", "internvl"), ("smolvlm", "smolvlm"), ("idefics3", "smolvlm")]:
        assert families.for_model_type(model_type).name == name
    from vlinterp.adapters.llava import LlavaAdapter
    from vlinterp.adapters.vlm import VlmAdapter

    assert LlavaAdapter is VlmAdapter
    with pytest.raises(LoadError, match="unknown tiny VLM"):
        VlmAdapter.tiny("qwen9-vl")
