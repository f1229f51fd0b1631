"""LLaVA adapter: transformers ``LlavaForConditionalGeneration`` (llava-1.5 layout) and
``LlavaNextForConditionalGeneration`` (any-resolution tiles + newline tokens) with their processors.

Streams: ``lm`` (the language-model sequence ``[B, T]``: text, image patches, specials,
padding), ``vision`` (the vision tower: one row per crop, CLS + patch grid) and
``projector`` (projector output: one row per crop, patch grid only).
"""
from __future__ import annotations

import json
import os

import torch

from ..core.attention import hf_self_attention
from ..core.errors import ImageTokenMismatchError, LoadError, PromptError
from ..core.hooks import Site
from ..core.images import load_image
from ..core.types import Batch, Generation
from .base import Adapter, block_sites
from .llava_layout import lm_layout, vision_layout

IMAGE_TOKEN = "<image>"


def _first_attr(obj, *paths):
    for p in paths:
        cur, ok = obj, True
        for part in p.split("."):
            if not hasattr(cur, part):
                ok = False
                break
            cur = getattr(cur, part)
        if ok:
            return p, cur
    raise LoadError(f"model has none of the expected submodules {paths}")


class LlavaAdapter(Adapter):
    family = "llava"
    kind = "vlm"
    main_stream = "lm"

    # ------------------------------------------------------------------ sites
    def build_sites(self) -> dict[str, Site]:
        m = self.model
        vt, vt_mod = _first_attr(m, "model.vision_tower", "vision_tower")
        proj, _ = _first_attr(m, "model.multi_modal_projector", "multi_modal_projector")
        lm, lm_mod = _first_attr(m, "model.language_model", "language_model.model", "language_model")
        head, _ = _first_attr(m, "lm_head", "language_model.lm_head")
        n_v = len(vt_mod.vision_model.encoder.layers if hasattr(vt_mod, "vision_model") else vt_mod.encoder.layers)
        venc = f"{vt}.vision_model.encoder.layers" if hasattr(vt_mod, "vision_model") else f"{vt}.encoder.layers"
        vemb = venc.replace("encoder.layers", "embeddings")
        sites = {"vision.embed": Site(vemb, "vision")}
        sites.update(block_sites("vision.blocks.", {"attn": venc + ".{i}.self_attn", "mlp": venc + ".{i}.mlp", "resid": venc + ".{i}"}, n_v, "vision"))
        sites["projector"] = Site(proj, "projector")
        sites["embed"] = Site(f"{lm}.embed_tokens", "lm")
        n = len(lm_mod.layers)
        sites.update(block_sites("blocks.", {"attn": lm + ".layers.{i}.self_attn", "mlp": lm + ".layers.{i}.mlp", "resid": lm + ".layers.{i}"}, n, "lm"))
        sites["norm"] = Site(f"{lm}.norm", "lm")
        sites["logits"] = Site(head, "lm")
        return sites

    @property
    def config(self):
        return self.model.config

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # ---------------------------------------------------------------- prepare
    def _format(self, text: str, n_images: int, chat: bool) -> str:
        if not chat:
            k = text.count(IMAGE_TOKEN)
            if k != n_images:
                what = "has no <image> placeholder" if k == 0 else f"has {k} <image> placeholder(s)"
                raise PromptError(f"prompt {text!r} {what} but {n_images} image(s) were given for it (or pass chat=True)")
            return text
        if IMAGE_TOKEN in text:
            raise PromptError(f"prompt {text!r} contains {IMAGE_TOKEN}: with chat=True placeholders are inserted for you; pass chat=False for a raw prompt")
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        return (IMAGE_TOKEN + "\n") * n_images + text

    def prepare(self, images=None, text=None, answer=None, chat: bool = True, **kw) -> Batch:
        """Build a batch.

        ``text``: a prompt or list of prompts (``B``). ``images``: one image per prompt, a list of
        images per prompt, or ``None`` (text-only). ``chat=True`` wraps each prompt in the
        processor's chat template with one placeholder per image; ``chat=False`` takes raw prompts
        that must hold exactly one ``<image>`` per image. ``answer``: optional answer string(s)
        appended for teacher forcing (span ``answer``; ``last`` then predicts its first token).
        Returns inputs ``input_ids``/``attention_mask`` ``[B, T]``, ``pixel_values`` and layouts
        ``lm``, ``vision``, ``projector``.
        """
        if text is None:
            raise PromptError("LLaVA needs a text prompt (text=...); for image-only features use the vision sites")
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
        try:
            enc = self.processor(images=flat or None, text=formatted, return_tensors="pt", padding=True)
        except ValueError as e:
            raise PromptError(f"the processor refused these inputs: {e}") from None
        ids, mask = enc["input_ids"], enc["attention_mask"]
        answers = None
        if answer is not None:
            answers = [answer] * len(prompts) if isinstance(answer, str) else list(answer)
            if len(answers) != len(prompts):
                raise PromptError(f"{len(answers)} answers for {len(prompts)} prompts")
            ids, mask, answers = self._append(ids, mask, answers)
        sizes = [(im.height, im.width) for im in flat]
        layout = lm_layout(self.config, self.processor, ids, mask, sizes, [len(a) for a in answers] if answers else None)
        inputs = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        inputs.update(input_ids=ids, attention_mask=mask)
        crops = self._crops_per_image(enc, sizes)
        layouts = {"lm": layout, "vision": vision_layout(self.config, self.processor, sizes, crops),
                   "projector": vision_layout(self.config, self.processor, sizes, crops, cls=False)}
        return Batch(inputs, layouts, "lm", images=flat, text=prompts, meta={"formatted": formatted, "answers": answers})

    def _append(self, ids, mask, answers):
        """Append answer tokens to each row and re-pad (on the tokenizer's padding side)."""
        tok = self.tokenizer
        rows, ans_ids = [], []
        for b, a in enumerate(answers):
            a_ids = tok(a if a.startswith(" ") or not a else " " + a, add_special_tokens=False)["input_ids"]
            if not a_ids:
                raise PromptError(f"answer {a!r} tokenizes to nothing")
            rows.append(torch.cat([ids[b][mask[b].bool()], torch.tensor(a_ids, dtype=ids.dtype)]))
            ans_ids.append(a_ids)
        T = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        new_ids = torch.full((len(rows), T), pad, dtype=ids.dtype)
        new_mask = torch.zeros((len(rows), T), dtype=mask.dtype)
        for b, r in enumerate(rows):
            sl = slice(T - len(r), T) if tok.padding_side == "left" else slice(0, len(r))
            new_ids[b, sl], new_mask[b, sl] = r, 1
        return new_ids, new_mask, ans_ids

    def _crops_per_image(self, enc, sizes) -> list[int]:
        if "image_sizes" in enc and self.config.model_type == "llava_next":
            from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

            return [int(image_size_to_num_patches(tuple(s), self.config.image_grid_pinpoints, self.config.vision_config.image_size)) for s in enc["image_sizes"].tolist()]
        return [1] * len(sizes)

    # ---------------------------------------------------------------- running
    def _forward(self, batch: Batch):
        out = self.model(**batch.inputs)
        return out.logits, out

    def _attention_probs(self, site, module, args, kwargs, output):
        return hf_self_attention(module, args, kwargs)

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
            return json.load(f).get("model_type") in ("llava", "llava_next")

    @classmethod
    def from_path(cls, path: str, device=None, dtype=None, attn_implementation: str | None = None, **kw) -> "LlavaAdapter":
        from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        klass = LlavaNextForConditionalGeneration if cfg.model_type == "llava_next" else LlavaForConditionalGeneration
        extra = {"dtype": dtype} if dtype is not None else {}
        if attn_implementation:
            extra["attn_implementation"] = attn_implementation
        model = klass.from_pretrained(path, local_files_only=True, **extra, **kw)
        proc = AutoProcessor.from_pretrained(path, local_files_only=True)
        if device is not None:
            model.to(device)
        return cls(model, proc, name=os.path.basename(os.path.normpath(path)))

    @classmethod
    def tiny(cls, variant: str = "llava", device=None, dtype=None, **kw) -> "LlavaAdapter":
        from .llava_tiny import build_tiny

        model, proc = build_tiny(variant, **kw)
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return cls(model, proc, name=f"tiny:{variant}")


def save_tiny(variant: str, out_dir: str, **kw) -> str:
    from .llava_tiny import save_tiny as _save

    return _save(variant, out_dir, **kw)
