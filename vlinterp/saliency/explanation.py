"""The whole job of ``vlinterp explain`` as one call, like captum's ``.attribute``.

>>> import vlinterp as vi
>>> ex = vi.explain("shapes-llava", "scene.png", "what color is the circle?", method="relevancy")
>>> ex.answer, ex.tokens, ex.probs          # 'red', ['red'], [0.998]
>>> ex.token_map(0).shape, ex.answer_map.shape   # [H, W] maps at the input image's size
>>> ex.result                               # the main method's Result; ex.views: [(name, Result)]
>>> vi.viz.overlay(ex.image, ex.answer_map)       # [H, W, 3] uint8
>>> vi.viz.write_explanation(ex, "out/")          # overlay.png, tokens/*.png, result.json, report.html

What is explained, per ``adapter.kind``:

* ``vlm``: the greedy answer to ``prompt`` (up to ``max_new_tokens``, ending at the first special
  token); one row per answer token, with its probability;
* ``vit``: the top class, or ``target`` (class name or index);
* ``clip``: every text of ``texts`` (default ``[prompt]``); the answer is the best-matching text;
* ``diffusion``: generates from ``prompt`` (from ``image`` when given) and explains ``word``.

The answer map is the mean of the answer's rows (vlm: every answer token; clip: the best text).
``compare`` adds views of other methods and ``per_layer`` one view per layer of the main method
(methods with a ``layers`` or ``layer`` option), for the report's method/layer selector.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import ConfigError, ImageError, PromptError, UnsupportedError, VlinterpWarning
from ..core.result import Result

DEFAULT_METHOD = {"vlm": "relevancy", "vit": "relevancy", "clip": "relevancy", "diffusion": "daam"}


@dataclass
class Explanation:
    """What :func:`explain` returns. ``image``: the RGB image the maps belong to (the input, or
    the generated one); ``views``: ``[(name, Result)]``, the main method's first; ``answer_rows``:
    the rows of the main Result that make the answer; ``info``: per kind (vlm: ``prompt``,
    ``answer_tokens``, ``answer_token_ids``, ``answer_probs``; vit: ``target``, ``class_index``,
    ``softmax``, ``sigmoid``, ``score`` (the score kind), ``value``; clip: ``texts``, ``logits``, ``probs``, ``probs_kind``; diffusion: ``prompt``, ``word``,
    ``seed``, ``steps``); ``source``: the image path given, if any; ``input_size``: ``(H, W)`` of the
    image as the user has it (before any downscaling on load); ``notes``: warnings issued."""

    model: str
    kind: str
    family: str
    method: str
    image: object
    answer: str
    answer_rows: list[int]
    views: list[tuple[str, Result]]
    info: dict = field(default_factory=dict)
    source: str | None = None
    input_size: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def result(self) -> Result:
        """The main method's Result: ``scores`` ``[n_targets, n_patches]``, ``targets``, layout, meta."""
        return self.views[0][1]

    @property
    def targets(self) -> list[str]:
        """One label per row: answer tokens (vlm), the class (vit), texts (clip), the word (diffusion)."""
        return list(self.result.targets)

    @property
    def tokens(self) -> list[str]:
        """The answer's tokens (vlm), else the targets."""
        return list(self.info.get("answer_tokens", self.targets))

    @property
    def probs(self) -> list[float] | None:
        """Each answer token's probability (vlm; clip: each text's), else ``None``."""
        return self.info.get("answer_probs", self.info.get("probs"))

    @property
    def layout(self):
        return self.result.layout

    def token_map(self, k: int = 0) -> np.ndarray:
        """``[H, W]`` float32 map of row ``k`` at the image size."""
        from ..metrics.faithfulness import result_map

        return result_map(self.result, k)

    @property
    def maps(self) -> list[np.ndarray]:
        """One ``[H, W]`` map per row."""
        return [self.token_map(k) for k in range(len(self.result.scores))]

    @property
    def answer_map(self) -> np.ndarray:
        """``[H, W]`` float32: the mean of the answer rows' maps."""
        return np.mean([self.token_map(k) for k in self.answer_rows], 0).astype(np.float32)

    def aligned_answer_map(self) -> np.ndarray:
        """:attr:`answer_map` resized to :attr:`input_size` (the user's image, when loading shrank it)."""
        hm = self.answer_map
        if self.input_size is None or hm.shape == tuple(self.input_size):
            return hm
        import cv2

        H, W = self.input_size
        return cv2.resize(hm, (W, H), interpolation=cv2.INTER_LINEAR).astype(np.float32)

    def to_json(self) -> dict:
        """The JSON record (``result.json`` without its ``files``): answer, per-row patch scores,
        the layout's grid(s) and tile boxes, the main Result's meta and the views."""
        res = self.result
        g = res.layout.to_dict()["images"][res.image_index]
        return {
            "model": self.model, "family": self.family, "image": self.source, "method": self.method,
            "answer": self.answer, **_jsonable(self.info),
            "targets": list(res.targets),
            "scores": np.asarray(res.scores, np.float32).round(6).tolist(),
            "answer_rows": list(self.answer_rows),
            "layout": {"image_size": g["size"], "grid": [t["grid"] for t in g["tiles"]], "tiles": g["tiles"],
                       "patch_order": "tile by tile, row-major (layout.image_positions)"},
            "meta": _jsonable(res.meta),
            "views": [{"name": label, "method": r.method, "targets": list(r.targets)} for label, r in self.views],
        }


