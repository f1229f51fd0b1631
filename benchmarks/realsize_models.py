"""Models of real geometry with random weights, built from the published configs under ``tests/configs``
(no weights exist here: only time and memory are measured with them).

* ``llava15``: LLaVA-1.5-7B (``llava-1.5-7b-hf``): CLIP ViT-L/14 at 336 px (24 layers, 576 patches),
  the two-layer GELU projector, a Llama-7B language model of real width (4096, 32 heads, MLP 11008)
  with ``lm_layers`` of its 32 layers, the real vocabulary (32064) and head.
* ``llava_qwen05``: the same tower and projector in front of a complete Qwen2-0.5B language model
  (24 layers, width 896, 2 KV heads, vocabulary 152000; the text config of
  ``llava-onevision-qwen2-0.5b-ov-hf``).
* ``llava_next``: LLaVA-NeXT (``llava-v1.6-mistral-7b-hf``): any-resolution tiles (a 672x672 image:
  5 crops, 2928 image tokens) before a Mistral-7B language model (width 4096, 8 KV heads) of
  ``lm_layers`` layers.
* ``vit_b16``: timm ``vit_base_patch16_224`` (197 tokens).
* ``clip_b32``: open_clip ``ViT-B-32`` (``open_clip--ViT-B-32``: 50 image tokens, 77 text tokens).
* ``sd15``: the Stable Diffusion 1.5 UNet (``stable-diffusion-v1-5/unet``, 64x64x4 latents) with
  its CLIP ViT-L/14 text encoder (12 x 768) and VAE.

Tokenizers are word-level with the checkpoints' special ids (the geometry is what matters: one
image placeholder expands to the same token count the real processor writes).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CONFIGS = Path(__file__).resolve().parent.parent / "tests" / "configs"
WORDS = ("is there a red circle in the picture what color shape describe image yes no answer one two three "
         "green blue square triangle left right of and").split()


def _no_dtype(d):
    """``d`` without the published ``torch_dtype`` / ``dtype`` keys at any depth: a sub-config that
    keeps its ``float16`` builds that part in fp16 whatever ``--dtype`` asks (LLaVA-1.5's text config)."""
    if isinstance(d, dict):
        return {k: _no_dtype(v) for k, v in d.items() if k not in ("torch_dtype", "dtype")}
    return d


def _json(*parts) -> dict:
    return _no_dtype(json.loads((CONFIGS.joinpath(*parts)).read_text()))


def image(w: int = 640, h: int = 480, seed: int = 0) -> Image.Image:
    """A random RGB picture (the pixels do not matter, the geometry does)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _random_init(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Normal(0, 0.02) matrices and embeddings, unit norms: fast, and activations stay finite at depth."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).mul_(0.02).to(p.dtype))
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0) if ("norm" in name or "ln" in name or name.endswith("weight")) else p.normal_(0, 0.02, generator=g)
    return model


def _build(cls, cfg, dtype):
    """``cls(cfg)`` directly in ``dtype`` (no float32 copy of the weights), randomly initialised."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = cls(cfg)
    finally:
        torch.set_default_dtype(old)
    model = model.to_empty(device="cpu")
    _random_init(model)
    if hasattr(model, "tie_weights"):  # to_empty gave tied parameters separate storage
        model.tie_weights()
    return _fix_buffers(model).eval()


def _llava_processor(cfg, tok, pp: dict, next_: bool = False):
    import transformers as T

    kw = {k: v for k, v in pp.items() if k not in ("image_processor_type", "processor_class", "aspect_ratio_setting")}
    if next_:
        ip = T.LlavaNextImageProcessor(**kw)
        return T.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=cfg.vision_config.patch_size,
                                    vision_feature_select_strategy=cfg.vision_feature_select_strategy, num_additional_image_tokens=1)
    ip = T.CLIPImageProcessor(**kw)
    return T.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=cfg.vision_config.patch_size,
                            vision_feature_select_strategy=cfg.vision_feature_select_strategy, num_additional_image_tokens=1)


def _fix_buffers(model):
    """Buffers ``to_empty`` left uninitialised: rotary tables (a fresh module of the same class
    gives them) and CLIP's ``position_ids``."""
    for mod in model.modules():
        if isinstance(getattr(mod, "inv_freq", None), torch.Tensor) and hasattr(mod, "config"):
            fresh = type(mod)(config=mod.config)
            for bname, b in fresh.named_buffers(recurse=False):
                setattr(mod, bname, b.clone())
            if hasattr(fresh, "attention_scaling"):
                mod.attention_scaling = fresh.attention_scaling
        if isinstance(getattr(mod, "position_ids", None), torch.Tensor) and hasattr(mod, "num_positions"):
            mod.position_ids = torch.arange(mod.num_positions).expand((1, -1))
    return model


