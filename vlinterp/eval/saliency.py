"""The saliency benchmark: methods against ground-truth object masks (``vlinterp bench saliency``).

The items come from any dataset with objects (:mod:`vlinterp.eval.datasets`; default: scenes of the
shapes world's split ``heldout``, seed ``seed``, which the organisms never trained on; COCO
instances give polygon / RLE masks, boxes without a mask count as filled boxes). Each method's map
of each case is scored with :mod:`vlinterp.metrics` (pointing game, energy pointing game, deletion /
insertion AUC with a blur baseline, Obj-IoU) and timed, next to the ``random`` and ``centre``
baseline maps. Cases per model kind, from each item (the ``i``-th):

* vlm: an item with a prompt is one case (GT: the object it asks about, items without one are
  left out). A scene: on shapes scenes ``what color is the {shape}?`` about every shape that occurs
  once (:func:`shapes.colour_items`), elsewhere ``Is there a {name} in the image?`` per distinct
  object name (GT: those objects). The target is the model's own greedy first answer token;
  deletion / insertion score = probability of that token at ``last``.
* vit: every distinct object name (GT: its objects); score = sigmoid (multi-label models whose
  classes are the shapes-world labels) or softmax of the class; names that are not the model's
  classes are left out.
* clip: the image with one caption ``a {name}`` per distinct name; GT = those objects; score =
  softmax probability of the caption among the captions of every name of the dataset (the 24
  colour-shape pairs on the shapes world).
* diffusion (shapes scenes only): generate ``a {colour} {shape}`` (the first object,
  :func:`shapes.generation_item`) and take the map of the shape word; GT = the generated object's
  mask by nearest-colour thresholding; no deletion / insertion / fidelity (a generator has no class score).

>>> res = bench_saliency("shapes-vit", methods=["relevancy"], n=8, seed=1)
>>> print(table(res))
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from . import shapes

METRICS = ("pointing_game", "energy_pointing_game", "deletion_auc", "insertion_auc", "obj_iou", "infidelity", "sensitivity",
           "seconds")
HEADERS = {"pointing_game": "pointing", "energy_pointing_game": "energy", "deletion_auc": "deletion AUC",
           "insertion_auc": "insertion AUC", "obj_iou": "Obj-IoU", "infidelity": "infidelity", "sensitivity": "sensitivity",
           "seconds": "s/image"}
SPLIT = "heldout"
SPLIT_SPEC = f"shapes:{SPLIT}"  # the default data: held-out scenes the organisms never trained on
BASELINES = ("random", "centre")


@dataclass
class Case:
    """One measurement: ``batch`` + ``target`` for ``attribute``; ``row`` of the Result to score;
    ``mask`` the GT; ``image`` ``[H, W, 3]`` uint8 fed to ``score_fn`` (None: no deletion/insertion)."""

    label: str
    batch: object
    target: object
    mask: object  # [H, W] bool, or None until known (diffusion)
    image: object = None  # [H, W, 3] uint8
    score_fn: object = None
    row: int = 0
    extra: dict = field(default_factory=dict)


def check_methods(names) -> list[str]:
    """The saliency methods among ``names`` (baselines dropped: they are always measured; a spec
    ``name[k=v]`` is checked and kept as its own row); unknown names raise :class:`UnknownNameError` naming the nearest, before any model is loaded."""
    from .. import saliency

    from ..core.registry import parse_spec

    out = []
    for n in names:
        if n in BASELINES:
            continue
        name, opts = parse_spec(n)  # a spec with options, ``tam[context=arc]``, is its own row
        if name not in saliency.REGISTRY:
            from ..core.errors import UnknownNameError

            raise UnknownNameError("saliency method", name, [*saliency.REGISTRY, *BASELINES])
        if opts:
            saliency.config(name, **opts)
        out.append(n)
    return out


# ------------------------------------------------------------------ cases per kind
def _first_answer_token(m, b) -> int:
    """The greedy first answer token, special tokens (eos, pad, <image>) excluded."""
    tok = m.tokenizer
    logits = m.run(b).logits[0, int(b.layout.span("last", 0)[-1])].float()
    logits[list(set(tok.all_special_ids))] = -float("inf")
    return int(logits.argmax())


def _name_masks(item) -> list[tuple[str, object]]:
    """``[(name, [H, W] bool)]``: each distinct object name (first-seen order) with the union of its
    objects' masks (a box without a mask: the filled box)."""
    import numpy as np

    names = list(dict.fromkeys(item.names()))
    return [(n, np.any([o.box_mask(item.size) for o in item.objects if o.name == n], 0)) for n in names]


