"""What a saliency method explains: targets resolved per family into one :class:`Targets`.

``target`` as users give it -> a one-row batch the method runs on, the stream holding the
image patches, the query positions whose attention rows are read, and ``select(logits)``
returning the explained scalars ``[rows, n_targets]``:

* LLaVA: ``None`` (greedy answer, generated first), an answer string or a list of token ids;
  the answer is teacher-forced; target ``k`` is answer token ``k``, predicted by the logits at
  position ``answer[k] - 1``. Stream ``lm``.
* ViT: ``None`` (top class), a class index or name, or a list of them. Stream ``vision``, query CLS.
* CLIP: ``None`` (top text for the image), a text index or text, or a list. Stream ``vision``,
  query CLS; SigLIP (no CLS, an attention-pooling head) queries the head's probe: ``pool`` is its
  site and each query is the virtual position ``T`` (one past the sequence) whose row methods
  append (see :func:`vlinterp.saliency.base.with_probe_row`).
* diffusion: ``None`` (every word of the prompt), a word or a list of words. Stream ``unet``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.errors import PromptError, UnsupportedError
from ..core.layout import TokenLayout
from ..core.types import Batch


@dataclass
class Targets:
    """``batch``: the batch the method runs on (one prompt row); ``stream``/``layout``: where the
    image patches live (the Result's layout); ``image_index``/``row``: the image in ``layout``;
    ``labels``: one per target; ``queries``: per target, the position whose attention row is read;
    ``spec``: a target value that resolves to the same targets again (used by MSEA);
    ``select(logits) -> [rows, n_targets]``; ``arrays``/``meta``: extra outputs a method adds;
    ``pool``: the site of an attention-pooling head whose probe is the explained position (SigLIP's
    MAP head) when the stream has no CLS: ``queries`` are then ``T`` (the probe's virtual row)."""

    batch: Batch
    stream: str
    layout: TokenLayout
    image_index: int
    row: int
    labels: list[str]
    queries: list[int]
    spec: object
    select: Callable[[torch.Tensor], torch.Tensor] | None = None
    arrays: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    pool: str | None = None

    @property
    def patches(self) -> torch.Tensor:
        """Positions of the image's patch tokens in ``stream`` (LongTensor ``[n_patches]``)."""
        return self.layout.image_positions(self.image_index)

    @property
    def n(self) -> int:
        return len(self.labels)


def _as_list(x) -> list:
    if isinstance(x, torch.Tensor):
        return x.flatten().tolist()
    return list(x) if isinstance(x, (list, tuple)) else [x]


def row_images(batch: Batch, image_index: int) -> tuple[int, list, int]:
    """``(row, images of that row, local index of image_index among them)`` in ``batch.layout``."""
    lay = batch.layout
    row = lay.image_row(image_index)
    idx = [i for i, g in enumerate(lay.images) if g.batch_row == row]
    return row, [batch.images[i] for i in idx], idx.index(image_index)


def prepare_like(adapter, batch: Batch, images: list, row: int = 0, answer=None) -> Batch:
    """A one-row batch like row ``row`` of ``batch`` with ``images`` instead (same prompt/texts)."""
    fam = adapter.kind
    if fam == "vlm":
        return adapter.prepare(images=images, text=batch.meta["formatted"][row], chat=False, answer=answer)
    if fam == "vit":
        return adapter.prepare(images=images)
    if fam == "clip":
        return adapter.prepare(images=images, text=list(batch.text))
    if fam == "diffusion":
        return adapter.prepare(images=images or None, text=[batch.text[row]], seed=batch.meta.get("seed", 0),
                               timestep=batch.meta.get("timestep"))
    raise UnsupportedError(f"no saliency targets for the {fam!r} family")


# ----------------------------------------------------------------------- LLaVA
def _special_ids(tok) -> set[int]:
    return {i for i in (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) if i is not None} | set(tok.all_special_ids)


def _greedy_answer(adapter, batch: Batch, max_new_tokens: int) -> list[int]:
    """Greedy answer ids up to the first special token; if that leaves nothing, the top
    non-special token at the last position (a one-token answer)."""
    tok = adapter.tokenizer
    special = _special_ids(tok)
    gen = adapter.generate(batch, max_new_tokens=max_new_tokens)
    ids = []
    for i in gen.new_tokens[0].tolist():
        if i in special:
            break
        ids.append(i)
    if not ids:
        logits = adapter.run(batch).logits[0, int(batch.layout.span("last", 0)[-1])].float()
        logits[list(special)] = -float("inf")
        ids = [int(logits.argmax())]
    return ids


def _teacher_force(adapter, images, formatted: str, answer) -> Batch:
    """Prompt + answer (string, or token ids) as one teacher-forced row; ids are kept exactly."""
    tok = adapter.tokenizer
    if isinstance(answer, str):
        return adapter.prepare(images=images, text=formatted, chat=False, answer=answer)
    ids = [int(i) for i in answer]
    if not ids:
        raise PromptError("target: empty list of answer token ids")
    text = tok.decode(ids, skip_special_tokens=False).strip() or tok.convert_ids_to_tokens(ids[0])
    b = adapter.prepare(images=images, text=formatted, chat=False, answer=text)
    pos = b.layout.span("answer", 0)
    if len(pos) != len(ids):
        raise PromptError(f"target token ids {ids} decode to {text!r}, which re-tokenizes to {len(pos)} tokens")
    b.inputs["input_ids"][0, pos] = torch.tensor(ids, dtype=b.inputs["input_ids"].dtype)
    return b


def resolve_llava(adapter, batch: Batch, target, image_index: int, max_new_tokens: int = 8) -> Targets:
    row, images, local = row_images(batch, image_index)
    answers = batch.meta.get("answers")
    if target is None and answers is not None and batch.layout.shape[0] == 1:
        tf = batch
    else:
        formatted = batch.meta["formatted"][row]
        if target is None:
            target = _greedy_answer(adapter, adapter.prepare(images=images, text=formatted, chat=False), max_new_tokens)
        elif not isinstance(target, (str, list, tuple, torch.Tensor)):
            raise PromptError(f"LLaVA target must be None, an answer string or a list of token ids, got {type(target).__name__}")
        tf = _teacher_force(adapter, images, formatted, target)
    lay = tf.layout
    pos = lay.span("answer", 0)
    ids = tf.inputs["input_ids"][0, pos]
    tok = adapter.tokenizer
    labels = [tok.decode([int(i)]).strip() or tok.convert_ids_to_tokens(int(i)) for i in ids]
    queries = (pos - 1).tolist()
    qt, it = torch.as_tensor(queries), ids.clone()

    def select(logits):
        return logits[:, qt.to(logits.device), it.to(logits.device)]

    answer = tok.decode(ids.tolist(), skip_special_tokens=True).strip()
    return Targets(tf, "lm", lay, local, 0, labels, queries, [int(i) for i in ids], select,
                   meta={"answer": answer, "answer_ids": [int(i) for i in ids], "answer_positions": pos.tolist()})


# ------------------------------------------------------------------- ViT, CLIP
def _single_image(adapter, batch: Batch, image_index: int) -> tuple[Batch, int]:
    if batch.layout.num_images == 1:
        batch.layout.image_row(image_index)  # validates
        return batch, image_index
    _, images, _ = row_images(batch, image_index)
    return prepare_like(adapter, batch, images), 0


def resolve_vit(adapter, batch: Batch, target, image_index: int, **_) -> Targets:
    b, i = _single_image(adapter, batch, image_index)
    names = adapter.class_names()
    if target is None:
        target = [int(adapter.run(b).logits[0].argmax())]
    classes = []
    for t in _as_list(target):
        if isinstance(t, str):
            if t not in names:
                raise PromptError(f"unknown class {t!r}; classes: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
            t = names.index(t)
        if not -len(names) <= int(t) < len(names):
            raise PromptError(f"class index {t} out of range (0..{len(names) - 1})")
        classes.append(int(t) % len(names))
    cls_pos = int(b.layout.span("cls", 0)[0]) if "cls" in b.layout.spans and len(b.layout.span("cls", 0)) else 0
    ct = torch.as_tensor(classes)
    return Targets(b, "vision", b.layout, i, 0, [names[c] for c in classes], [cls_pos] * len(classes), classes,
                   lambda logits: logits[:, ct.to(logits.device)], meta={"classes": classes})


def resolve_clip(adapter, batch: Batch, target, image_index: int, **_) -> Targets:
    if "pixel_values" not in batch.inputs or "input_ids" not in batch.inputs:
        raise PromptError("CLIP saliency needs a batch with both images and texts: prepare(images=[...], text=[...])")
    b, i = _single_image(adapter, batch, image_index)
    texts = list(b.text)
    if target is None:
        target = [int(adapter.run(b).logits[0].argmax())]
    idx = []
    for t in _as_list(target):
        if isinstance(t, str):
            if t not in texts:
                raise PromptError(f"text {t!r} is not one of the batch's texts {texts}")
            t = texts.index(t)
        if not 0 <= int(t) < len(texts):
            raise PromptError(f"text index {t} out of range: the batch has {len(texts)} text(s)")
        idx.append(int(t))
    lay = b.layouts["vision"]
    pool = getattr(adapter, "pool_site", None)
    if "cls" in lay.spans and len(lay.span("cls", 0)):
        query, pool = int(lay.span("cls", 0)[0]), None
    elif pool is not None:
        query = lay.shape[1]  # the pooling probe's virtual row
    else:
        raise UnsupportedError(f"{adapter.family}: the vision stream has neither a CLS token nor an attention-pooling head to explain")
    tt = torch.as_tensor(idx)
    return Targets(b, "vision", lay, i, 0, [texts[k] for k in idx], [query] * len(idx), idx,
                   lambda logits: logits[:, tt.to(logits.device)], pool=pool,
                   meta={"texts": idx, **({"sigmoid": True} if getattr(adapter, "sigmoid_scores", False) else {})})


# ------------------------------------------------------------------- diffusion
def resolve_diffusion(adapter, batch: Batch, target, image_index: int, **_) -> Targets:
    unet = batch.layouts["unet"]
    row = unet.image_row(image_index)
    text = batch.layouts["text"]
    present = {n[5:]: text.span(n, row) for n in text.spans if n.startswith("word:") and len(text.span(n, row))}
    if target is None:
        words = sorted(present, key=lambda w: int(present[w][0]))
    else:
        words = [str(w).lower() for w in _as_list(target)]
    for w in words:
        if w not in present:
            raise PromptError(f"word {w!r} is not in prompt {batch.text[row]!r}; its words: {', '.join(sorted(present))}")
    return Targets(batch, "unet", unet, image_index, row, words, [int(present[w][0]) for w in words], words,
                   meta={"word_positions": {w: present[w].tolist() for w in words}})


RESOLVERS = {"vlm": resolve_llava, "vit": resolve_vit, "clip": resolve_clip, "diffusion": resolve_diffusion}


def resolve(adapter, batch: Batch, target, image_index: int = 0, **kw) -> Targets:
    """Resolve ``target`` for ``adapter``'s family (see the module doc)."""
    if adapter.kind not in RESOLVERS:
        raise UnsupportedError(f"no saliency targets for {adapter.family!r} models")
    return RESOLVERS[adapter.kind](adapter, batch, target, int(image_index), **kw)
