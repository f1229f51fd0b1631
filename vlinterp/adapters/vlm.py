"""The generic VLM adapter: every image+text -> text family behind one class, driven by its
declarative :class:`~vlinterp.adapters.families.Family` entry (LLaVA, LLaVA-NeXT, Qwen2-VL,
Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, Gemma 3, PaliGemma, InternVL, SmolVLM / Idefics3).

Streams: ``lm`` (the language-model sequence ``[B, T]``: text, image tokens, specials, padding),
``vision`` (the vision tower's sequences: one row per crop the tower sees, with CLS for CLIP and
InternViT towers, ``images[k].source`` naming the prompt image a row comes from; one packed row of
every image's patches for Qwen, in the order the blocks see them) and ``projector`` (the
projector / merger output).

Sites (uniform over families): ``vision.embed``, ``vision.blocks.{i}.{attn,mlp,resid}``,
``projector`` (Qwen: the patch merger), ``embed`` (the token embedding: at image positions the
placeholder's embedding), ``inputs_embeds`` (what the first decoder layer receives, image
features included: a pre-hook on decoder layer 0), ``blocks.{i}.{attn,mlp,resid}``, ``norm``,
``logits``, plus family extras (Qwen3-VL: ``deepstack.{k}``).

Attention (``attention(batch, layers, stream)``, recomputed from each layer's inputs whatever kernel
runs): ``lm`` ``[B, H, T, T]``; ``vision`` ``[n_crops, H, t, t]`` for CLIP towers, and for a packed
tower (Qwen) one row ``[1, H, N, N]`` over all patches of the batch in block order, each image's
(Qwen2.5-VL: each window's) probabilities on the diagonal and zeros between them. ``queries=``
keeps only those query rows (``lm``: ``[B, H, nq, T]``, only those queries projected).

The public surface methods use instead of reaching into a model class: :attr:`lm` (the text
model), :attr:`lm_layers`, :attr:`lm_norm`, :attr:`lm_head`, :attr:`text_embeddings`,
:attr:`vision_blocks`, :attr:`image_token_id`, :meth:`position_ids`, :attr:`text_config`,
:attr:`tokenizer`, :attr:`lm_resumable`, :attr:`spec` (the family entry).
"""
from __future__ import annotations

import json
import os

import torch

from ..core.attention import hf_self_attention, varlen_qkv_attention
from ..core.errors import ImageTokenMismatchError, LoadError, PromptError
from ..core.hooks import Site
from ..core.images import load_image
from ..core.types import Batch, Generation
from . import families
from .base import Adapter, block_sites
from .vlm_layout import lm_layout

# the vision attention flavours a family entry names
VISION_ATTENTION = {"hf": hf_self_attention, "varlen": varlen_qkv_attention}


