"""Real Qwen geometry without weights: the published configs (``tests/configs/<checkpoint>/config.json``
and ``preprocessor_config.json``, written from the checkpoints' published values) built on the meta
device. vlinterp's image-token counts and grids must equal the real Qwen image processor's (patch,
merge, min/max pixels of the checkpoint) and the model's own (``get_rope_index`` on the processor's
``image_grid_thw``) for several sizes and aspect ratios, one prompt holding two images."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("accelerate")

CONFIGS = Path(__file__).parent / "configs"
CHECKPOINTS = ["Qwen2-VL-2B-Instruct", "Qwen2.5-VL-7B-Instruct", "Qwen3-VL-2B-Instruct"]
SIZES = [(224, 224), (640, 480), (480, 1280), (1000, 600)]  # (W, H)


def _published(name):
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    from vlinterp.adapters import families
    from vlinterp.adapters.qwen_tiny import qwen_processor, qwen_tokenizer
    from vlinterp.adapters.vlm import VlmAdapter

    d = CONFIGS / name
    cfg = AutoConfig.from_pretrained(d, local_files_only=True)
    pp = json.loads((d / "preprocessor_config.json").read_text())
    size = pp.get("size") or {"shortest_edge": pp["min_pixels"], "longest_edge": pp["max_pixels"]}
    vc = cfg.vision_config
    assert (pp["patch_size"], pp["merge_size"]) == (vc.patch_size, vc.spatial_merge_size)
    tok = qwen_tokenizer(ids={"<|image_pad|>": cfg.image_token_id, "<|video_pad|>": cfg.video_token_id,
                              "<|vision_start|>": cfg.vision_start_token_id, "<|vision_end|>": cfg.vision_end_token_id})
    proc = qwen_processor(cfg, tok, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
    with init_empty_weights():
        model = families.model_class(families.for_model_type(cfg.model_type), cfg.model_type)(cfg)
    return VlmAdapter(model, proc, name=name)


def _img(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_published_geometry_matches_processor_and_model(name):
    m = _published(name)
    assert any(p.device.type == "meta" for p in m.model.parameters())
    assert m.num_layers() == m.text_config.num_hidden_layers and m.num_layers("vision") == m.config.vision_config.depth
    merge = m.config.vision_config.spatial_merge_size
    images = [_img(w, h, k) for k, (w, h) in enumerate(SIZES)]
    # rows: one image each, then one prompt holding two images (kept apart)
    b = m.prepare(images=[[im] for im in images] + [[images[0], images[3]]],
                  text=["describe the image."] * len(images) + ["compare the two images."])
    L, ids = b.layout, b.inputs["input_ids"]
    grid = b.inputs["image_grid_thw"]
    expected = m.processor._get_num_multimodal_tokens(image_sizes=[(h, w) for w, h in SIZES])["num_image_tokens"]
    pos = m.model.model.get_rope_index(ids, mm_token_type_ids=b.inputs["mm_token_type_ids"], image_grid_thw=grid,
                                       attention_mask=b.inputs["attention_mask"])[0]
    counts = []
    for i in range(len(SIZES) + 2):
        r, P = L.image_row(i), L.image_positions(i)
        t, h, w = grid[i].tolist()
        rows, cols = L.grid(i)
        # vlinterp == the processor: its grid, and the tokens it wrote into the prompt
        assert (t, rows, cols) == (1, h // merge, w // merge)
        assert len(P) == t * h * w // merge**2
        assert bool((ids[r, P] == m.image_token_id).all())
        # == the model's own M-RoPE: the image spans exactly rows x cols cells
        hp, wp = pos[1, r, P], pos[2, r, P]
        assert (int(hp.max() - hp.min()) + 1, int(wp.max() - wp.min()) + 1) == (rows, cols)
        assert torch.equal(hp - hp.min(), torch.as_tensor(L.row[r, P.numpy()]).long())
        assert torch.equal(wp - wp.min(), torch.as_tensor(L.col[r, P.numpy()]).long())
        counts.append(len(P))
    for r in range(len(SIZES) + 1):
        assert sum(len(L.image_positions(i)) for i in range(len(SIZES) + 2) if L.image_row(i) == r) == int((ids[r] == m.image_token_id).sum())
    assert counts[: len(SIZES)] == list(expected)
    assert counts[len(SIZES):] == [counts[0], counts[3]] and L.image_row(len(SIZES)) == L.image_row(len(SIZES) + 1)
    assert len(set(counts[: len(SIZES)])) == len(SIZES)  # the four shapes give four different layouts
    if name.startswith("Qwen2"):  # published preprocessors (patch 14, merge 2, 3136..12845056 px): known counts
        assert counts[: len(SIZES)] == [64, 391, 782, 756]
    # the packed vision layout covers every patch once
    V = b.layouts["vision"]
    assert V.shape == (1, int(grid.prod(-1).sum())) and sorted(set(V.image_index[0].tolist())) == list(range(len(SIZES) + 2))