def questions(item, index: int) -> list:
    """The vlm cases' questions of one item (see the module doc): ``[(prompt, answer or None, GT mask)]``."""
    from .datasets.coco import presence_prompt
    from .scene_questions import asked_object, scene_view

    if item.prompt is not None:
        o = asked_object(item)
        return [] if o is None else [(item.prompt, item.answer, o.box_mask(item.size))]
    view = scene_view(item, index)
    if view is not None:
        return [(it.prompt, it.answer, it.objects[it.meta["obj_index"]].mask) for it in shapes.colour_items(view)]
    return [(presence_prompt(n), "yes", mask) for n, mask in _name_masks(item)]


def llava_cases(m, item, index: int, seed: int, **_):
    import numpy as np

    from ..metrics import llava_score_fn

    for prompt, answer, mask in questions(item, index):
        b = m.prepare(images=[item.image], text=[prompt])
        tid = _first_answer_token(m, b)
        yield Case(f"{prompt} [{answer}]", b, [tid], mask, np.asarray(item.image),
                   llava_score_fn(m, prompt, tid), extra={"correct": m.tokenizer.decode([tid]).strip() == answer})


def _vit_index(m, label: str, names) -> int | None:
    if label in names:
        return names.index(label)
    from ..data import PAIR_INDEX

    pair = tuple(label.split(" "))
    if pair in PAIR_INDEX:
        return PAIR_INDEX[pair] % len(names)  # a model of another label set (tiny:vit): any fixed class
    return None  # not a class of this model: no case


def vit_cases(m, item, index: int, seed: int, **_):
    import numpy as np

    from ..data import PAIRS
    from ..metrics import vit_score_fn

    names = m.class_names()
    act = "sigmoid" if set(shapes.pair_name(p) for p in PAIRS) <= set(names) else "softmax"
    b = None
    for label, mask in _name_masks(item):
        k = _vit_index(m, label, names)
        if k is None:
            continue
        b = b or m.prepare(images=[item.image])  # one batch per item
        yield Case(label, b, k, mask, np.asarray(item.image), vit_score_fn(m, k, act))


def clip_cases(m, item, index: int, seed: int, vocab=None, **_):
    import numpy as np

    from ..metrics import clip_score_fn

    named = _name_masks(item)
    texts = [f"a {n}" for n, _ in named]
    candidates = [f"a {n}" for n in (vocab or [n for n, _ in named])]
    b = None
    for text, (_, mask) in zip(texts, named):
        b = b or m.prepare(images=[item.image], text=texts)
        yield Case(text, b, texts.index(text), mask, np.asarray(item.image), clip_score_fn(m, text, candidates))


def diffusion_cases(m, item, index: int, seed: int, steps: int = 20, guidance: float = 1.0, **_):
    from ..core.errors import UsageError
    from .scene_questions import scene_view

    view = scene_view(item, index)
    if view is None:
        raise UsageError(f"{item.where()}: the diffusion benchmark generates shapes-world objects; give shapes scenes "
                         "(objects with colour and shape attributes)")
    # every scene is sampled with noise seed seed * 1000 (as the benchmark always has: its numbers stay comparable)
    it = shapes.generation_item(view, seed * 1000)
    b = m.prepare(text=[it.prompt], seed=it.meta["seed"])
    yield Case(it.prompt, b, it.meta["shape"], None, extra={"colour": it.meta["colour"], "steps": steps, "guidance": guidance})


CASES = {"vlm": llava_cases, "vit": vit_cases, "clip": clip_cases, "diffusion": diffusion_cases}


def colour_mask(image, colour: str, max_dist: float = 120.0):
    """``[H, W]`` bool: pixels of ``image`` ``[H, W, 3]`` whose nearest shapes-world colour
    (background gray included) is ``colour``, within ``max_dist``."""
    import numpy as np

    from ..data import COLOUR_RGB

    names = list(COLOUR_RGB)
    pal = np.array([COLOUR_RGB[c] for c in names] + [(30, 30, 30)], np.float32)
    d = np.linalg.norm(image.astype(np.float32)[..., None, :] - pal, axis=-1)
    near = d.argmin(-1)
    return (near == names.index(colour)) & (d.min(-1) < max_dist)


