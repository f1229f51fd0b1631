"""The saliency benchmark: methods against the shapes world's exact masks (``vlinterp bench saliency``).

Held-out scenes (split ``heldout``, seed ``seed``; the organisms train on split ``train``) become
items (:mod:`vlinterp.eval.shapes`); each method's map of each item is scored with
:mod:`vlinterp.metrics` (pointing game, energy pointing game, deletion / insertion AUC with a blur
baseline, Obj-IoU) and timed, next to the ``random`` and ``centre`` baseline maps. Items per kind:

* vlm: ``what color is the {shape}?`` about every shape that occurs once (:func:`shapes.colour_items`);
  the target is the model's own greedy first answer token; GT = that object's mask; deletion /
  insertion score = probability of that token at ``last``.
* vit: every present label (:func:`shapes.label_items`); GT = its objects' mask; score = sigmoid
  (multi-label models whose classes are the shapes-world labels) or softmax of the class.
* clip: the image with one caption ``a {colour} {shape}`` per pair (:func:`shapes.caption_items`);
  GT = that pair's mask; score = softmax probability of the caption among all 24 captions.
* diffusion: generate ``a {colour} {shape}`` (the first object, :func:`shapes.generation_item`)
  and take the map of the shape word; GT = the generated object's mask by nearest-colour
  thresholding; no deletion / insertion / fidelity (a generator has no class score).

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


def llava_cases(m, scene, seed: int, **_):
    import numpy as np

    from ..metrics import llava_score_fn

    for it in shapes.colour_items(scene):
        b = m.prepare(images=[it.image], text=[it.prompt])
        tid = _first_answer_token(m, b)
        yield Case(f"{it.prompt} [{it.answer}]", b, [tid], it.objects[it.meta["obj_index"]].mask, np.asarray(it.image),
                   llava_score_fn(m, it.prompt, tid), extra={"correct": m.tokenizer.decode([tid]).strip() == it.answer})


def _vit_index(m, label: str, names) -> int:
    if label in names:
        return names.index(label)
    from ..data import PAIR_INDEX

    return PAIR_INDEX[tuple(label.split(" "))] % len(names)  # a model of another label set (tiny:vit): any fixed class


def vit_cases(m, scene, seed: int, **_):
    import numpy as np

    from ..data import PAIRS
    from ..metrics import vit_score_fn

    names = m.class_names()
    act = "sigmoid" if set(shapes.pair_name(p) for p in PAIRS) <= set(names) else "softmax"
    b = None
    for it in shapes.label_items(scene):
        b = b or m.prepare(images=[it.image])  # one batch per scene
        k = _vit_index(m, it.meta["label"], names)
        yield Case(it.meta["label"], b, k, shapes.label_mask(it), np.asarray(it.image), vit_score_fn(m, k, act))


def clip_cases(m, scene, seed: int, **_):
    import numpy as np

    from ..metrics import clip_score_fn

    b = None
    for it in shapes.caption_items(scene):
        texts = it.meta["texts"]
        b = b or m.prepare(images=[it.image], text=texts)
        yield Case(it.prompt, b, texts.index(it.prompt), shapes.label_mask(it), np.asarray(it.image),
                   clip_score_fn(m, it.prompt, it.meta["candidates"]))


def diffusion_cases(m, scene, seed: int, steps: int = 20, guidance: float = 1.0):
    # every scene is sampled with noise seed seed * 1000 (as the benchmark always has: its numbers stay comparable)
    it = shapes.generation_item(scene, seed * 1000)
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


def scene_measures(m, scene_indices, names, methods_given: bool, seed: int = 1, steps: int = 16, sample_steps: int = 20,
                   guidance: float = 1.0, progress=None, infidelity_samples: int = 0, sensitivity_samples: int = 0) -> list[dict]:
    """Measure every method (and the random / centre baselines) on the held-out scenes with these
    indices. One entry per scene: ``{"per": {method: [measures per case]}, "extras": [...],
    "skipped": {method: reason}}``. Scenes are independent (the random map's seed comes from the
    scene index and the case's place in it), so any split of the scenes gives the same entries."""
    from .. import metrics as M
    from ..core.errors import UnsupportedError
    from ..data import make_scene

    meths, skipped = _applicable(names, m, methods_given, sample_steps, guidance)
    if names and not meths:
        raise UnsupportedError(f"no saliency method runs on {m.family} models (tried: {', '.join(names)})")
    kw = {"steps": sample_steps, "guidance": guidance} if m.kind == "diffusion" else {}
    out = []
    for si in scene_indices:
        entry = {"per": {k: [] for k in [*meths, *BASELINES]}, "extras": [], "skipped": {}}
        for j, case in enumerate(CASES[m.kind](m, make_scene(SPLIT, seed, si), seed, **kw)):
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


def _bench_worker(adapter, scene_indices, start, **kw):
    return scene_measures(adapter, scene_indices, **kw)


def bench_saliency(model, methods: list[str] | None = None, n: int = 8, seed: int = 1, steps: int = 16,
                   progress: bool | None = True, sample_steps: int = 20, workers: int = 1, address: str | None = None,
                   guidance: float = 1.0, load_options: dict | None = None, infidelity_samples: int = 0,
                   sensitivity_samples: int = 0) -> dict:
    """Run the benchmark on ``n`` held-out scenes of ``seed``; returns ``{"rows": {method: {metric:
    mean, "n": cases}}, "items", "skipped", ...}`` (see the module doc). ``methods``: saliency
    methods and/or baselines (default: every method of the model's kind; baselines always run).
    ``steps``: deletion / insertion steps (0 = skip them); ``infidelity_samples`` /
    ``sensitivity_samples``: perturbations per map of the fidelity metrics (0 = skip; `bench saliency`
    asks for 16 and 4). ``workers`` > 1 measures the scenes on
    Ray workers (one model replica each); the rows equal the single-process run."""
    from functools import partial

    import numpy as np

    from .. import saliency
    from ..adapters.registry import load
    from ..core.errors import ConfigError, UnsupportedError
    from ..scale import WorkerPool

    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    if not 0 <= steps <= 1000:
        raise ConfigError(f"steps must be in 0..1000, got {steps}")
    if infidelity_samples < 0 or sensitivity_samples < 0:
        raise ConfigError("infidelity_samples and sensitivity_samples must be 0 or more")
    names = check_methods(methods) if methods else None
    m = load(model, **(load_options or {})) if isinstance(model, str) else model
    if m.kind not in CASES:
        raise UnsupportedError(f"bench saliency does not support {m.family} models")
    if names is None:
        names = [x for x in saliency.names(m.kind) if x not in saliency.WRAPPERS]
    work = partial(_bench_worker, names=names, methods_given=bool(methods), seed=seed, steps=steps, sample_steps=sample_steps,
                   guidance=guidance, infidelity_samples=infidelity_samples, sensitivity_samples=sensitivity_samples)
    with WorkerPool(model if isinstance(model, str) else m.name, workers, address) as pool:
        if workers <= 1:
            pool._local = m
        entries = pool.map(work, list(range(n)), shard=max(1, -(-n // max(1, 2 * workers))), desc=f"bench {m.name}",
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
    out = {"model": model if isinstance(model, str) else m.name, "family": m.family, "split": SPLIT, "seed": seed, "scenes": n,
           "items": len(extras), "steps": steps, "infidelity_samples": infidelity_samples,
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


__all__ = ["bench_saliency", "scene_measures", "measure", "method_explainer", "fixed_explainer", "table", "colour_mask", "check_methods", "Case", "CASES",
           "METRICS", "HEADERS", "SPLIT", "BASELINES"]