def llava15(lm_layers: int = 4, dtype=torch.bfloat16, text_config: dict | None = None, name: str = "llava-1.5-7b"):
    """The LLaVA-1.5-7B geometry (see the module doc); ``text_config`` replaces the language model."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from vlinterp.adapters.vlm import VlmAdapter
    from vlinterp.adapters.wordtok import word_tokenizer

    raw = _json("llava-1.5-7b-hf", "config.json")
    if text_config is not None:
        raw["text_config"] = dict(text_config)
        raw["vocab_size"] = text_config["vocab_size"]
    raw["text_config"]["num_hidden_layers"] = int(lm_layers) if lm_layers else raw["text_config"].get("num_hidden_layers", 32)
    image_id = raw["image_token_index"]
    cfg = LlavaConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "torch_dtype", "transformers_version")})
    cfg._attn_implementation = "sdpa"
    cfg.text_config._attn_implementation = "sdpa"
    cfg.vision_config._attn_implementation = "sdpa"
    model = _build(LlavaForConditionalGeneration, cfg, dtype)
    tok = word_tokenizer(WORDS, ids={"<image>": image_id})
    proc = _llava_processor(cfg, tok, _json("llava-1.5-7b-hf", "preprocessor_config.json"))
    return VlmAdapter(model, proc, name=f"{name} ({cfg.text_config.num_hidden_layers} LM layers)")


def llava_qwen05(dtype=torch.bfloat16):
    """LLaVA-1.5's tower + projector before a complete Qwen2-0.5B language model."""
    ov = _json("llava-onevision-qwen2-0.5b-ov-hf", "config.json")
    text = {k: v for k, v in ov["text_config"].items() if k not in ("architectures", "_name_or_path", "torch_dtype")}
    m = llava15(lm_layers=text["num_hidden_layers"], dtype=dtype, text_config=text, name="llava-1.5 tower + Qwen2-0.5B")
    return m


def llava_next(lm_layers: int = 2, dtype=torch.bfloat16):
    """LLaVA-NeXT (Mistral-7B width) with ``lm_layers`` language-model layers."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    from vlinterp.adapters.vlm import VlmAdapter
    from vlinterp.adapters.wordtok import word_tokenizer

    raw = _json("llava-v1.6-mistral-7b-hf", "config.json")
    raw["text_config"]["num_hidden_layers"] = int(lm_layers)
    cfg = LlavaNextConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "torch_dtype", "transformers_version")})
    for c in (cfg, cfg.text_config, cfg.vision_config):
        c._attn_implementation = "sdpa"
    model = _build(LlavaNextForConditionalGeneration, cfg, dtype)
    tok = word_tokenizer(WORDS, ids={"<image>": raw["image_token_index"]})
    proc = _llava_processor(cfg, tok, _json("llava-v1.6-mistral-7b-hf", "preprocessor_config.json"), next_=True)
    return VlmAdapter(model, proc, name=f"llava-v1.6-mistral-7b ({lm_layers} LM layers)")


def vit_b16(dtype=torch.bfloat16):
    import timm

    from vlinterp.adapters.vit_timm import TimmVitAdapter

    cfg = _json("timm--vit_base_patch16_224.augreg2_in21k_ft_in1k", "config.json")
    torch.manual_seed(0)
    model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"])
    return TimmVitAdapter(model.to(dtype).eval(), cfg, name="vit_base_patch16_224")


def clip_b32(dtype=torch.bfloat16):
    import open_clip

    from vlinterp.adapters.clip import ClipAdapter, default_open_clip_processor

    cfg = _json("open_clip--ViT-B-32", "open_clip_config.json")
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg["model_cfg"]).eval()
    open_clip.set_model_preprocess_cfg(model, dict(cfg["preprocess_cfg"], size=model.visual.image_size))
    return ClipAdapter(model.to(dtype), default_open_clip_processor(model), name="open_clip ViT-B-32")


def sd15(dtype=torch.bfloat16):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from vlinterp.adapters.diffusion import DiffusionAdapter
    from vlinterp.adapters.diffusion_tiny import build_tokenizer

    d = "stable-diffusion-v1-5"
    drop = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**drop(_json(d, "unet", "config.json"))).to(dtype).eval()
    tcfg = {k: v for k, v in _json(d, "text_encoder", "config.json").items() if k not in ("architectures", "torch_dtype", "transformers_version")}
    te = CLIPTextModel(CLIPTextConfig(**tcfg)).to(dtype).eval()
    vae = AutoencoderKL(**drop(_json(d, "vae", "config.json"))).to(dtype).eval()
    sch = DDIMScheduler(**{k: v for k, v in drop(_json(d, "scheduler", "scheduler_config.json")).items()
                           if k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "set_alpha_to_one", "steps_offset")})
    tok = build_tokenizer(max_length=tcfg["max_position_embeddings"])
    return DiffusionAdapter.from_components(unet, te, tok, sch, vae=vae, name="stable-diffusion-v1-5")


BUILDERS = {"llava15": llava15, "llava_qwen05": llava_qwen05, "llava_next": llava_next, "vit_b16": vit_b16,
            "clip_b32": clip_b32, "sd15": sd15}


def n_params(m) -> float:
    return sum(p.numel() for p in m.model.parameters()) / 1e6


def describe(m) -> str:
    return f"{m.name}: {n_params(m):.0f}M parameters, {m.dtype}"


if __name__ == "__main__":  # smoke: build each and run one forward
    import sys
    import time

    for name in sys.argv[1:] or list(BUILDERS):
        t0 = time.perf_counter()
        m = BUILDERS[name]()
        t1 = time.perf_counter()
        if m.kind == "vlm":
            b = m.prepare(images=[image()], text=["is there a red circle in the picture?"])
        elif m.kind == "diffusion":
            b = m.prepare(text=["a red circle"])
        elif m.kind == "clip":
            b = m.prepare(images=[image()], text=["a red circle", "a blue square"])
        else:
            b = m.prepare(images=[image()])
        out = m.run(b)
        print(f"{describe(m)}; built {t1 - t0:.1f}s, forward {time.perf_counter() - t1:.1f}s, "
              f"tokens {b.layout.shape}, logits finite {bool(torch.isfinite(out.logits.float()).all())}", flush=True)
        del m, out
        os.sys.stdout.flush()