class VlmAdapter(Adapter):
    family = "vlm"  # replaced per instance by the family entry's name
    kind = "vlm"
    main_stream = "lm"

    def __init__(self, model: torch.nn.Module, processor=None, name: str = ""):
        spec = families.for_model_type(getattr(model.config, "model_type", ""))
        if spec is None:
            raise LoadError(f"no VLM family loads model_type {model.config.model_type!r}; known: "
                            f"{', '.join(t for f in families.all_families() for t in f.model_types)}")
        self.spec = spec
        self.family = spec.name
        super().__init__(model, processor, name)
        pid = spec.processor_image_token_id(processor) if processor is not None else None
        if pid is not None and int(pid) != self.image_token_id:
            raise LoadError(f"the processor marks images with token id {pid} but the model expects {self.image_token_id}")

    # ------------------------------------------------------------------ sites
    def _path(self, candidates: tuple[str, ...], what: str) -> str:
        mods = self._modules()
        for p in candidates:
            if p.removeprefix("pre:") in mods:
                return p
        raise LoadError(f"{self.family}: the model has none of the expected {what} modules {candidates}")

    def _modules(self) -> dict:
        if getattr(self, "_mods", None) is None:
            self._mods = dict(self.model.named_modules())
        return self._mods

    def build_sites(self) -> dict[str, Site]:
        s, packed = self.spec, self.spec.vision_packed
        vemb = self._path(s.vision_embed, "vision embedding")
        vblocks = self._path(s.vision_blocks, "vision block list")
        lm = self._path(s.lm, "language model")
        mods = self._modules()
        sites = {"vision.embed": Site(vemb.removeprefix("pre:"), "vision", pre=vemb.startswith("pre:"), packed=packed)}
        fmt = {"attn": f"{vblocks}.{{i}}.{s.vision_attn}", "mlp": f"{vblocks}.{{i}}.{s.vision_mlp}", "resid": f"{vblocks}.{{i}}"}
        for name, site in block_sites("vision.blocks.", fmt, len(mods[vblocks]), "vision").items():
            sites[name] = Site(site.module, site.stream, site.layer, packed=packed)
        sites["projector"] = Site(self._path(s.projector, "projector"), "projector", packed=packed)
        if s.extra_sites:
            sites.update(s.extra_sites(self))
        layers = f"{lm}.{s.lm_layers}"
        sites["embed"] = Site(f"{lm}.{s.lm_embed}", "lm")
        sites["inputs_embeds"] = Site(f"{layers}.0", "lm", pre=True)
        fmt = {"attn": f"{layers}.{{i}}.{s.lm_attn}", "mlp": f"{layers}.{{i}}.{s.lm_mlp}", "resid": f"{layers}.{{i}}"}
        sites.update(block_sites("blocks.", fmt, len(mods[layers]), "lm"))
        sites["norm"] = Site(f"{lm}.{s.lm_norm}", "lm")
        sites["logits"] = Site(self._path(s.head, "LM head"), "lm")
        self._mods = None  # the table is built: drop the module map (the model may still be moved)
        return sites

    # ---------------------------------------------------------- public surface
    @property
    def config(self):
        return self.model.config

    @property
    def text_config(self):
        """The language model's config (``hidden_size``, ``vocab_size``, ``num_hidden_layers``...)."""
        c = self.model.config
        return c.get_text_config() if hasattr(c, "get_text_config") else getattr(c, "text_config", c)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_token_id(self) -> int:
        """The token id the processor expands into one position per image feature."""
        return int(self.spec.image_token_id(self.model.config))

    def _parent(self, site: str) -> torch.nn.Module:
        """The module holding ``site``'s module (the text model of ``embed``, the layer list of a block)."""
        return self.model.get_submodule(self.site_table[site].module.rsplit(".", 1)[0])

    @property
    def lm(self) -> torch.nn.Module:
        """The text model (decoder layers, token embedding, final norm)."""
        return self._parent("embed")

    @property
    def lm_layers(self) -> torch.nn.ModuleList:
        """The decoder layers (``blocks.{i}.resid`` modules) as the model's own ``ModuleList``."""
        return self._parent("blocks.0.resid")

    @property
    def vision_blocks(self) -> torch.nn.ModuleList:
        return self._parent("vision.blocks.0.resid")

    @property
    def lm_norm(self) -> torch.nn.Module:
        return self._session.module("norm")

    @property
    def lm_head(self) -> torch.nn.Module:
        return self._session.module("logits")

    @property
    def text_embeddings(self) -> torch.nn.Module:
        """The token embedding (``embed`` site): ``text_embeddings(ids) -> [B, T, D]``."""
        return self._session.module("embed")

    @property
    def lm_resumable(self) -> bool:
        """Whether the LM can resume from a cached decoder-layer input (see ``Family.lm_resumable``)."""
        return self.spec.lm_resumable

    def position_ids(self, batch: Batch) -> torch.Tensor:
        """The position ids the model's own forward uses for ``batch``: ``[3, B, T]`` (temporal,
        row, column) for M-RoPE families (Qwen: the model's ``get_rope_index`` on the processor's
        ``mm_token_type_ids`` and ``image_grid_thw``), else ``[B, T]`` (``0..T-1`` on every row, as
        transformers counts when no ids are passed). Methods that drop tokens (pruning) or move
        them keep each token's original ids by indexing these along the last dimension."""
        if self.spec.position_ids is not None:
            return self.spec.position_ids(self, batch)
        ids = batch.inputs["input_ids"]
        return torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)

    # ---------------------------------------------------------------- prepare
    def _format(self, text: str, n_images: int, chat: bool) -> str:
        tok = self.spec.image_token
        if not chat:
            k = text.count(tok)
            if k != n_images:
                what = f"has no {tok} placeholder" if k == 0 else f"has {k} {tok} placeholder(s)"
                raise PromptError(f"prompt {text!r} {what} but {n_images} image(s) were given for it (or pass chat=True)")
            return text
        if tok in text:
            raise PromptError(f"prompt {text!r} contains {tok}: with chat=True placeholders are inserted for you; pass chat=False for a raw prompt")
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        return (self.spec.image_placeholder or tok + "\n") * n_images + text

    def prepare(self, images=None, text=None, answer=None, chat: bool = True, processor_kwargs: dict | None = None, **kw) -> Batch:
        """Build a batch.

        ``text``: a prompt or list of prompts (``B``). ``images``: one image per prompt, a list of
        images per prompt, or ``None`` (text-only). ``chat=True`` wraps each prompt in the
        processor's chat template with one placeholder per image; ``chat=False`` takes raw prompts
        that must hold exactly one image placeholder (the family's ``image_token``: ``<image>``,
        Qwen ``<|image_pad|>``, Gemma 3 ``<start_of_image>``, InternVL ``<IMG_CONTEXT>``) per image.
        Families whose processor tells multi-image prompts apart (``nest_images``) get one list of
        images per prompt. ``answer``: optional answer string(s) appended for
        teacher forcing (span ``answer``; ``last`` then predicts its first token).
        ``processor_kwargs``: keyword arguments for the processor call (Gemma 3
        ``{"do_pan_and_scan": True}``, InternVL ``{"max_patches": 6}``); layouts follow them.
        Returns the processor's inputs (``input_ids``/``attention_mask`` ``[B, T]``, pixels...) and
        layouts ``lm``, ``vision``, ``projector``.
        """
        if text is None:
            raise PromptError(f"{self.family} needs a text prompt (text=...); for image-only features use the vision sites")
        prompts = [text] if isinstance(text, str) else list(text)
        if images is None:
            per = [[] for _ in prompts]
        else:
            imgs = images if isinstance(images, (list, tuple)) else [images]
            if len(prompts) == 1 and len(imgs) > 1 and not any(isinstance(i, (list, tuple)) for i in imgs):
                per = [list(imgs)]
            elif len(imgs) != len(prompts):
                raise ImageTokenMismatchError(f"{len(imgs)} image entries for {len(prompts)} prompts: give one image (or list of images, or None) per prompt")
            else:
                per = [[] if i is None else list(i) if isinstance(i, (list, tuple)) else [i] for i in imgs]
        per = [[load_image(x, name=f"image {k}") for x in row] for k, row in enumerate(per)]
        formatted = [self._format(t, len(row), chat) for t, row in zip(prompts, per)]
        flat = [im for row in per for im in row]
        call = dict(processor_kwargs or {})
        given = (per if self.spec.nest_images else flat) if flat else None
        try:
            enc = self.processor(images=given, text=formatted, return_tensors="pt", padding=True, **call)
        except ValueError as e:
            raise PromptError(f"the processor refused these inputs: {e}") from None
        enc = ProcessorOutputs({k: v for k, v in enc.items() if k not in self.spec.drop_inputs}, call)
        answers = None
        if answer is not None:
            answers = [answer] * len(prompts) if isinstance(answer, str) else list(answer)
            if len(answers) != len(prompts):
                raise PromptError(f"{len(answers)} answers for {len(prompts)} prompts")
            enc, answers = self._append(enc, answers)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        sizes = [(im.height, im.width) for im in flat]
        tok = self.tokenizer
        specials = (set(getattr(tok, "all_special_ids", [])) | set(self.spec.special_ids(self.config))
                    | {int(i) for i in self.spec.processor_special_ids(self.processor)})
        runs = [self.spec.image_run(self, enc, k, s) for k, s in enumerate(sizes)]
        layout = lm_layout(ids, mask, self.image_token_id, specials, runs, sizes, [len(a) for a in answers] if answers else None)
        layouts = {"lm": layout, **self.spec.vision_layouts(self, enc, sizes)}
        image_inputs = tuple(k for k in self.spec.image_inputs if k in enc)
        return Batch(dict(enc), layouts, "lm", images=flat, text=prompts,
                     meta={"formatted": formatted, "answers": answers, "image_inputs": image_inputs,
                           "processor_kwargs": call})

    def _append(self, enc: dict, answers: list[str]):
        """Append answer tokens to each row and re-pad (on the tokenizer's padding side); other
        per-token inputs (``mm_token_type_ids``...) follow, 0 (text) at the answer unless the family
        says otherwise (``answer_token_types``: PaliGemma's ``token_type_ids`` 1, the suffix)."""
        tok = self.tokenizer
        ids, mask = enc["input_ids"], enc["attention_mask"]
        per_token = [k for k, v in enc.items() if k not in ("input_ids", "attention_mask") and isinstance(v, torch.Tensor) and v.shape == ids.shape]
        rows, ans_ids = [], []
        fill = self.spec.answer_token_types
        for b, a in enumerate(answers):
            a_ids = tok(a if a.startswith(" ") or not a else " " + a, add_special_tokens=False)["input_ids"]
            if not a_ids:
                raise PromptError(f"answer {a!r} tokenizes to nothing")
            keep = mask[b].bool()
            rows.append({"input_ids": torch.cat([ids[b][keep], torch.tensor(a_ids, dtype=ids.dtype)]),
                         **{k: torch.cat([enc[k][b][keep], enc[k].new_full((len(a_ids),), fill.get(k, 0))]) for k in per_token}})
            ans_ids.append(a_ids)
        T = max(len(r["input_ids"]) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        out = ProcessorOutputs(enc, getattr(enc, "call_kwargs", {}))
        out["input_ids"] = torch.full((len(rows), T), pad, dtype=ids.dtype)
        out["attention_mask"] = torch.zeros((len(rows), T), dtype=mask.dtype)
        for k in per_token:
            out[k] = enc[k].new_zeros((len(rows), T))
        for b, r in enumerate(rows):
            n = len(r["input_ids"])
            sl = slice(T - n, T) if tok.padding_side == "left" else slice(0, n)
            out["attention_mask"][b, sl] = 1
            for k, v in r.items():
                out[k][b, sl] = v
        return out, ans_ids

    # ---------------------------------------------------------------- running
    def _forward(self, batch: Batch):
        out = self.model(**batch.inputs)
        return out.logits, out

    def _attention_probs(self, site, module, args, kwargs, output, queries=None):
        if self.site_table[site].stream == "vision":
            p = VISION_ATTENTION[self.spec.vision_attention](module, args, kwargs)
            if queries is not None:
                T = p.shape[-2]
                p = p.index_select(-2, torch.as_tensor([int(x) % T for x in queries], device=p.device))
            return p
        return hf_self_attention(module, args, kwargs, queries=queries)

    def generate(self, batch: Batch, max_new_tokens: int = 8, keep_scores: bool = False, **kw) -> Generation:
        """Greedy (default) generation. Hooks and edits active around the call apply at every
        step; decode steps see tensors with ``T=1`` and the prompt's layout."""
        batch = self._on_device(batch)
        kw.setdefault("do_sample", False)
        tok = self.tokenizer
        with torch.no_grad(), self._running(batch):
            out = self.model.generate(**batch.inputs, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                      return_dict_in_generate=True, output_scores=keep_scores, **kw)
        seq = out.sequences
        new = seq[:, batch.inputs["input_ids"].shape[1]:]
        texts = [tok.decode(r, skip_special_tokens=True).strip() for r in new]
        scores = torch.stack(out.scores) if keep_scores and out.scores else None
        return Generation(seq, new, texts, scores)

    def token_id(self, word: str) -> int:
        """Id of the single token ``word`` (with a leading space where the tokenizer uses one)."""
        tok = self.tokenizer
        for cand in (" " + word, word):
            ids = tok(cand, add_special_tokens=False)["input_ids"]
            if len(ids) == 1 and ids[0] != tok.unk_token_id:
                return ids[0]
        raise PromptError(f"{word!r} is not a single token in this model's vocabulary")

    # ---------------------------------------------------------------- loading
    @classmethod
    def can_load(cls, path: str) -> bool:
        cfg = os.path.join(path, "config.json")
        if not os.path.isfile(cfg):
            return False
        with open(cfg) as f:
            return families.for_model_type(json.load(f).get("model_type", "")) is not None

    @classmethod
    def from_path(cls, path: str, device=None, dtype=None, attn_implementation: str | None = None, **kw) -> "VlmAdapter":
        """Load a local checkpoint directory with its family's transformers class and
        ``AutoProcessor`` (``from_pretrained``, local files only). ``dtype``: see
        :func:`~vlinterp.adapters.dtypes.resolve_dtype` (``"auto"``/``None``: the checkpoint's, fp16 -> bf16 on a CPU)."""
        from transformers import AutoConfig, AutoProcessor

        from .dtypes import resolve_dtype

        dtype = resolve_dtype(dtype, path, device)  # "auto": the checkpoint's, never fp16 on a CPU
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        spec = families.for_model_type(cfg.model_type)
        if spec is None:
            raise LoadError(f"{path!r}: model_type {cfg.model_type!r} is not a known VLM family")
        klass = families.model_class(spec, cfg.model_type)
        extra = {"dtype": dtype} if dtype is not None else {}
        if attn_implementation:
            extra["attn_implementation"] = attn_implementation
        model = klass.from_pretrained(path, local_files_only=True, **extra, **kw)
        proc = AutoProcessor.from_pretrained(path, local_files_only=True)
        if device is not None:
            model.to(device)
        return cls(model, proc, name=os.path.basename(os.path.normpath(path)))

    @classmethod
    def tiny(cls, variant: str = "llava", device=None, dtype=None, **kw) -> "VlmAdapter":
        """A seeded random tiny model of the real class (``tiny:<variant>``)."""
        spec = families.for_tiny(variant)
        if spec is None:
            raise LoadError(f"unknown tiny VLM {variant!r}; known: {', '.join(v for f in families.all_families() for v in f.tiny)}")
        dtype = None if isinstance(dtype, str) and dtype == "auto" else dtype
        model, proc = spec.build_tiny(variant, **kw)
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return cls(model, proc, name=f"tiny:{variant}")


class ProcessorOutputs(dict):
    """The processor's outputs (the model's inputs) and ``call_kwargs``, the keyword arguments the
    processor was called with, which layouts read (:func:`~vlinterp.adapters.vlm_layout.image_settings`)."""

    def __init__(self, data: dict, call_kwargs: dict | None = None):
        super().__init__(data)
        self.call_kwargs = dict(call_kwargs or {})


__all__ = ["VlmAdapter", "VISION_ATTENTION", "ProcessorOutputs"]