@dataclass
class _Subject:
    batch: object
    answer: str
    calls: list[tuple[list[str], object]]  # one (labels, target) per attribute call; rows concatenated
    answer_rows: list[int]
    info: dict


# ---------------------------------------------------------------- per kind
def _vlm(m, img, prompt, max_new_tokens, **_) -> _Subject:
    import torch

    if img is None:
        raise ImageError("LLaVA-family models need an image")
    if not prompt:
        raise PromptError("LLaVA-family models need a prompt (the question to answer)")
    b = m.prepare(images=[img], text=[prompt])
    g = m.generate(b, max_new_tokens=max_new_tokens, keep_scores=True)
    tok = m.tokenizer
    special = set(tok.all_special_ids) | {i for i in (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) if i is not None}
    ids, probs = [], []
    for step, tid in enumerate(g.new_tokens[0].tolist()):
        if tid in special:  # the answer ends at the first special token (eos, pad, <image>...)
            break
        ids.append(tid)
        probs.append(float(torch.softmax(g.scores[step, 0].float(), -1)[tid]))
    if not ids:  # nothing before a special token: the top ordinary token at the first step
        p = torch.softmax(g.scores[0, 0].float(), -1)
        p[list(special)] = 0
        ids, probs = [int(p.argmax())], [float(p.max())]
    labels = [tok.decode([tid]).strip() or tok.convert_ids_to_tokens(tid) for tid in ids]
    answer = tok.decode(ids, skip_special_tokens=True).strip()
    return _Subject(b, answer, [(labels, ids)], list(range(len(ids))),
                    {"prompt": prompt, "answer_tokens": labels, "answer_token_ids": ids, "answer_probs": [round(x, 6) for x in probs]})


def _vit(m, img, target, **_) -> _Subject:
    import torch

    from ..metrics.faithfulness import class_index

    if img is None:
        raise ImageError("ViT models need an image")
    b = m.prepare(images=[img])
    logits = m.run(b).logits[0].float()
    names = m.class_names()
    k = int(logits.argmax()) if target is None else class_index(m, target)
    p = torch.softmax(logits, -1)[k].item()
    return _Subject(b, names[k], [([names[k]], k)], [0], {"target": names[k], "class_index": k, "softmax": round(p, 6),
                                                          "sigmoid": round(torch.sigmoid(logits[k]).item(), 6),
                                                          "score": getattr(m, "score_kind", "classifier"),
                                                          "value": round(float(logits[k]), 6)})