# ------------------------------------------------------------------ measuring
def _generated(m, case: Case, res):
    """The image a diffusion case's map refers to: from the Result if the method kept it, else sampled."""
    import numpy as np

    from ..core.images import load_image

    for key in ("image", "generated"):
        v = res.arrays.get(key) if key in res.arrays else res.meta.get(key)
        if v is not None:
            return np.asarray(load_image(v), np.uint8)
    return np.asarray(m.sample(case.batch, steps=case.extra.get("steps", 20), guidance_scale=case.extra.get("guidance", 1.0),
                               progress=False)[0], np.uint8)


def measure(res, case: Case, row: int, steps: int, seed: int, infidelity_samples: int = 0, sensitivity_samples: int = 0,
            explain=None) -> dict[str, float]:
    """Every metric of row ``row`` of ``res`` on ``case`` (deletion / insertion only with ``steps`` > 0;
    infidelity with ``infidelity_samples`` > 0; sensitivity with ``sensitivity_samples`` > 0 and
    ``explain``: ``fn(images [N, H, W, 3] uint8) -> [N, H, W]`` maps of the same method)."""
    from .. import metrics as M
    from ..metrics.fidelity import infidelity, sensitivity_max

    ev = {"pointing_game": M.pointing_game(res, case.mask, row),
          "energy_pointing_game": M.energy_pointing_game(res, case.mask, row),
          "obj_iou": M.obj_iou(res, case.mask, row),
          "deletion_auc": math.nan, "insertion_auc": math.nan, "infidelity": math.nan, "sensitivity": math.nan}
    if case.score_fn is not None and steps > 0:
        ev["deletion_auc"] = M.deletion_auc(case.image, res, case.score_fn, row, steps, seed=seed)
        ev["insertion_auc"] = M.insertion_auc(case.image, res, case.score_fn, row, steps, seed=seed)
    if case.score_fn is not None and infidelity_samples > 0:
        ev["infidelity"] = infidelity(case.image, res, case.score_fn, row, infidelity_samples, seed=seed)
    if case.image is not None and explain is not None and sensitivity_samples > 0:
        ev["sensitivity"] = sensitivity_max(explain, case.image, sensitivity_samples, seed=seed, reference=M.as_map(res, row))
    return ev


def method_explainer(m, meth, case: Case):
    """``fn(images [N, H, W, 3] uint8) -> [N, H, W]``: ``meth`` re-run on other images with ``case``'s
    prompt / texts and target (the same row of its Result)."""
    import numpy as np
    from PIL import Image

    from ..metrics import as_map
    from ..saliency.targets import prepare_like

    def fn(images):
        out = []
        for im in images:
            b = prepare_like(m, case.batch, [Image.fromarray(np.asarray(im, np.uint8))], case.batch.layout.image_row(0))
            out.append(as_map(meth.attribute(b, target=case.target), case.row))
        return np.stack(out)

    return fn


def fixed_explainer(res, row: int):
    """The explainer of a map that does not look at the image (the baselines): the same map for every image."""
    import numpy as np

    from ..metrics import as_map

    hm = as_map(res, row)
    return lambda images: np.stack([hm for _ in images])


def _applicable(names, m, methods_given: bool, sample_steps: int = 20, guidance: float = 1.0):
    """Instantiate each method; a method the kind does not support is skipped with its reason
    (or, when the user named it, its error raised)."""
    from .. import saliency
    from ..core.errors import VlinterpError

    from ..core.registry import parse_spec

    out, skipped = {}, {}
    for name in names:
        base, opts = parse_spec(name)
        if m.kind == "diffusion":
            opts = {**{k: v for k, v in (("steps", sample_steps), ("guidance_scale", guidance)) if saliency.takes(base, k)}, **opts}
        try:
            out[name] = saliency.create(base, m, **opts)
        except VlinterpError as e:
            if methods_given:
                raise
            skipped[name] = f"{type(e).__name__}: {e}"
    return out, skipped


def _layout_result(m, case: Case):
    """A zero-score Result on the layout a method's map of ``case`` would have (for baseline-only runs)."""
    import numpy as np

    from ..core.result import Result

    b = case.batch
    stream = {"vlm": "lm", "clip": "vision", "diffusion": "unet"}.get(m.kind, b.main)
    L = b.layouts[stream] if stream in b.layouts else b.layout
    return Result("none", {"scores": np.zeros((1, len(L.image_positions(0))), np.float32)}, L, [case.label], 0, {})


