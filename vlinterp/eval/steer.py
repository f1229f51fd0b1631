"""Hallucination-steering evaluation: the task items (POPE, colour / count questions, CHAIR captions),
running a steering method over them, their scores, and fitting a method on its default probe and
calibration items (the shapes world), or on a POPE JSON-lines file.

    tasks = steer.tasks(256, 11, n_captions=64)          # items, in the order the numbers depend on
    row = steer.score(tasks, steer.run(method, adapter, tasks))
    row = steer.evaluate(adapter, method, 256, 11, 64)   # the same, one call
    g = steer.fit("ground", adapter, progress=True)      # its probe / calibration items, strengths chosen
    g = steer.fit("meandiff", adapter, "shapes:steer-probe:256:3", alpha=0.1)

``method`` is a fitted :class:`~vlinterp.steering.base.SteeringMethod` or ``None`` (unsteered). Answers
come from :func:`vlinterp.metrics.answers.answer` (runs of items with the same candidates, 32 per
batch), so a list of items always gives the same numbers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass

from ..core.errors import ConfigError, UsageError
from ..data.shapes import COLOURS, NUM_WORDS, SHAPES
from ..metrics.answers import answer, group_scores
from ..steering.base import STEERING
from . import shapes

NONE = "none"  # the unsteered baseline, a row of every table
NEG_TYPES = ("random", "popular", "adversarial")
WORDS = {"colours": tuple(COLOURS), "shapes": tuple(SHAPES), "numbers": tuple(NUM_WORDS)}


def method_names() -> list[str]:
    """``none`` and every registered steering method."""
    return [NONE, *STEERING.names()]


# ------------------------------------------------------------------ items
def colour_count(split: str, n: int, seed: int = 0) -> list:
    """Per scene of ``n``: its colour question (when a shape occurs once) then its count question."""
    colour = {it.id: it for it in shapes.colour(split, n, seed)}
    out = []
    for it in shapes.count(split, n, seed):
        if it.id in colour:
            out.append(colour[it.id])
        out.append(it)
    return out


def tasks(n: int, seed: int, n_captions: int = 0, split: str = "test", neg_types=NEG_TYPES) -> list:
    """The evaluation items in order: POPE (``n`` per negative type), colour / count (``n`` scenes),
    then ``n_captions`` free captions of the ``chair`` split (CHAIR)."""
    items = [it for neg in neg_types for it in shapes.pope(split, n, seed, neg)]
    items += colour_count(split, n, seed)
    if n_captions:
        items += shapes.captions("chair", n_captions, seed)
    return items


def calibration(n: int, seed: int, split: str, n_captions: int = 0) -> list:
    """Calibration items for choosing strengths: random + adversarial POPE and colour / count questions
    (``n`` each) and ``n_captions`` captions of ``split`` (the probe split, never the test scenes)."""
    items = tasks(n, seed, 0, split, ("random", "adversarial"))
    return items + (shapes.captions(split, n_captions, seed) if n_captions else [])


# ---------------------------------------------------------------- running
def _on(method, adapter):
    return method.applied(adapter) if method is not None else contextlib.nullcontext()


def run(method, adapter, items, progress=None) -> list[str]:
    """The answers to ``items`` with ``method`` on (``None``: unsteered); ``progress``: a tqdm-like bar."""
    with _on(method, adapter):
        return answer(adapter, items, progress=progress)


def captions(method, adapter, images, max_new_tokens: int = 24) -> list[str]:
    """Free captions (``describe the image.``) of PIL ``images`` with ``method`` on."""
    from ..metrics.answers import captions as _captions

    with _on(method, adapter):
        return _captions(adapter, images, max_new_tokens=max_new_tokens)


def score(items, preds, vocabulary=None) -> dict:
    """POPE scores per negative type (yes/no groups: :func:`~vlinterp.metrics.answers.group_of`),
    colour / count accuracy, other groups, and CHAIR of the caption items (items without
    candidates), one row per ``meta["chair_group"]`` (default ``chair``), counted by
    :func:`vlinterp.eval.chair_vocab.chair_items` with ``vocabulary``: a
    :class:`~vlinterp.eval.chair_vocab.Vocabulary`, ``{row: Vocabulary}``, or ``None`` (the shapes
    world's colour-shape pairs, :func:`~vlinterp.eval.chair_vocab.shapes_vocabulary`)."""
    from .chair_vocab import Vocabulary, chair_items, shapes_vocabulary

    groups = group_scores(items, preds)
    row = {k: groups.pop(k) for k in (*NEG_TYPES, "colour", "count") if k in groups}
    row.update(groups)
    caps: dict[str, list] = {}
    for it, p in zip(items, preds):
        if not it.meta.get("candidates"):
            caps.setdefault(it.meta.get("chair_group", "chair"), []).append((p, it))
    for g, pairs in caps.items():
        if vocabulary is None or isinstance(vocabulary, Vocabulary):
            vocab = vocabulary
        else:
            vocab = vocabulary.get(g)
        row[g] = chair_items([p for p, _ in pairs], [it for _, it in pairs], vocab or shapes_vocabulary())
    return row


def evaluate(adapter, method, n: int, seed: int, n_captions: int = 0, split: str = "test") -> dict:
    """:func:`score` of :func:`run` on :func:`tasks`."""
    items = tasks(n, seed, n_captions, split)
    return score(items, run(method, adapter, items))


def evaluate_data(adapter, method, data) -> dict:
    """:func:`score` of :func:`run` on a :class:`~vlinterp.eval.steer_data.EvalData` (the items of
    ``--dataset`` specs); outside the native shapes tasks the row also lists the ``captions``."""
    preds = run(method, adapter, data.items)
    return score_data(data, preds)


def score_data(data, preds) -> dict:
    """:func:`score` of ``preds`` on ``data`` (+ ``captions``: ``[{id, caption}]`` unless native)."""
    row = score(data.items, preds, data.vocabularies)
    if not data.native:
        caps = [{"id": it.id, "caption": p} for it, p in zip(data.items, preds) if not it.meta.get("candidates")]
        if caps:
            row["captions"] = caps
    return row


def evaluate_user(adapter, method, pope_items=None, caption_items=None, vocabulary=None) -> dict:
    """Scores on user items (the older API): ``pope`` (yes/no scores of the POPE items) and
    ``chair`` + ``captions`` of the caption items, CHAIR with ``vocabulary`` (a
    :class:`~vlinterp.eval.chair_vocab.Vocabulary` or a ``{word: object}`` table). The same path as
    :func:`evaluate_data`."""
    from .chair_vocab import Vocabulary, synonyms_vocabulary
    from .steer_data import EvalData

    items = [dataclasses.replace(it, meta={**it.meta, "candidates": ("yes", "no"), "neg_type": "pope"})
             for it in pope_items or []]
    items += [dataclasses.replace(it, meta={k: v for k, v in it.meta.items() if k != "candidates"})
              for it in caption_items or []]
    vocab = vocabulary if vocabulary is None or isinstance(vocabulary, Vocabulary) else synonyms_vocabulary(vocabulary)
    return evaluate_data(adapter, method, EvalData(items, {"chair": vocab} if vocab else {}))


def eval_shard(adapter, items, start: int, method=None) -> list[str]:
    """:func:`run` as a :class:`~vlinterp.scale.WorkerPool` shard function (``method`` bound by partial)."""
    return run(method, adapter, items)


# ---------------------------------------------------------------- fitting
@dataclass(frozen=True)
class FitData:
    """Where a fit's items come from: ``shapes`` (``split`` / ``n`` / ``seed``, ``None`` = the
    method's default) or ``pope`` (``path``: a POPE JSON-lines file)."""

    kind: str = "shapes"
    split: str | None = None
    n: int | None = None
    seed: int = 0
    path: str | None = None

    def describe(self) -> str:
        if self.kind == "pope":
            return f"POPE file {self.path}"
        if self.kind == "spec":
            return self.path
        return "shapes:" + ":".join(str(x) for x in (self.split or "default", self.n or "default", self.seed))

    def resolved(self, name: str) -> "FitData":
        """The spec with method ``name``'s default split and size filled in."""
        if self.kind != "shapes":
            return self
        d_split, d_n = DEFAULTS.get(name, ("steer-probe", 256))
        return dataclasses.replace(self, split=self.split or d_split, n=self.n or d_n)


def parse_fit_dataset(spec: str) -> FitData:
    """``shapes[:split[:n[:seed]]]`` or the path of a POPE JSON-lines file (checked, images not
    loaded). :class:`UsageError` / :class:`~vlinterp.core.errors.DataError` name what is wrong."""
    from .pope import scan_pope_jsonl

    s = str(spec).strip()
    if s == "shapes" or s.startswith("shapes:"):
        parts = s.split(":")[1:]
        if len(parts) > 3:
            raise UsageError(f"dataset {spec!r}: shapes[:split[:n[:seed]]] takes at most three fields")
        split = parts[0] or None if parts else None
        try:
            n = int(parts[1]) if len(parts) > 1 and parts[1] else None
            seed = int(parts[2]) if len(parts) > 2 and parts[2] else 0
        except ValueError:
            raise UsageError(f"dataset {spec!r}: n and seed must be integers (shapes[:split[:n[:seed]]])") from None
        if n is not None and n < 1:
            raise UsageError(f"dataset {spec!r}: n must be a positive integer")
        return FitData("shapes", split, n, seed)
    fmt = s.split(":", 1)[0]
    if ":" in s and fmt in ("folder", "chair") and not os.path.exists(s):
        raise UsageError(f"dataset {spec!r}: {fmt} data holds no yes/no questions; a steering fit needs them "
                         f"(pope:FILE[:IMAGES], jsonl:..., coco:..., hf:...) or shapes scenes")
    if ":" in s and fmt in ("pope", "jsonl", "coco", "hf") and not os.path.exists(s):
        from .datasets import check_spec

        check_spec(s)  # format, options and paths
        data = FitData("spec", path=s)
        _yes_no_kind(data)  # the records read and checked (bad ones named), before any model loads
        return data
    if not os.path.exists(s):
        raise UsageError(f"dataset {spec!r}: neither shapes[:split[:n[:seed]]], a dataset spec (pope:FILE[:IMAGES], "
                         f"jsonl:FILE[:IMAGES], coco:INSTANCES.json:IMAGES, hf:PATH[:SPLIT]) nor an existing POPE JSON-lines file")
    scan_pope_jsonl(s)
    return FitData("pope", path=s)


#: per method: (default split, default n); the items each recipe draws are in :func:`fit_items` (a method
#: not listed gets ``steer-probe`` / 256 and items by what it ``needs``)
DEFAULTS = {"iri": ("iri-calib", 32), "meandiff": ("steer-probe", 128), "save": ("steer-probe", 256),
            "probe": ("steer-probe", 1024), "ground": ("steer-probe", 2048), "vcd": ("steer-probe", 0)}


def save_sae_items(n: int = 400, seed: int = 0, split: str = "save-sae") -> list:
    """SAVE's default SAE data: ``n`` scenes, even ones captioned, odd ones asked an adversarial POPE question."""
    from ..data.questions import caption

    out = []
    for i, it in enumerate(shapes.pope(split, n, seed, "adversarial")):
        scene = it.meta["scene"]
        out.append(shapes.scene_item(scene, "describe the image.", caption(scene), "caption") if i % 2 == 0 else it)
    return out


def _iri(split, n, seed, n_calib, n_captions, calib, sae_items):
    items = [it for it in shapes.pope(split, 2 * n, seed, "random") if it.answer == "yes"][:n]
    k = n_calib or 128
    return items, (shapes.pope(split, k, seed + 1, "adversarial") + shapes.pope(split, k, seed + 1, "random")
                   if calib else None), {}


def _meandiff(split, n, seed, n_calib, n_captions, calib, sae_items):
    return shapes.pope(split, n, seed, "adversarial"), calibration(n_calib or n, seed + 1, split) if calib else None, {}


def _save(split, n, seed, n_calib, n_captions, calib, sae_items):
    return shapes.pope(split, n, seed, "adversarial"), None, {"sae_items": save_sae_items()} if sae_items else {}


def _probe(split, n, seed, n_calib, n_captions, calib, sae_items):
    items = shapes.pope(split, n, seed, "adversarial") + shapes.pope(split, n // 2, seed, "random")
    caps = 512 if n_captions is None else n_captions
    items += shapes.captions(split, caps, seed) if caps else []
    return items, calibration(n_calib or 512, seed + 1, split) if calib else None, {}


def _ground(split, n, seed, n_calib, n_captions, calib, sae_items):
    caps = 256 if n_captions is None else n_captions
    return shapes.scenes(split, n, seed), calibration(n_calib or 512, seed + 1, split, caps) if calib else None, {}


#: the probe / calibration recipes the README's numbers were measured with
RECIPES = {"iri": _iri, "meandiff": _meandiff, "save": _save, "probe": _probe, "ground": _ground}


def fit_items(name: str, split: str | None = None, n: int | None = None, seed: int = 0, n_calib: int | None = None,
              n_captions: int | None = None, calib: bool = True, sae_items: bool = True) -> tuple[list, list | None, dict]:
    """``(items, calib, extra fit arguments)`` of the shapes world for method ``name``: its probe items
    (``n`` on ``split`` / ``seed``) and calibration items (``seed + 1``; only with ``calib``), by its
    recipe in :data:`RECIPES`, or for any other method by what it ``needs`` (POPE questions or scenes)."""
    STEERING.check(name)
    d_split, d_n = DEFAULTS.get(name, ("steer-probe", 256))
    split, n = split or d_split, n or d_n
    if name in RECIPES:
        return RECIPES[name](split, n, seed, n_calib, n_captions, calib, sae_items)
    needs = STEERING.get(name).needs
    cal = calibration(n_calib or n, seed + 1, split, n_captions or 0) if calib else None
    if "scenes" in needs:
        return shapes.scenes(split, n, seed), cal, {}
    if "presence" in needs:
        return shapes.pope(split, n, seed, "adversarial"), cal, {}
    return [], None, {}  # vcd, or a method that takes no data


def make_config(name: str, config=None, world: bool = True, **opts):
    """The ``Config`` of ``name`` from ``config`` and ``opts`` (strings from a CLI spec are converted),
    with the shapes world's colour / shape / number words filled into the fields that want them (``world``)."""
    if config is None:
        cfg = STEERING.config(name, **opts)
    else:
        fields = {f.name for f in dataclasses.fields(config)}
        unknown = sorted(set(opts) - fields)
        if unknown:
            raise ConfigError(f"steering method {name!r}: unknown option(s) {', '.join(unknown)}")
        cfg = dataclasses.replace(config, **opts)
    if cfg is None:
        return None
    if world:
        fill = {k: v for k, v in WORDS.items() if hasattr(cfg, k) and not getattr(cfg, k)}
        cfg = dataclasses.replace(cfg, **fill)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


#: the kinds of yes/no questions a dataset spec is asked for, in this order (POPE's adversarial first)
YES_NO_KINDS = ("pope-adversarial", "pope-popular", "pope-random", "presence", "all")


def _halves(items: list) -> tuple[list, list]:
    """``(probe, calibration)``: every other "yes" question and every other "no" question, in file
    order (POPE files alternate yes / no per image, so plain even / odd lines would put every "yes"
    on one side)."""
    seen: dict = {}
    probe, calib = [], []
    for it in items:
        k = seen[it.answer] = seen.get(it.answer, -1) + 1
        (probe if k % 2 == 0 else calib).append(it)
    return probe, calib


def _yes_no_kind(data: "FitData"):
    """``(dataset, kind)``: the spec's data opened (records read and checked) and the first of
    :data:`YES_NO_KINDS` it gives (:class:`UsageError` when none)."""
    from .datasets import open_dataset

    ds = open_dataset(data.path)
    kinds = ds.available_kinds()
    kind = next((k for k in YES_NO_KINDS if k in kinds), None)
    if kind is None:
        raise UsageError(f"{data.path}: gives {', '.join(kinds)} items; steering fits need yes/no questions "
                         f"({', '.join(YES_NO_KINDS[:4])})")
    return ds, kind


def _yes_no_items(data: "FitData") -> list:
    """The yes/no questions of a POPE file (``pope``) or of any dataset spec (``spec``: the first of
    :data:`YES_NO_KINDS` it gives; ``n`` / ``seed`` subsample), in file order."""
    if data.kind == "pope":
        from .pope import read_pope_jsonl

        return read_pope_jsonl(data.path)
    ds, kind = _yes_no_kind(data)
    items = [it for it in ds.items(kind, n=data.n, seed=data.seed) if it.answer in ("yes", "no") and it.prompt]
    if len(items) < 2:
        raise UsageError(f"{data.path}: {len(items)} yes/no question(s) of kind {kind!r}; a fit needs at least 2")
    return items


def scene_items(data: "FitData", name: str = "ground") -> tuple[list, dict]:
    """``(items, words)``: the scenes of a dataset spec (``data.n`` / ``data.seed`` subsample) for a
    method that ``needs`` scenes (grounding: probe labels from each object's mask, or its box filled
    when it has none), and the words its probe reads: the ``colours`` / ``shapes`` its objects'
    ``colour`` / ``shape`` attributes use (the shapes world's lists when they are among them, else in
    first-seen order), or, where an object lacks those attributes (COCO categories), ``objects``: the
    object names (a COCO file's every category in id order; else as the objects give them: by
    category id, then first seen).
    :class:`UsageError` when the data has no scenes or no objects."""
    from .datasets import open_dataset
    from .datasets.pick import offers

    ds = open_dataset(data.path)
    if not offers(ds, "scene"):
        raise UsageError(f"{name} needs images with object masks or boxes (scenes: shapes, coco:..., JSON lines or HF "
                         f"records with objects); {data.path} gives {', '.join(ds.available_kinds())} items")
    items = ds.items("scene", n=data.n, seed=data.seed)
    colours: dict = {}
    shapes_: dict = {}
    names: dict = {}  # name -> (category id or inf, first seen)
    attributed = True
    for it in items:
        for o in it.objects:
            a = o.attrs if isinstance(o.attrs, dict) else {}
            names.setdefault(o.name, (a.get("category_id", float("inf")), len(names)))
            if not a.get("colour") or not a.get("shape"):
                attributed = False
                continue
            colours.setdefault(a["colour"], None)
            shapes_.setdefault(a["shape"], None)
    if not names:
        raise UsageError(f"{data.path}: no objects in its {len(items)} scene(s); {name} needs objects to label patches")
    if not attributed:
        cats = getattr(ds, "categories", None)  # COCO: every category of the file, in id order
        if isinstance(cats, dict) and cats:
            return items, {"objects": tuple(dict.fromkeys(str(cats[k]["name"]) for k in sorted(cats)))}
        return items, {"objects": tuple(sorted(names, key=lambda n: names[n]))}
    if set(colours) <= set(WORDS["colours"]) and set(shapes_) <= set(WORDS["shapes"]):
        return items, {"colours": WORDS["colours"], "shapes": WORDS["shapes"]}
    return items, {"colours": tuple(colours), "shapes": tuple(shapes_)}


def fit(name: str, adapter, dataset="shapes", config=None, progress: bool = False, n: int | None = None,
        split: str | None = None, seed: int | None = None, n_calib: int | None = None, n_captions: int | None = None,
        sae=None, **opts):
    """Fit steering method ``name`` on ``dataset`` (a spec for :func:`parse_fit_dataset` or a
    :class:`FitData`; ``n`` / ``split`` / ``seed`` override its fields) with ``config`` / ``opts``.
    A POPE file or dataset spec gives yes/no items: every other "yes" and every other "no" question
    are the probe items, the rest the calibration items (:func:`_halves`). ``sae``: SAVE's SAE (default: one trained on :func:`save_sae_items`). The data used is
    recorded in ``meta["data"]``."""
    data = parse_fit_dataset(dataset) if isinstance(dataset, str) else dataset
    data = dataclasses.replace(data, **{k: v for k, v in (("n", n), ("split", split), ("seed", seed)) if v is not None})
    data = data.resolved(name)
    cls = STEERING.get(name)
    extra: dict = {}
    if data.kind == "spec" and "scenes" in cls.needs:
        items, words = scene_items(data, name)
        cfg = make_config(name, config, world=False, **{**{k: v for k, v in words.items() if k not in opts}, **opts})
        auto = [k for k in cls.strengths if getattr(cfg, k, None) == "auto"]
        if auto:
            raise UsageError(f"{name} on {data.path}: give its strengths ({', '.join(f'{k}=...' for k in auto)}, e.g. "
                             f"{name}:alpha=3,beta=1,gate=1); choosing them needs the shapes world's calibration items")
        calib = None
    elif data.kind in ("pope", "spec"):
        if "scenes" in cls.needs:
            raise UsageError(f"{name} needs images with object masks (shapes scenes), not yes/no questions")
        lines = _yes_no_items(data) if cls.needs else []
        items, calib = _halves(lines) if cls.needs else ([], None)
        cfg = make_config(name, config, world=False, **opts)
    else:
        cfg = make_config(name, config, **opts)
        auto = any(getattr(cfg, k, None) == "auto" for k in cls.strengths)
        items, calib, extra = fit_items(name, data.split, data.n, data.seed, n_calib, n_captions, calib=auto,
                                        sae_items=sae is None)
    if sae is not None:
        extra["sae"] = sae
    method = cls.fit(adapter, items, cfg, calib=calib, progress=progress, **extra)
    method.meta["data"] = {"dataset": data.describe(), "items": len(items), "calib": len(calib or [])}
    return method


__all__ = ["NONE", "method_names", "tasks", "calibration", "colour_count", "run", "captions", "score", "evaluate",
           "evaluate_user", "evaluate_data", "score_data", "eval_shard", "FitData", "parse_fit_dataset", "fit_items", "make_config", "fit", "scene_items",
           "save_sae_items", "DEFAULTS", "RECIPES"]
