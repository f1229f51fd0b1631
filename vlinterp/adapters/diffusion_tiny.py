"""Tiny random Stable-Diffusion-layout components for tests (offline, seeded), and the
on-disk component format for pipelines without a VAE (pixel space).

:func:`build_tokenizer` makes a word-level ``PreTrainedTokenizerFast`` over the shapes-world
vocabulary; :func:`build_components` makes a scaled-down SD-1.5 UNet, CLIP text encoder,
AutoencoderKL and DDIM scheduler (``vae=None`` for the pixel-space variant, whose UNet
denoises 3-channel images directly). :func:`save_components` / :func:`load_components`
write/read ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` (each in its library's
own format) plus ``vlinterp_diffusion.json``; a diffusers ``model_index.json`` needs a VAE.
"""
from __future__ import annotations

import json
import os

import torch

CONFIG_NAME = "vlinterp_diffusion.json"

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]  # eos id 3 (HF's CLIP treats eos_token_id == 2 as legacy)
WORDS = [
    "red", "green", "blue", "yellow", "purple", "orange",
    "circle", "square", "triangle", "cross",
    "and", "a", "an", "the", "image", "of", "with", "is", "there", "in", "on",
    "left", "right", "above", "below", "next", "to", "small", "large", "big",
    "one", "two", "three", "four", "shape", "shapes", "picture", "photo", "no", "yes", ",", ".", "?",
]
MAX_LENGTH = 16


def build_tokenizer(words=WORDS, max_length: int = MAX_LENGTH):
    """A ``transformers.PreTrainedTokenizerFast`` over ``tokenizers.models.WordLevel``:
    lower-cases, splits on whitespace/punctuation, wraps every prompt as ``<bos> ... <eos>``."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + [w for w in words if w not in SPECIALS])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=max_length, padding_side="right",
    )


def build_components(pixel: bool = False, image_size: int | None = None, seed: int = 0):
    """``dict(unet, text_encoder, tokenizer, scheduler, vae)``; random weights seeded with ``seed``.

    Latent variant: UNet on ``4 x 16 x 16`` latents, a 2-level AutoencoderKL (images 32x32).
    Pixel variant (``pixel=True``): UNet on ``3 x S x S`` images (``S = image_size`` or 32), no VAE.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    ch = 3 if pixel else 4
    unet = UNet2DConditionModel(
        sample_size=(image_size or 32) if pixel else 16,
        in_channels=ch, out_channels=ch,
        block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_LENGTH, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    vae = None
    if not pixel:
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=32, sample_size=32,
        )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=pixel, set_alpha_to_one=False, steps_offset=1,
    )
    return dict(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler, vae=vae)


def build_pipeline(seed: int = 0):
    """The latent variant assembled as a real ``diffusers.StableDiffusionPipeline``."""
    from diffusers import StableDiffusionPipeline

    c = build_components(pixel=False, seed=seed)
    return StableDiffusionPipeline(
        vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
        scheduler=c["scheduler"], safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def save_components(out: str, unet, text_encoder, tokenizer, scheduler, image_size: int) -> str:
    """Write the pixel-space component directory ``out``; returns ``out``."""
    os.makedirs(out, exist_ok=True)
    unet.save_pretrained(os.path.join(out, "unet"))
    text_encoder.save_pretrained(os.path.join(out, "text_encoder"))
    tokenizer.save_pretrained(os.path.join(out, "tokenizer"))
    scheduler.save_pretrained(os.path.join(out, "scheduler"))
    with open(os.path.join(out, CONFIG_NAME), "w") as f:
        json.dump({"format": "vlinterp-diffusion", "version": 1, "pixel_space": True, "image_size": int(image_size),
                   "components": ["unet", "text_encoder", "tokenizer", "scheduler"],
                   "scheduler_class": type(scheduler).__name__}, f, indent=2)
    return out


def load_components(path: str) -> dict:
    """Read a :func:`save_components` directory (local files only) -> ``dict(unet, text_encoder,
    tokenizer, scheduler, vae)``; ``vae`` is loaded only if listed in the json."""
    import diffusers
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    from ..core.errors import LoadError

    with open(os.path.join(path, CONFIG_NAME)) as f:
        cfg = json.load(f)
    comps = cfg.get("components", [])
    missing = [c for c in ("unet", "text_encoder", "tokenizer", "scheduler") if c not in comps or not os.path.isdir(os.path.join(path, c))]
    if missing:
        raise LoadError(f"{path!r}: {CONFIG_NAME} lacks component folder(s) {missing}")
    sch_cls = getattr(diffusers, cfg.get("scheduler_class", "DDIMScheduler"), DDIMScheduler)
    return dict(
        unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet", local_files_only=True),
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(path, "text_encoder"), local_files_only=True),
        tokenizer=AutoTokenizer.from_pretrained(os.path.join(path, "tokenizer"), local_files_only=True),
        scheduler=sch_cls.from_pretrained(path, subfolder="scheduler", local_files_only=True),
        vae=AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True) if "vae" in comps else None,
    )