def scene_measures(m, items, names, methods_given: bool, seed: int = 1, steps: int = 16, sample_steps: int = 20,
                   guidance: float = 1.0, progress=None, start: int = 0, vocab=None, infidelity_samples: int = 0,
                   sensitivity_samples: int = 0) -> list[dict]:
    """Measure every method (and the random / centre baselines) on ``items`` (item ``k`` is the
    ``start + k``-th of the benchmark). One entry per item: ``{"per": {method: [measures per case]},
    "extras": [...], "skipped": {method: reason}}``. Items are independent (the random map's seed
    comes from the item's index and the case's place in it), so any split of the items gives the
    same entries. ``vocab``: every object name of the benchmark (CLIP's candidate captions)."""
    from .. import metrics as M
    from ..core.errors import UnsupportedError

    meths, skipped = _applicable(names, m, methods_given, sample_steps, guidance)
    if names and not meths:
        raise UnsupportedError(f"no saliency method runs on {m.family} models (tried: {', '.join(names)})")
    kw = {"steps": sample_steps, "guidance": guidance} if m.kind == "diffusion" else {"vocab": vocab}
    out = []
    for k, item in enumerate(items):
        si = start + k
        entry = {"per": {k: [] for k in [*meths, *BASELINES]}, "extras": [], "skipped": {}}
        for j, case in enumerate(CASES[m.kind](m, item, si, seed, **kw)):
            entry["extras"].append(case.extra)
            base = None
            for name, meth in list(meths.items()):
                t0 = time.perf_counter()
                try:
                    res = meth.attribute(case.batch, target=case.target)
                except UnsupportedError as e:
                    if methods_given:
                        raise
                    entry["skipped"][name] = skipped[name] = f"UnsupportedError: {e}"
                    del meths[name]
                    continue
                dt = time.perf_counter() - t0
                if not _is_image_map(res):
                    if methods_given:
                        raise UnsupportedError(f"{name} does not return an image map (scores {tuple(res.scores.shape)} over its layout)")
                    entry["skipped"][name] = skipped[name] = "not an image map"
                    del meths[name]
                    continue
                if case.mask is None:  # diffusion: GT from the generated image
                    case.mask = colour_mask(_generated(m, case, res), case.extra["colour"])
                    case.extra["mask_pixels"] = int(case.mask.sum())
                if not case.mask.any():
                    break
                fid = (infidelity_samples, sensitivity_samples, method_explainer(m, meth, case) if case.score_fn else None)
                entry["per"][name].append({**measure(res, case, case.row, steps if case.score_fn else 0, seed, *fid), "seconds": dt})
                base = base or res
            if base is None and not names:  # baselines only: their maps need the layout a method's would have
                base = _layout_result(m, case)
                if case.mask is None:
                    case.mask = colour_mask(_generated(m, case, base), case.extra["colour"])
            if base is None or case.mask is None or not case.mask.any():
                continue
            rseed = seed + 1000 * (si + 1) + j
            for bname, fn in (("random", lambda r: M.random_map(r, seed=rseed)), ("centre", M.centre_map)):
                bmap = fn(base)
                fid = (infidelity_samples, sensitivity_samples, fixed_explainer(bmap, case.row) if case.score_fn else None)
                entry["per"][bname].append({**measure(bmap, case, case.row, steps if case.score_fn else 0, seed, *fid),
                                            "seconds": 0.0})
        entry["skipped"].update(skipped)
        out.append(entry)
    return out


def _bench_worker(adapter, items, start, **kw):
    return scene_measures(adapter, items, start=start, **kw)


WANTED = ("scene",)  # what `bench saliency --dataset` reads (other data: what it holds)