def _clip(m, img, prompt, texts, **_) -> _Subject:
    import torch

    if img is None:
        raise ImageError("CLIP models need an image")
    texts = list(texts or ([prompt] if prompt else []))
    if not texts:
        raise PromptError("CLIP models need texts (--text TEXT, repeated to compare several)")
    b = m.prepare(images=[img], text=texts)
    logits = m.run(b).logits[0].float()
    best = int(logits.argmax())
    sigmoid = bool(getattr(m, "sigmoid_scores", False))  # SigLIP: independent image-text match probabilities
    probs = (torch.sigmoid(logits) if sigmoid else torch.softmax(logits, -1)).tolist()
    return _Subject(b, texts[best], [(texts, list(range(len(texts))))], [best],
                    {"texts": texts, "logits": [round(float(x), 4) for x in logits], "probs": [round(p, 6) for p in probs],
                     "probs_kind": "sigmoid" if sigmoid else "softmax"})


def _diffusion(m, img, prompt, word, seed, **_) -> _Subject:
    if not prompt or not word:
        raise PromptError("diffusion models need a prompt (what to generate) and a word (--word, the word to explain)")
    b = m.prepare(images=[img] if img is not None else None, text=[prompt], seed=seed)
    return _Subject(b, word, [([word], word)], [0], {"prompt": prompt, "word": word, "seed": seed})


SUBJECTS = {"vlm": _vlm, "vit": _vit, "clip": _clip, "diffusion": _diffusion}


# ------------------------------------------------------------------- helpers
def _attribute(meth, subject: _Subject, name: str) -> Result:
    """Run every call of ``subject`` and stack the rows into one Result."""
    results, labels = [], []
    for lab, target in subject.calls:
        r = meth.attribute(subject.batch, target=target)
        results.append(r)
        labels.extend(lab if len(lab) == len(r.scores) else list(r.targets))
    first = results[0]
    if len(results) == 1:
        arrays = dict(first.arrays)
    else:  # per-row arrays (scores, MSEA's heatmap...) are stacked; others kept from the first call
        arrays = {k: np.concatenate([np.asarray(r.arrays[k]) for r in results])
                  if all(k in r.arrays and np.ndim(r.arrays[k]) >= 1 and len(r.arrays[k]) == len(r.scores) for r in results)
                  else v for k, v in first.arrays.items()}
    return Result(first.method or name, arrays, first.layout, labels, first.image_index, dict(first.meta))


def layer_options(name: str, layers) -> dict | None:
    """``{"layers": [...]}`` or ``{"layer": l}`` (one layer) as method ``name`` takes them; ``{}``
    for ``layers=None``; ``None`` when the method takes neither (or one layer only and got more)."""
    from . import takes

    if layers is None:
        return {}
    if takes(name, "layers"):
        return {"layers": [int(x) for x in layers]}
    if takes(name, "layer") and len(layers) == 1:
        return {"layer": int(layers[0])}
    return None


def _shared(name: str, options: dict) -> dict:
    """The options of ``options`` that method ``name`` takes."""
    from . import options as method_options

    known = method_options(name)
    return {k: v for k, v in options.items() if k in known}


def _image_under(subject_image, res: Result):
    """The image under the overlays: the input, or (diffusion without one) the generated image."""
    from ..core.images import load_image

    if subject_image is not None:
        return subject_image
    for key in ("image", "generated"):
        v = res.arrays.get(key) if key in res.arrays else res.meta.get(key)
        if v is not None:
            return load_image(v)
    H, W = res.layout.images[res.image_index].size
    return load_image(np.zeros((H, W, 3), np.uint8))


def _note(notes: list, msg: str) -> None:
    notes.append(msg)
    warnings.warn(msg, VlinterpWarning, stacklevel=3)


def _jsonable(d: dict) -> dict:
    import json

    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
            out[k] = v
        except (TypeError, ValueError):
            pass
    return out


