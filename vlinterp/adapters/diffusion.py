"""Diffusion family: Stable-Diffusion-layout pipelines (diffusers ``UNet2DConditionModel`` +
transformers ``CLIPTextModel`` + tokenizer + scheduler, optionally an ``AutoencoderKL``).

``vae=None`` means PIXEL space (the UNet denoises ``[B, 3, S, S]`` images in [-1, 1]);
with a VAE the UNet works on latents ``[B, C, S/f, S/f]`` (``f`` = VAE downscale factor).

Streams (``batch.layouts``):
  * ``text`` (main): prompt tokens ``[B, L]``; bos/eos ``special``, words ``text``, padding
    ``pad``; spans ``prompt`` (word tokens) and ``word:<w>`` (token positions of word ``w``).
  * ``unet``: one row per sample, its ``h*w`` positions are the latent pixels at the UNet's
    highest resolution (``image`` positions, ``(row, col)`` on the latent grid); the image
    geometry is the output image (or the given image's centre crop), so ``to_heatmap`` maps a
    latent-grid score map ``[h, w]`` (or ``[h*w]``) to image pixels.

Sites: ``text.embed``, ``text.blocks.{i}.{attn,mlp,resid}``, ``text.final`` ``[B, L, D]``;
``unet.down.{i}``, ``unet.mid.0``, ``unet.up.{i}`` ``[B, C_i, h_i, w_i]`` (down blocks return
``(hidden, skips)``; the hidden tensor is captured/edited, the skip copies are not);
``unet.xattn.{k}`` / ``unet.sattn.{k}``: every ``attn2`` / ``attn1`` module, numbered in
module order (``named_modules``: down blocks, up blocks, then mid block), output
``[B, N, C]`` with ``N = h'*w'`` that block's resolution (see :meth:`xattn_grid`);
``logits`` = ``unet.conv_out`` ``[B, C, h, w]``. ``positions`` in capture selects dim 1,
which for ``[B, C, h, w]`` sites means channels.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
import warnings

import numpy as np
import torch
from PIL import Image

from ..core.attention import diffusers_attention, hf_self_attention
from ..core.errors import LoadError, PromptError, ShapeMismatchError, UnsupportedError
from ..core.hooks import Site
from ..core.images import load_image
from ..core.layout import LayoutBuilder, Tile
from ..core.types import Batch
from .base import Adapter, block_sites

CONFIG_NAME = "vlinterp_diffusion.json"  # our pixel-space component format (see diffusion_tiny)


class DiffusionModel(torch.nn.Module):
    """Container so hooks and ``count_hooks`` see every part: ``unet``, ``text_encoder``, ``vae`` (or None)."""

    def __init__(self, unet, text_encoder, vae=None):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder
        self.vae = vae


class DiffusionAdapter(Adapter):
    family = "diffusion"
    kind = "diffusion"
    main_stream = "text"

    def __init__(self, model: DiffusionModel, tokenizer, scheduler, name: str = ""):
        self.scheduler = scheduler
        super().__init__(model, tokenizer, name)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_components(cls, unet, text_encoder, tokenizer, scheduler, vae=None, name: str = "") -> "DiffusionAdapter":
        """Wrap components; ``vae=None`` = pixel space (UNet ``in_channels`` must be 3)."""
        d_text = text_encoder.config.hidden_size
        if unet.config.cross_attention_dim != d_text:
            raise ShapeMismatchError(f"UNet cross_attention_dim {unet.config.cross_attention_dim} != text encoder hidden size {d_text}")
        if vae is None and unet.config.in_channels != 3:
            raise ShapeMismatchError(f"pixel-space UNet must take 3 channels, got in_channels={unet.config.in_channels}; pass vae=")
        if vae is not None and vae.config.latent_channels != unet.config.in_channels:
            raise ShapeMismatchError(f"VAE latent_channels {vae.config.latent_channels} != UNet in_channels {unet.config.in_channels}")
        if getattr(unet.config, "addition_embed_type", None):
            raise UnsupportedError("UNets with added conditioning (SDXL-style) are not supported")
        from .dtypes import model_dtype

        d_unet, d_text = model_dtype(unet), model_dtype(text_encoder)
        if d_unet != d_text:
            raise LoadError(f"the UNet is {d_unet} but the text encoder {d_text}: cast both to one dtype "
                            "(unet.to(dtype), text_encoder.to(dtype)), or load the directory with vlinterp.load(path, dtype=...)")
        return cls(DiffusionModel(unet, text_encoder, vae), tokenizer, scheduler, name=name)

    @classmethod
    def can_load(cls, path) -> bool:
        p = os.fspath(path)
        return os.path.isdir(p) and any(os.path.isfile(os.path.join(p, f)) for f in (CONFIG_NAME, "model_index.json"))

    @classmethod
    def from_path(cls, path, device=None, dtype=None, scheduler: str = "ddim", **kw) -> "DiffusionAdapter":
        """Load a diffusers pipeline directory (``model_index.json``) or our component directory
        (``vlinterp_diffusion.json``) from local files only. ``scheduler="ddim"`` converts the
        saved scheduler to ``DDIMScheduler`` (same betas); ``"native"`` keeps it. Every part loads in
        one dtype: ``dtype``, or for ``"auto"``/``None`` the UNet's stored dtype (fp16 -> bf16 on a CPU;
        a pipeline saved in fp16 would otherwise come back with an fp16 text encoder beside an fp32 UNet)."""
        from diffusers import DDIMScheduler, DiffusionPipeline, SchedulerMixin, UNet2DConditionModel

        p = os.fspath(path)
        if not cls.can_load(p):
            raise LoadError(f"{p!r} is not a diffusers pipeline directory (no model_index.json or {CONFIG_NAME})")
        from .dtypes import model_dtype, resolve_dtype

        dtype = resolve_dtype(kw.pop("torch_dtype", dtype), p, device)
        if os.path.isfile(os.path.join(p, CONFIG_NAME)):
            from .diffusion_tiny import load_components

            c = load_components(p)
            unet, te, tok, sch, vae = (c[k] for k in ("unet", "text_encoder", "tokenizer", "scheduler", "vae"))
        else:
            pipe = DiffusionPipeline.from_pretrained(p, local_files_only=True, **({"torch_dtype": dtype} if dtype else {}), **kw)
            unet, te, tok, sch = (getattr(pipe, k, None) for k in ("unet", "text_encoder", "tokenizer", "scheduler"))
            vae = getattr(pipe, "vae", None)
            if not isinstance(unet, UNet2DConditionModel) or te is None or tok is None or getattr(pipe, "text_encoder_2", None) is not None:
                raise LoadError(f"{p!r}: {type(pipe).__name__} is not a Stable-Diffusion-layout pipeline (UNet2DConditionModel + one CLIP text encoder)")
        if scheduler == "ddim" and not isinstance(sch, DDIMScheduler):
            sch = DDIMScheduler.from_config(sch.config)
        if not isinstance(sch, SchedulerMixin):
            raise LoadError(f"{p!r}: no usable scheduler")
        dtype = dtype or model_dtype(unet)  # one dtype for every part (the libraries' defaults differ)
        for part in (unet, te, vae):
            if part is not None:
                part.to(device=device, dtype=dtype)
        return cls.from_components(unet, te, tok, sch, vae=vae, name=p)

    @classmethod
    def tiny(cls, variant: str = "diffusion", **kw) -> "DiffusionAdapter":
        """``diffusion``: tiny SD-1.5-layout latent pipeline (32x32 images, 16x16x4 latents);
        ``diffusion-pixel``: pixel-space variant (no VAE, UNet on 3x32x32 images)."""
        from .diffusion_tiny import build_components

        if variant not in ("diffusion", "diffusion-pixel"):
            raise LoadError(f"unknown tiny diffusion variant {variant!r}; known: diffusion, diffusion-pixel")
        if isinstance(kw.get("dtype"), str) and kw["dtype"] == "auto":
            kw["dtype"] = None
        c = build_components(pixel=variant == "diffusion-pixel", image_size=kw.pop("image_size", None))
        m = cls.from_components(c["unet"], c["text_encoder"], c["tokenizer"], c["scheduler"], c["vae"], name=f"tiny:{variant}")
        if kw.get("device") or kw.get("dtype"):
            m.model.to(device=kw.get("device"), dtype=kw.get("dtype"))
        return m

    def pipeline(self):
        """The components as a ``diffusers.StableDiffusionPipeline`` (needs a VAE)."""
        from diffusers import StableDiffusionPipeline

        if self.vae is None:
            raise UnsupportedError("a pixel-space model (no VAE) is not a StableDiffusionPipeline; use save()")
        return StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.model.text_encoder, tokenizer=self.processor, unet=self.unet,
            scheduler=self.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )

    def save(self, out_dir) -> str:
        """Latent models: ``StableDiffusionPipeline.save_pretrained``; pixel space: component
        folders (``unet``, ``text_encoder``, ``tokenizer``, ``scheduler``) + ``vlinterp_diffusion.json``."""
        from ..core.io import output_dir
        from .diffusion_tiny import save_components

        out = os.fspath(out_dir)
        with output_dir(out, "out_dir") as tmp:  # never over files vlinterp did not write
            if self.vae is not None:
                self.pipeline().save_pretrained(tmp)
            else:
                save_components(tmp, self.unet, self.model.text_encoder, self.processor, self.scheduler, self.image_size)
        return out

    # --------------------------------------------------------------- geometry
    @property
    def unet(self):
        return self.model.unet

    @property
    def vae(self):
        return self.model.vae

    @property
    def vae_scale(self) -> int:
        """Image pixels per latent pixel (1 in pixel space)."""
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        s = self.unet.config.sample_size
        return int(s if isinstance(s, int) else s[0])

    @property
    def image_size(self) -> int:
        """Side of the (square) images the model generates / takes."""
        return self.latent_size * self.vae_scale

    def _xattn_level(self, path: str) -> int:
        n_down = len(self.unet.down_blocks)
        parts = path.split(".")
        if "down_blocks" in parts:
            return int(parts[parts.index("down_blocks") + 1])
        if "up_blocks" in parts:
            return len(self.unet.up_blocks) - 1 - int(parts[parts.index("up_blocks") + 1])
        return n_down - 1

    def xattn_grid(self, k: int, batch: Batch | None = None, stream: str = "xattn") -> tuple[int, int]:
        """``(h', w')`` of attention site ``unet.{stream}.{k}``: its ``N = h'*w'`` query positions."""
        h, w = (batch.layouts["unet"].grid(0) if batch is not None else (self.latent_size, self.latent_size))
        for _ in range(self._xattn_level(self.site_table[f"unet.{stream}.{k}"].module)):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return h, w

    # ------------------------------------------------------------------ sites
    def build_sites(self) -> dict[str, Site]:
        tm = getattr(self.model.text_encoder, "text_model", self.model.text_encoder)  # transformers 4 nests it
        te = "text_encoder.text_model" if tm is not self.model.text_encoder else "text_encoder"
        n_text = len(tm.encoder.layers)
        sites = {"text.embed": Site(f"{te}.embeddings", "text")}
        sites.update(block_sites("text.blocks.", {
            "attn": te + ".encoder.layers.{i}.self_attn", "mlp": te + ".encoder.layers.{i}.mlp",
            "resid": te + ".encoder.layers.{i}"}, n_text, "text"))
        sites["text.final"] = Site(f"{te}.final_layer_norm", "text")
        for i in range(len(self.unet.down_blocks)):
            sites[f"unet.down.{i}"] = Site(f"unet.down_blocks.{i}", "unet", i)
        if self.unet.mid_block is not None:
            sites["unet.mid.0"] = Site("unet.mid_block", "unet", 0)
        for i in range(len(self.unet.up_blocks)):
            sites[f"unet.up.{i}"] = Site(f"unet.up_blocks.{i}", "unet", i)
        for kind, suffix in (("xattn", "attn2"), ("sattn", "attn1")):
            names = [n for n, _ in self.unet.named_modules() if n.endswith("." + suffix)]
            for k, n in enumerate(names):
                sites[f"unet.{kind}.{k}"] = Site(f"unet.{n}", "unet", k)
        sites["logits"] = Site("unet.conv_out", "unet")
        return sites

    def attention_sites(self, stream: str | None = None) -> dict[int, str]:
        """``xattn``/``sattn``: k -> ``unet.{stream}.{k}``; ``text`` (default): ``text.blocks.{i}.attn``."""
        stream = stream or self.main_stream
        if stream in ("xattn", "sattn"):
            return {s.layer: n for n, s in self.site_table.items() if n.startswith(f"unet.{stream}.")}
        return super().attention_sites(stream)

    def _attention_probs(self, site, module, args, kwargs, output) -> torch.Tensor:
        """Text: ``[B, H, L, L]`` (causal); xattn: ``[B, H, N, L]``; sattn: ``[B, H, N, N]``."""
        if site.startswith("text."):
            kw = dict(kwargs)
            h = kw.get("hidden_states", args[0] if args else None)
            if kw.get("attention_mask") is None:  # sdpa path: causal via is_causal, no explicit mask
                T = h.shape[1]
                kw["attention_mask"] = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
            return hf_self_attention(module, args, kw)
        hs = kwargs.get("hidden_states", args[0] if args else None)
        ehs = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        return diffusers_attention(module, hs, ehs)

    # ---------------------------------------------------------------- inputs
    def _max_length(self) -> int:
        L = getattr(self.processor, "model_max_length", None)
        if not L or L > 100_000:
            L = self.model.text_encoder.config.max_position_embeddings
        return int(L)

    def _tokenize(self, texts: list[str]):
        """-> ``(input_ids [B, L], attention_mask [B, L], text layout)``."""
        tok, L = self.processor, self._max_length()
        for t in texts:
            if not isinstance(t, str):
                raise PromptError(f"prompts must be strings, got {type(t).__name__}")
        try:
            enc = tok(texts, padding="max_length", max_length=L, truncation=True, return_tensors="pt", return_offsets_mapping=True)
            offsets = enc.pop("offset_mapping")
        except (NotImplementedError, ValueError, TypeError, KeyError):
            enc, offsets = tok(texts, padding="max_length", max_length=L, truncation=True, return_tensors="pt"), None
        full = tok(texts, truncation=False)["input_ids"]
        if any(len(f) > L for f in full):
            warnings.warn(f"prompt(s) longer than the text encoder's {L} tokens were truncated", stacklevel=3)
        ids = enc["input_ids"]
        mask = enc.get("attention_mask", torch.ones_like(ids))
        specials = set(tok.all_special_ids)
        if tok.unk_token_id not in {tok.bos_token_id, tok.eos_token_id}:  # CLIP: unk == eos
            specials.discard(tok.unk_token_id)  # an unknown word is still a word
        lb = LayoutBuilder()
        for b, text in enumerate(texts):
            try:
                wids = enc.word_ids(b)
            except (ValueError, AttributeError):
                wids = None
            words: dict = {}
            for p in range(ids.shape[1]):
                if not mask[b, p]:
                    continue
                tid = int(ids[b, p])
                if tid in specials:
                    lb.special(1)
                    continue
                pos = lb.pos
                lb.text(1, span="prompt")
                key = wids[p] if wids is not None and wids[p] is not None else ("tok", p)
                if offsets is not None and wids is not None and wids[p] is not None:
                    s, e = (int(v) for v in offsets[b, p])
                    prev = words.get(key, (None, [], s, e))
                    words[key] = (None, prev[1] + [pos], min(prev[2], s), max(prev[3], e))
                else:
                    w = tok.convert_ids_to_tokens(tid).replace("</w>", "").lstrip("Ġ▁")
                    words[key] = (w, [pos], 0, 0)
            for w, pos, s, e in words.values():
                lb.mark(f"word:{(w if w is not None else text[s:e]).lower()}", pos)
            lb.end_row()
        layout = lb.build(pad_side=getattr(tok, "padding_side", "right"), length=ids.shape[1])
        return ids, mask, layout

    def _encode_images(self, imgs: list[Image.Image]):
        """Centre-crop the largest square, resize to S x S -> ``([B, 3, S, S] in [-1, 1], boxes)``;
        ``boxes`` are the crops in original pixels ``(x0, y0, x1, y1)``."""
        S, xs, boxes = self.image_size, [], []
        for img in imgs:
            W, H = img.size
            side = min(W, H)
            left, top = (W - side) // 2, (H - side) // 2
            im = img.crop((left, top, left + side, top + side)).resize((S, S), Image.BICUBIC)
            xs.append(torch.from_numpy(np.asarray(im, np.float32) / 127.5 - 1.0).permute(2, 0, 1))
            boxes.append((float(left), float(top), float(left + side), float(top + side)))
        return torch.stack(xs), boxes

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, S, S]`` in [-1, 1] -> UNet space ``[B, C, h, w]`` (VAE posterior mode x scaling)."""
        if self.vae is None:
            return x
        z = self.vae.encode(x.to(self.device, self.vae.dtype)).latent_dist.mode()
        return (z - (getattr(self.vae.config, "shift_factor", None) or 0.0)) * self.vae.config.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """UNet space ``[B, C, h, w]`` -> images ``[B, 3, S, S]`` in [0, 1]."""
        if self.vae is not None:
            z = z / self.vae.config.scaling_factor + (getattr(self.vae.config, "shift_factor", None) or 0.0)
            z = self.vae.decode(z.to(self.vae.dtype)).sample
        return (z.float() / 2 + 0.5).clamp(0, 1)

    def prepare(self, images=None, text=None, seed: int = 0, timestep: int | None = None, **kw) -> Batch:
        """Prompts (and optionally images to noise) -> Batch.

        inputs: ``input_ids``/``attention_mask`` ``[B, L]``; ``noise`` ``[B, C, h, w]`` (seeded,
        CPU generator); ``timestep`` (0-d long; default ``num_train_timesteps // 2``);
        ``latents`` = the UNet input: the noise itself, or with ``images`` the images encoded
        and noised to ``timestep`` (``clean`` keeps the un-noised encoding)."""
        if isinstance(text, str):
            text = [text]
        if images is not None and not isinstance(images, (list, tuple)):
            images = [images]
        if text is None and images is None:
            raise PromptError("prepare() needs text=[prompts] (and optionally images=[...] to noise)")
        imgs = [load_image(im, f"images[{i}]") for i, im in enumerate(images)] if images is not None else []
        if text is None:
            text = [""] * len(imgs)
        text = list(text)
        if imgs and len(text) == 1 and len(imgs) > 1:
            text = text * len(imgs)
        if imgs and len(text) != len(imgs):
            raise PromptError(f"{len(text)} prompts for {len(imgs)} images; give one prompt per image (or one for all)")
        n_train = self.scheduler.config.num_train_timesteps
        t = n_train // 2 if timestep is None else int(timestep)
        if not 0 <= t < n_train:
            raise PromptError(f"timestep {t} outside the scheduler's range 0..{n_train - 1}")
        ids, mask, text_layout = self._tokenize(text)
        B, S, h = len(text), self.image_size, self.latent_size
        shape = (B, self.unet.config.in_channels, h, h)
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed))).to(self.device, self.dtype)
        tt = torch.tensor(t, dtype=torch.long, device=self.device)
        inputs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), "noise": noise, "timestep": tt}
        boxes = [(0.0, 0.0, float(S), float(S))] * B
        if imgs:
            x, boxes = self._encode_images(imgs)
            with torch.no_grad():
                clean = self.encode(x.to(self.device, self.dtype)).to(self.dtype)
            inputs["clean"] = clean
            inputs["latents"] = self.scheduler.add_noise(clean, noise, tt.expand(B))
        else:
            inputs["latents"] = noise * self.scheduler.init_noise_sigma
        lb = LayoutBuilder()
        for b in range(B):
            lb.image_grid(b, h, h)
            size = (imgs[b].size[1], imgs[b].size[0]) if imgs else (S, S)
            lb.add_image(b, size, [Tile((h, h), boxes[b])])
            lb.end_row()
        return Batch(inputs, {"text": text_layout, "unet": lb.build()}, self.main_stream, imgs, text,
                     {"seed": int(seed), "timestep": t, "from_images": bool(imgs)})

    # ---------------------------------------------------------------- running
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, L]`` ids -> ``encoder_hidden_states`` ``[B, L, D]`` (as StableDiffusionPipeline)."""
        use_mask = getattr(self.model.text_encoder.config, "use_attention_mask", False)
        return self.model.text_encoder(input_ids, attention_mask=attention_mask if use_mask else None)[0]

    def _forward(self, batch: Batch):
        """ONE UNet call at ``batch.inputs['timestep']``: noise prediction ``[B, C, h, w]``."""
        x = batch.inputs
        ctx = self.encode_text(x["input_ids"], x["attention_mask"])
        out = self.unet(self.scheduler.scale_model_input(x["latents"], x["timestep"]), x["timestep"], encoder_hidden_states=ctx)
        return out.sample, {"encoder_hidden_states": ctx, "unet": out}

    def generate(self, batch: Batch, max_new_tokens: int = 8, **kw):
        raise UnsupportedError("diffusion models do not generate text; use sample(batch, steps=20, guidance_scale=...) for images")

    def sample(self, batch: Batch, steps: int = 20, guidance_scale: float = 1.0, eta: float = 0.0,
               progress: bool = True, return_tensor: bool = False):
        """Run the sampler -> ``list[PIL.Image]`` (``S x S``), or ``(images, x [B, 3, S, S] in [0, 1])``.

        Starts from ``batch``'s seeded noise, or for an image batch from its images noised to the
        first scheduled step ``<= batch timestep`` (img2img). Hooks from ``m.capture``/``m.edits``
        stay active: a UNet site fires once per step (``cache.steps[site]``), text sites once.
        With ``guidance_scale != 1`` the UNet batch is ``2B``, rows interleaved (uncond, cond)
        per sample, and the layouts seen by edits are built for it."""
        if int(steps) < 1:
            raise PromptError(f"steps must be >= 1, got {steps}")
        from tqdm.auto import tqdm

        batch = self._on_device(batch)
        x_in, B = batch.inputs, batch.inputs["input_ids"].shape[0]
        sched = copy.deepcopy(self.scheduler)
        sched.set_timesteps(int(steps), device=self.device)
        ts = sched.timesteps
        if "clean" in x_in:
            ts = ts[ts <= x_in["timestep"]]
            x = sched.add_noise(x_in["clean"], x_in["noise"], ts[:1].repeat(B)) if len(ts) else x_in["clean"]
        else:
            x = x_in["noise"] * sched.init_noise_sigma
        cfg = float(guidance_scale) != 1.0
        ids, mask, layouts = x_in["input_ids"], x_in["attention_mask"], batch.layouts
        if cfg:
            texts = [t for p in batch.text for t in ("", p)]
            ids, mask, text_layout = self._tokenize(texts)
            ids, mask = ids.to(self.device), mask.to(self.device)
            layouts = {"text": text_layout, "unet": batch.layouts["unet"].repeat(2)}
        params = inspect.signature(sched.step).parameters
        step_kw = {"eta": eta} if "eta" in params else {}
        if "generator" in params:
            step_kw["generator"] = torch.Generator(self.device).manual_seed(batch.meta.get("seed", 0) + 1)
        running = Batch(x_in, layouts, self.main_stream, batch.images, batch.text, batch.meta)
        with torch.no_grad(), self._running(running):
            ctx = self.encode_text(ids, mask)
            for t in tqdm(ts, disable=not progress, desc="sampling", leave=False):
                inp = sched.scale_model_input(x.repeat_interleave(2, 0) if cfg else x, t)
                pred = self.unet(inp, t, encoder_hidden_states=ctx).sample
                if cfg:
                    u, c = pred.view(B, 2, *pred.shape[1:]).unbind(1)
                    pred = u + float(guidance_scale) * (c - u)
                x = sched.step(pred, t, x, **step_kw).prev_sample
            img = self.decode(x)
        arr = (img.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        pils = [Image.fromarray(a) for a in arr]
        return (pils, img) if return_tensor else pils


def save_tiny(variant: str, out_dir) -> str:
    """Save ``tiny(variant)`` natively: ``diffusion`` -> ``StableDiffusionPipeline.save_pretrained``;
    ``diffusion-pixel`` -> component folders + ``vlinterp_diffusion.json``."""
    return DiffusionAdapter.tiny(variant).save(out_dir)


__all__ = ["DiffusionAdapter", "DiffusionModel", "save_tiny"]
