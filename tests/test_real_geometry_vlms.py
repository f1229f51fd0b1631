"""Real geometry without weights for LLaVA-OneVision, Gemma 3, PaliGemma 2, InternVL3 and SmolVLM:
the published configs (``tests/configs/<checkpoint>/config.json``, ``preprocessor_config.json`` and,
where the checkpoint has one, ``processor_config.json``, written from the checkpoints' published
values) built on the meta device, with the real image processors and processors of those settings
(a word-level tokenizer holding the checkpoints' image-token ids).

For four sizes and aspect ratios (224x224, 640x480, 480x1280, 1000x600, W x H), each alone in a
prompt, and one prompt holding two images, vlinterp's image-token count per image equals the
tokens the processor wrote, the processor's own ``_get_num_multimodal_tokens``, and the model's own
feature count (the model's modules run on meta tensors of the tower's output shape: OneVision's
``pack_image_features``, Gemma 3 / PaliGemma / InternVL ``get_image_features``, SmolVLM's connector,
times the crops the processor made); the vision stream has one row per crop the processor made.

Sources: the config values of huggingface.co/llava-hf/llava-onevision-qwen2-0.5b-ov-hf,
google/gemma-3-4b-it (as mirrored by mlx-community/gemma-3-4b-it-bf16), google/paligemma2-3b-pt-224 (as
quoted in a fine-tune's config), OpenGVLab/InternVL3-1B-hf, HuggingFaceTB/SmolVLM-256M-Instruct (an
``idefics3`` checkpoint). OneVision's published processor config omits ``num_image_tokens``, which
its processor needs: 729 = (384 / 14)^2, the tower's grid.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("accelerate")

CONFIGS = Path(__file__).parent / "configs"
SIZES = [(224, 224), (640, 480), (480, 1280), (1000, 600)]  # (W, H)
# image tokens at SIZES with the published preprocessors (the counts /work/shared/ENVIRONMENT.md measured)
KNOWN = {
    "llava-onevision-qwen2-0.5b-ov-hf": [1485, 2929, 5157, 4665],
    "gemma-3-4b-it": [256, 256, 256, 256],
    "paligemma2-3b-pt-224": [256, 256, 256, 256],
    "InternVL3-1B-hf": [256, 3328, 2816, 1792],
    "SmolVLM-256M-Instruct": [1088, 832, 576, 832],
}
# token name -> (named attribute, id field in config.json)
TOKENS = {
    "llava_onevision": {"<image>": ("image_token", "image_token_index"), "<video>": ("video_token", "video_token_index")},
    "gemma3": {"<image_soft_token>": ("image_token", "image_token_index"), "<start_of_image>": ("boi_token", "boi_token_index"),
               "<end_of_image>": ("eoi_token", "eoi_token_index")},
    "paligemma": {"<image>": ("image_token", "image_token_index")},
    "internvl": {"<IMG_CONTEXT>": ("context_image_token", "image_token_id"), "<img>": ("start_image_token", None),
                 "</img>": ("end_image_token", None), "<video>": ("video_token", None)},
    "idefics3": {"<image>": ("image_token", "image_token_id"), "<fake_token_around_image>": ("fake_image_token", None),
                 "<global-img>": ("global_image_token", None), "<end_of_utterance>": ("end_of_utterance_token", None)},
}


def _img(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _published(name):
    import transformers as T
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    from vlinterp.adapters import families
    from vlinterp.adapters.smolvlm_tiny import MARKERS
    from vlinterp.adapters.vlm import VlmAdapter
    from vlinterp.adapters.wordtok import word_tokenizer

    d = CONFIGS / name
    raw = json.loads((d / "config.json").read_text())
    cfg = AutoConfig.from_pretrained(d, local_files_only=True)
    pp = json.loads((d / "preprocessor_config.json").read_text())
    pc = json.loads((d / "processor_config.json").read_text()) if (d / "processor_config.json").exists() else {}
    toks = TOKENS[cfg.model_type]
    ids = {t: raw[f] for t, (_, f) in toks.items() if f}
    extra = MARKERS if cfg.model_type == "idefics3" else []
    tok = word_tokenizer(specials=["<pad>", "<unk>", "<s>", "</s>"] + list(toks) + extra, named={a: t for t, (a, _) in toks.items()}, ids=ids)
    ip_kw = {k: v for k, v in pp.items() if k not in ("image_processor_type", "processor_class", "image_seq_length")}
    ip = getattr(T, pp["image_processor_type"].removesuffix("Fast"))(**ip_kw)
    kind = cfg.model_type
    if kind == "llava_onevision":
        proc = T.LlavaOnevisionProcessor(image_processor=ip, tokenizer=tok, video_processor=T.LlavaOnevisionVideoProcessor(),
                                         num_image_tokens=pc["num_image_tokens"], vision_feature_select_strategy=pc["vision_feature_select_strategy"],
                                         vision_aspect_ratio=pc["vision_aspect_ratio"])
    elif kind == "gemma3":
        proc = T.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=pp["image_seq_length"])
    elif kind == "paligemma":
        ip.image_seq_length = pp["image_seq_length"]
        proc = T.PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    elif kind == "internvl":
        proc = T.InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=T.InternVLVideoProcessor(),
                                   image_seq_length=raw["image_seq_length"])
    else:
        proc = T.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=pc["image_seq_len"])
    with init_empty_weights():
        model = families.model_class(families.for_model_type(cfg.model_type), cfg.model_type)(cfg)
    return VlmAdapter(model, proc, name=name)


def _processor_crops(m, b, sizes):
    """Crops per image as the processor / model count them (OneVision: the model's
    ``image_size_to_num_patches``, one crop in a multi-image prompt; InternVL / SmolVLM: the image
    processor's ``get_number_of_image_patches``; Gemma 3 / PaliGemma: one, plus pan-and-scan crops)."""
    cfg, ip, L = m.config, m.processor.image_processor, b.layout
    out = []
    for i, (h, w) in enumerate(sizes):
        alone = sum(1 for j in range(len(sizes)) if L.image_row(j) == L.image_row(i)) == 1
        if cfg.model_type == "llava_onevision":
            from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

            out.append(image_size_to_num_patches((h, w), cfg.image_grid_pinpoints, cfg.vision_config.image_size) if alone else 1)
        elif cfg.model_type == "internvl":
            out.append(ip.get_number_of_image_patches(h, w, {"crop_to_patches": True}))
        elif cfg.model_type == "idefics3":
            out.append(max(1, ip.get_number_of_image_patches(h, w, {})[0]))
        else:
            out.append(len(L.images[i].tiles))
    return out


def _model_counts(m, sizes, crops):
    """The model's own feature count per image, from its modules on meta tensors."""
    cfg, inner = m.config, m.model.model
    if cfg.model_type == "llava_onevision":
        g = cfg.vision_config.image_size // cfg.vision_config.patch_size
        feats = [torch.zeros(n, g * g, cfg.text_config.hidden_size, device="meta") for n in crops]
        packed, _ = inner.pack_image_features(feats, torch.tensor(sizes), image_newline=inner.image_newline,
                                              vision_aspect_ratio=cfg.vision_aspect_ratio)
        return [int(f.shape[0]) for f in packed]
    if cfg.model_type == "idefics3":
        vc = cfg.vision_config
        per = inner.connector(torch.zeros(1, (vc.image_size // vc.patch_size) ** 2, vc.hidden_size, device="meta")).shape[1]
    else:
        s = cfg.vision_config.image_size
        s = s[0] if isinstance(s, (list, tuple)) else s
        per = inner.get_image_features(torch.zeros(1, 3, s, s, device="meta")).pooler_output.shape[1]
    return [int(per) * n for n in crops]


CHECKPOINTS = list(KNOWN)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_published_geometry_matches_processor_and_model(name):
    m = _published(name)
    assert any(p.device.type == "meta" for p in m.model.parameters())
    assert m.num_layers() == m.text_config.num_hidden_layers
    images = [_img(w, h, k) for k, (w, h) in enumerate(SIZES)]
    tok = m.spec.image_token
    raw = [f"{tok}describe the image."] * len(SIZES) + [f"{tok}{tok}compare the two images."]
    b = m.prepare(images=[[im] for im in images] + [[images[0], images[3]]], text=raw, chat=False)
    L, ids = b.layout, b.inputs["input_ids"]
    sizes = [(h, w) for w, h in SIZES] + [(SIZES[0][1], SIZES[0][0]), (SIZES[3][1], SIZES[3][0])]
    ours = []
    for i in range(len(sizes)):
        r = L.image_row(i)
        mine = int(((L.image_index[r] == i) & (L.modality[r] > 1)).sum())  # image cells + newlines of image i
        ours.append(mine)
    # == the processor: the image tokens it wrote per row, and its own count for single images
    for r in range(len(SIZES) + 1):
        assert sum(ours[i] for i in range(len(sizes)) if L.image_row(i) == r) == int((ids[r] == m.image_token_id).sum())
    expected = m.processor._get_num_multimodal_tokens(image_sizes=[(h, w) for w, h in SIZES])["num_image_tokens"]
    assert ours[: len(SIZES)] == list(expected) == KNOWN[name]
    # == the model's own feature count, over the crops the processor made (one vision row each)
    crops = _processor_crops(m, b, sizes)
    assert ours == _model_counts(m, sizes, crops)
    V, px = b.layouts["vision"], b.inputs["pixel_values"]
    assert V.shape[0] == sum(crops) and [sum(1 for g in V.images if g.source == i) for i in range(len(sizes))] == crops
    if m.config.model_type == "idefics3":  # padded [rows, max images, ...]: the model drops all-zero images
        assert sum(crops) == int((px != 0).flatten(2).any(-1).sum())
    elif m.config.model_type == "llava_onevision":  # [images, max crops, ...]: the model takes each image's first crops
        assert px.shape[:2] == (len(sizes), max(crops))
    else:
        assert px.shape[0] == sum(crops)
    # multi-image prompts keep images apart; OneVision then takes one padded crop + newline each
    assert L.image_row(len(SIZES)) == L.image_row(len(SIZES) + 1) != L.image_row(len(SIZES) - 1)
    if m.config.model_type == "llava_onevision":
        g = m.config.vision_config.image_size // m.config.vision_config.patch_size
        assert ours[len(SIZES):] == [g * g + 1, g * g + 1]
    else:
        assert ours[len(SIZES):] == [ours[0], ours[3]]


def test_gemma3_pan_and_scan_counts():
    """Gemma 3 with pan-and-scan (a processor call option): 480x1280 -> 4 x 256 tokens, 1000x600 -> 3 x 256."""
    m = _published("gemma-3-4b-it")
    images = [_img(w, h, k) for k, (w, h) in enumerate(SIZES)]
    b = m.prepare(images=[[im] for im in images], text=["<start_of_image>describe the image."] * 4, chat=False,
                  processor_kwargs={"do_pan_and_scan": True})
    L = b.layout
    ours = [len(L.image_positions(i)) for i in range(4)]
    assert [int((b.inputs["input_ids"][r] == m.image_token_id).sum()) for r in range(4)] == ours
    assert ours == [256, 768, 1024, 768]
    assert [len(L.images[i].tiles) for i in range(4)] == [1, 3, 4, 3] and b.inputs["pixel_values"].shape[0] == 11
    assert ours == _model_counts(m, [(h, w) for w, h in SIZES], [1, 3, 4, 3])