# ----------------------------------------------------------------- the call
def explain(model, image=None, prompt: str | None = None, method: str | None = None, layers=None, *, target=None,
            texts=None, word: str | None = None, compare=(), per_layer: bool = False, max_new_tokens: int = 12,
            seed: int = 0, steps: int | None = None, progress: bool | None = False, loader=None,
            **options) -> Explanation:
    """Answer, then explain the answer with saliency ``method`` (default: relevancy; daam for
    diffusion). ``model``: an adapter or a name for ``loader`` (``vi.explain`` passes ``vi.load``, which
    knows organism names; default :func:`vlinterp.adapters.registry.load`: tiny names and paths); ``image``: a path, PIL image or
    array (optional for diffusion); ``layers``: the main method's layers (``layers=``, or ``layer=``
    for one-layer methods); ``options``: the main method's options (see ``saliency.options(name)``);
    ``steps``: diffusion sampler steps for every method that takes ``steps``; ``progress``: tqdm
    bars (``None``: only on a terminal). See the module doc for ``target``/``texts``/``word``."""
    from tqdm.auto import tqdm

    from . import config, create, get
    from ..adapters.registry import load as registry_load
    from ..core.images import fit_note, load_image, original_size

    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    compare = [c for c in ([compare] if isinstance(compare, str) else list(compare or [])) if c]
    for name in ([method] if method else []) + compare:
        get(name)  # unknown names fail before any model load
    if method:  # and so do the main method's options, when it is known
        lo = layer_options(method, layers)
        config(method, **options, **(lo or {}))
    img, notes = None, []
    source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
    if image is not None:
        img = load_image(image, name="IMAGE" if source else "image")
    m = (loader or registry_load)(model) if isinstance(model, str) else model
    if m.kind not in SUBJECTS:
        raise UnsupportedError(f"explain does not support {m.family} models")
    main = method or DEFAULT_METHOD.get(m.kind, "relevancy")
    lo = layer_options(main, layers)
    if lo is None:
        raise ConfigError(f"layers: method {main!r} takes no list of layers" + (" (give one layer)" if layers and len(layers) > 1 else ""))
    sampler = {"steps": int(steps)} if steps is not None and m.kind == "diffusion" else {}
    subject = SUBJECTS[m.kind](m, img, prompt=prompt, target=target, texts=texts, word=word, seed=seed, max_new_tokens=max_new_tokens)
    plan = [(main, main, {**_shared(main, sampler), **options, **lo})]
    for name in compare:
        if name != main:
            plan.append((name, name, _shared(name, {**sampler, **options})))
    if per_layer:
        try:
            n = m.num_layers()
        except Exception:  # noqa: BLE001 - kinds without blocks in the main stream
            n = 0
        if n and layer_options(main, [0]) is None:
            _note(notes, f"{main} has no layer option; no per-layer views")
            n = 0
        for l in range(n):
            plan.append((f"{main} / layer {l}", main, {**plan[0][2], **layer_options(main, [l])}))
    views = []
    for label, name, opts in tqdm(plan, desc="saliency", unit="view", disable=None if progress is None else not progress, leave=False):
        try:
            meth = create(name, m, **opts)
        except ConfigError as e:
            if label == main:
                raise
            _note(notes, f"no view {label!r} ({e})")
            continue
        views.append((label, _attribute(meth, subject, name)))
    res = views[0][1]
    if res.layout is None or res.layout.num_images <= res.image_index:
        raise UnsupportedError(f"{main} gives no image map (it scores {res.meta.get('kind', 'something else')}); explain needs one")
    if m.kind == "diffusion":
        subject.info["steps"] = res.meta.get("options", {}).get("steps", steps)
    under = _image_under(img, res)
    if img is not None and res.layout is not None:
        note = fit_note(img, res.layout, res.image_index, name=f"IMAGE {source!r}" if source else "image", source=source)
        if note:
            _note(notes, note + ("; the maps cover only that part" if "sees only" in note else ""))
    size = original_size(source or under, under)
    return Explanation(model if isinstance(model, str) else m.name, m.kind, m.family, main, under, subject.answer,
                       subject.answer_rows, views, subject.info, source, size, notes)


__all__ = ["explain", "Explanation", "DEFAULT_METHOD", "layer_options", "SUBJECTS"]