def bench_saliency(model, methods: list[str] | None = None, n: int = 8, seed: int = 1, steps: int = 16,
                   progress: bool | None = True, sample_steps: int = 20, workers: int = 1, address: str | None = None,
                   guidance: float = 1.0, load_options: dict | None = None, items: list | None = None,
                   dataset: str | None = None, infidelity_samples: int = 0, sensitivity_samples: int = 0) -> dict:
    """Run the benchmark on ``items`` (default: ``n`` held-out scenes of ``seed``); returns ``{"rows":
    {method: {metric: mean, "n": cases}}, "items", "skipped", ...}`` (see the module doc).
    ``methods``: saliency methods and/or baselines (default: every method of the model's kind;
    baselines always run). ``steps``: deletion / insertion steps (0 = skip them); ``seed`` also
    seeds the baselines' random maps and the deletion / insertion order. ``workers`` > 1 measures the
    items on Ray workers (one model replica each); the rows equal the single-process run.
    ``dataset``: the items' spec, recorded in the results. ``infidelity_samples`` /
    ``sensitivity_samples``: perturbations per map of captum's fidelity metrics (0 = skip; `bench
    saliency` asks for 16 and 4)."""
    from functools import partial

    import numpy as np

    from .. import load, saliency
    from ..core.errors import ConfigError, UnsupportedError
    from ..scale import WorkerPool

    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    if not 0 <= steps <= 1000:
        raise ConfigError(f"steps must be in 0..1000, got {steps}")
    if items is None:
        from .datasets import open_dataset

        items, dataset = open_dataset(f"{SPLIT_SPEC}:{n}:{seed}").items("scene"), f"{SPLIT_SPEC}:{n}:{seed}"
    if not items:
        raise ConfigError("no items to benchmark")
    if infidelity_samples < 0 or sensitivity_samples < 0:
        raise ConfigError("infidelity_samples and sensitivity_samples must be 0 or more")
    names = check_methods(methods) if methods else None
    m = load(model, **(load_options or {})) if isinstance(model, str) else model
    if m.kind not in CASES:
        raise UnsupportedError(f"bench saliency does not support {m.family} models")
    if names is None:
        names = [x for x in saliency.names(m.kind) if x not in saliency.WRAPPERS]
    from .scene_questions import vocabulary

    work = partial(_bench_worker, names=names, methods_given=bool(methods), seed=seed, steps=steps, sample_steps=sample_steps,
                   guidance=guidance, vocab=vocabulary(items), infidelity_samples=infidelity_samples,
                   sensitivity_samples=sensitivity_samples)
    with WorkerPool(model if isinstance(model, str) else m.name, workers, address, load_options=load_options) as pool:
        if workers <= 1:
            pool._local = m
        entries = pool.map(work, list(items), shard=max(1, -(-len(items) // max(1, 2 * workers))), desc=f"bench {m.name}",
                           progress=progress)
    skipped: dict = {}
    for e in entries:
        skipped.update(e["skipped"])
    per: dict[str, list[dict]] = {}
    extras = []
    for e in entries:
        extras += e["extras"]
        for k, v in e["per"].items():
            per.setdefault(k, []).extend(v)
    rows = {k: _mean(v) for k, v in per.items() if v and k not in skipped}
    out = {"model": model if isinstance(model, str) else m.name, "family": m.family, "dataset": dataset, "seed": seed,
           "scenes": len(items), "items": len(extras), "steps": steps, "infidelity_samples": infidelity_samples,
           "sensitivity_samples": sensitivity_samples, "rows": rows, "skipped": skipped}
    if m.kind == "diffusion":
        out["sampling"] = {"steps": sample_steps, "guidance_scale": guidance}
    if m.kind == "vlm" and extras:
        correct = [bool(e.get("correct", False)) for e in extras]
        out["answer_accuracy"] = float(np.mean(correct))
        # a faithful map of a wrong answer points at the object the model used, not the queried one
        out["pointing_game_correct_answers"] = {k: float(np.mean([v["pointing_game"] for v, c in zip(per[k], correct) if c]))
                                                for k in rows if len(per[k]) == len(extras) and any(correct)}
    return out


def _is_image_map(res) -> bool:
    """Whether ``res`` holds patch scores of an image (not e.g. text-token scores)."""
    L = res.layout
    if L is None or L.num_images <= res.image_index:
        return False
    return res.scores.ndim == 2 and res.scores.shape[1] == len(L.image_positions(res.image_index))


def _mean(rows: list[dict]) -> dict:
    import numpy as np

    out = {}
    for k in METRICS:
        v = np.array([r[k] for r in rows], np.float64)
        out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
    out["n"] = len(rows)
    return out


def table(res: dict) -> str:
    """The rows as a fixed-width text table (NaN shown as ``-``)."""
    import numpy as np

    w = max([len(k) for k in res["rows"]] + [8])
    head = f"{'method':<{w}}  " + "  ".join(f"{HEADERS[k]:>13}" for k in METRICS) + f"  {'n':>4}"
    lines = [head, "-" * len(head)]
    for name, r in res["rows"].items():
        cells = ["-" if not np.isfinite(r[k]) else f"{r[k]:.3g}" if k == "infidelity" else f"{r[k]:.3f}" for k in METRICS]
        lines.append(f"{name:<{w}}  " + "  ".join(f"{c:>13}" for c in cells) + f"  {r['n']:>4}")
    return "\n".join(lines)


__all__ = ["bench_saliency", "scene_measures", "questions", "measure", "method_explainer", "fixed_explainer", "table", "colour_mask", "check_methods", "Case", "CASES",
           "METRICS", "HEADERS", "SPLIT", "SPLIT_SPEC", "BASELINES", "WANTED"]
