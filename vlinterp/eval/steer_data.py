"""What ``steer eval`` evaluates on: the items of one or more ``--dataset`` specs, in the order
:func:`vlinterp.eval.steer.score` scores them, with the vocabularies CHAIR counts their captions with.

    data = eval_data(["pope:coco_pope_random.json:val2014", "coco:instances_val2014.json:val2014:kind=caption"])
    row = steer.score(data.items, steer.run(method, adapter, data.items), data.vocabularies)

Per dataset (see :mod:`vlinterp.eval.datasets` for the spec grammar):

* ``shapes`` (the default data): today's native tasks, :func:`vlinterp.eval.steer.tasks`: POPE
  (``n`` per negative type, default 256) and colour / count questions of the ``test`` split drawn
  with ``seed`` (default 11), then ``n_captions`` (default 64) captions of the ``chair`` split.
  ``shapes:SPLIT[:N[:SEED]]``: the same tasks on that split (``N`` scenes, else ``--n``), and CHAIR on
  captions of the same scenes (``n_captions`` of them; default all).
* a POPE file: its questions, scored as one group named by the file's negative type (``random`` /
  ``popular`` / ``adversarial`` from its name; ``pope`` when the name does not say).
* COCO (``coco:`` / ``chair:``): its POPE-style questions of each negative type (the POPE sampler
  on the instances) and CHAIR on captions of its images (the ``caption`` kind with a captions file,
  else its scenes), the ground truth its instances (and reference captions), the vocabulary
  CHAIR's COCO synonym list when every category is a COCO object, else the dataset's own categories
  (:func:`vlinterp.eval.chair_vocab.dataset_vocabulary`).
* JSON lines / Hugging Face: the POPE, colour, count and caption subsets they hold (else every
  record): yes/no questions, questions with candidates, and images with objects to caption (the
  vocabulary from the objects read and their ``supercategory`` attributes).

The spec's own ``kind=K`` reads only that kind (``coco:...:kind=caption``: CHAIR only). ``n`` /
``seed`` take ``n`` items of each kind (``seed``: a seeded draw; unset: the first ``n``). POPE
groups that two datasets share get the dataset's name in front (``coco_pope_random:random``).
Items: yes/no questions (``meta["neg_type"]`` their group), other questions, then captions
(``meta["chair_group"]`` their CHAIR row), each group in dataset order.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ..core.errors import UsageError
from ..core.items import Item
from . import shapes
from .chair_vocab import Vocabulary, dataset_vocabulary, shapes_vocabulary, synonyms_vocabulary

DEFAULT_N, DEFAULT_SEED, DEFAULT_CAPTIONS = 256, 11, 64
POPE_KINDS = ("pope-random", "pope-popular", "pope-adversarial")
QUESTION_KINDS = (*POPE_KINDS, "colour", "count")
YES_NO = ("yes", "no")
CHAIR = "chair"
CAPTION_PROMPT = "describe the image."


@dataclass
class EvalData:
    """``items``: in scoring order (see the module doc); ``vocabularies``: CHAIR row -> vocabulary;
    ``sources``: one line per dataset read; ``native``: the default shapes tasks (today's table);
    ``notes``: records left out, one line each."""

    items: list = field(default_factory=list)
    vocabularies: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)
    native: bool = False
    notes: list = field(default_factory=list)

    def describe(self) -> str:
        return "; ".join(self.sources)


@dataclass
class _Part:
    label: str                                   # the dataset's short name (for clashing group names)
    questions: list = field(default_factory=list)
    captions: list = field(default_factory=list)
    vocabulary: Vocabulary | None = None
    source: str = ""


def _label(ds_or_path) -> str:
    path = getattr(ds_or_path, "path", None) or str(ds_or_path)
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or str(ds_or_path)


def _shapes(ds, spec: str, n, seed, n_captions) -> _Part:
    from .datasets import parse_dataset_spec
    from .steer import tasks

    c = ds.config
    if c.n is not None and n is not None:
        raise UsageError(f"dataset {spec!r} names its number of scenes ({c.n}); drop --n (or N from the spec)")
    scenes = c.n or n or DEFAULT_N
    sseed = c.seed if c.seed is not None else (seed if seed is not None else DEFAULT_SEED)
    items = tasks(scenes, sseed, 0, c.split)
    if "split" not in parse_dataset_spec(spec)[1]:  # plain "shapes": captions of the chair split, as always
        k = DEFAULT_CAPTIONS if n_captions is None else n_captions
        caps = shapes.captions("chair", k, sseed) if k else []
    else:
        k = scenes if n_captions is None else min(n_captions, scenes)
        caps = shapes.captions(c.split, k, sseed) if k else []
    return _Part(spec, items, caps, shapes_vocabulary(), f"shapes:{c.split}:{scenes}:{sseed}")


def _kinds(ds) -> list[str]:
    from .datasets.pick import offers
    from .datasets.pope import PopeDataset

    own = getattr(ds.config, "kind", None)
    if own:
        return [ds.check_kind(own)]
    if isinstance(ds, PopeDataset):
        return ["presence"]
    kinds = [k for k in QUESTION_KINDS if offers(ds, k)]
    if not any(k in kinds for k in POPE_KINDS) and offers(ds, "presence"):
        kinds.insert(0, "presence")
    kinds += ["caption"] if offers(ds, "caption") else ["scene"] if offers(ds, "scene") else []
    return kinds or [ds.check_kind(None)]


def _categories(ds, captions: list) -> list[tuple[str, str | None]]:
    """The dataset's ``(category, supercategory)`` list: a COCO file's categories (all of them, so
    a caption naming one that no read image holds is a hallucination), else the caption items' objects."""
    coco = ds if hasattr(ds, "categories") else getattr(ds, "coco", None)
    if coco is not None:
        return [(str(c["name"]), c.get("supercategory")) for c in coco.categories.values()]
    seen: dict = {}
    for it in captions:
        for o in it.objects:
            seen.setdefault(o.name, o.attrs.get("supercategory") if isinstance(o.attrs, dict) else None)
    return list(seen.items())


def _dataset(ds, n, seed, n_captions) -> _Part:
    """The questions and caption items of one opened dataset (any format but the native shapes tasks)."""
    from .datasets.pope import PopeDataset
    from .datasets.shapes import ShapesDataset

    part = _Part(_label(ds), source=ds.describe())
    default_group = (ds.neg_type or "pope") if isinstance(ds, PopeDataset) else "presence"
    left = 0
    for kind in _kinds(ds):
        for it in ds.items(kind, n, seed):
            cand = it.meta.get("candidates")
            if it.prompt and (it.answer in YES_NO and (not cand or set(cand) == set(YES_NO))):
                group = default_group if isinstance(ds, PopeDataset) else (it.meta.get("neg_type") or default_group)
                part.questions.append(dataclasses.replace(it, meta={**it.meta, "candidates": YES_NO, "neg_type": group}))
            elif it.prompt and cand:
                part.questions.append(it)
            elif it.image is not None and (it.kind in ("caption", "scene") or (it.objects and not it.prompt)):
                part.captions.append(dataclasses.replace(it, prompt=it.prompt if it.kind == "caption" and it.prompt
                                                         else CAPTION_PROMPT, kind="caption",
                                                         meta={k: v for k, v in it.meta.items() if k != "candidates"}))
            else:
                left += 1
    if n_captions is not None:
        part.captions = part.captions[:n_captions]
    if left:
        part.source += f" ({left} item(s) neither a question with candidates nor an image with objects to caption: left out)"
    if part.captions:
        part.vocabulary = shapes_vocabulary() if isinstance(ds, ShapesDataset) else dataset_vocabulary(_categories(ds, part.captions))
    return part


def eval_data(specs=(), n: int | None = None, seed: int | None = None, n_captions: int | None = None,
              image_dir: str | None = None, pope_files=(), caption_truth: str | None = None,
              synonyms: str | None = None) -> EvalData:
    """The items of ``specs`` (``--dataset``; none and no files: ``shapes``) and of the older file
    options (``pope_files``: POPE JSON lines; ``caption_truth`` + ``synonyms``: caption-truth JSON
    lines and their synonym table), read and checked (a bad record: a one-line
    :class:`~vlinterp.core.errors.DataError` naming it). ``image_dir``: the folder image paths are
    relative to. No item to evaluate: :class:`UsageError`."""
    from .chair import read_caption_truth, read_vocabulary
    from .datasets import FORMATS, open_dataset, parse_dataset_spec
    from .datasets.shapes import ShapesDataset

    specs = list(specs or [])
    if not specs and not pope_files and not caption_truth:
        specs = ["shapes"]
    parts: list[_Part] = []
    data = EvalData()
    for spec in specs:
        fmt, _ = parse_dataset_spec(spec)
        opts = {}
        if image_dir:
            if "images" not in FORMATS.options(fmt):
                raise UsageError(f"--image-dir is for datasets with image paths (jsonl, pope, coco), not {fmt}")
            opts["images"] = image_dir
        ds = open_dataset(spec, **opts)
        if ds.summary():
            data.notes.append(ds.summary())
        if isinstance(ds, ShapesDataset) and not ds.config.kind:
            parts.append(_shapes(ds, spec, n, seed, n_captions))
            data.native = len(specs) == 1 and not pope_files and not caption_truth and spec.strip() == "shapes"
        else:
            parts.append(_dataset(ds, n, seed, n_captions))
    for path in pope_files:
        ds = FORMATS.create("pope", file=path, images=image_dir)
        ds.spec = f"pope:{path}"
        parts.append(_dataset(ds, n, seed, n_captions))
    if caption_truth:
        caps = read_caption_truth(caption_truth, image_dir)
        caps = caps[:n_captions] if n_captions is not None else caps
        parts.append(_Part(_label(caption_truth), [], caps, synonyms_vocabulary(read_vocabulary(synonyms)),
                           f"caption truth {caption_truth}"))
    _join(parts, data)
    if not data.items:
        raise UsageError(f"nothing to evaluate in {data.describe() or 'the data given'}: steer eval needs yes/no "
                         "questions (POPE) or images with objects to caption (CHAIR)")
    return data


def _join(parts: list[_Part], data: EvalData) -> None:
    """Questions of every part (clashing group names prefixed by the part's label), then captions
    (one CHAIR row per part that has captions: ``chair``, or ``chair (label)`` for several)."""
    from ..metrics.answers import group_of

    owners: dict[str, set] = {}
    for k, p in enumerate(parts):
        for it in p.questions:
            owners.setdefault(group_of(it), set()).add(k)
    others = []
    for k, p in enumerate(parts):
        for it in p.questions:
            g = group_of(it)
            if len(owners[g]) > 1 and set(it.meta["candidates"]) == set(YES_NO):
                it = dataclasses.replace(it, meta={**it.meta, "neg_type": f"{p.label}:{g}"})
            (data.items if set(it.meta["candidates"]) == set(YES_NO) else others).append(it)
        data.sources.append(p.source)
    data.items += others
    with_caps = [p for p in parts if p.captions]
    for p in with_caps:
        g = CHAIR if len(with_caps) == 1 else f"{CHAIR} ({p.label})"
        data.vocabularies[g] = p.vocabulary
        data.items += [dataclasses.replace(it, meta={**it.meta, "chair_group": g}) for it in p.captions]


__all__ = ["EvalData", "eval_data", "DEFAULT_N", "DEFAULT_SEED", "DEFAULT_CAPTIONS"]
