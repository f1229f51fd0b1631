"""`vlinterp bench saliency --model M [--methods a,b] [--n N] [--seed K] [--json PATH]`.

Measures saliency methods against the shapes world's exact masks on held-out scenes
(split ``heldout``, seed ``--seed``; the organisms train on split ``train``) and prints a
table method x (pointing game, energy pointing game, deletion AUC, insertion AUC, Obj-IoU,
seconds per image), with the random and centre-prior baselines as rows. Items per family:

* LLaVA: ``what color is the {shape}?`` about every shape that occurs once in a scene; the
  target is the model's own greedy first answer token; GT = that object's mask; deletion /
  insertion score = probability of that token at ``last``.
* ViT: every present label; GT = its objects' mask; score = sigmoid (multi-label models whose
  classes are the shapes-world labels) or softmax of the class.
* CLIP: the image with one text ``a {colour} {shape}`` per object; GT = that object's mask;
  score = softmax probability of the text among all 24 colour-shape texts.
* diffusion: generate ``a {colour} {shape}`` (the first object of each scene) and take the DAAM
  map of the shape word; GT = the generated object's mask by nearest-colour thresholding; no
  deletion / insertion (a generator has no class score).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field

from ..cli import register

METRICS = ("pointing_game", "energy_pointing_game", "deletion_auc", "insertion_auc", "obj_iou", "seconds")
HEADERS = {"pointing_game": "pointing", "energy_pointing_game": "energy", "deletion_auc": "deletion AUC",
           "insertion_auc": "insertion AUC", "obj_iou": "Obj-IoU", "seconds": "s/image"}
SPLIT = "heldout"


@dataclass
class Item:
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


# ------------------------------------------------------------------ items per family
def _scenes(n: int, seed: int):
    from ..data import make_scene

    return [make_scene(SPLIT, seed, i) for i in range(n)]


def _first_answer_token(m, b) -> int:
    """The greedy first answer token, special tokens (eos, pad, <image>) excluded."""
    tok = m.tokenizer
    logits = m.run(b).logits[0, int(b.layout.span("last", 0)[-1])].float()
    logits[list(set(tok.all_special_ids))] = -float("inf")
    return int(logits.argmax())


def llava_items(m, scenes, seed):
    from ..metrics import llava_score_fn

    for s in scenes:
        for o in s.objects:
            if s.count(o.shape) != 1:
                continue
            q = f"what color is the {o.shape}?"
            b = m.prepare(images=[s.pil()], text=[q])
            tid = _first_answer_token(m, b)
            yield Item(f"{q} [{o.colour}]", b, [tid], o.mask, s.image, llava_score_fn(m, q, tid),
                       extra={"correct": m.tokenizer.decode([tid]).strip() == o.colour})


def _vit_index(m, pair, names):
    label = f"{pair[0]} {pair[1]}"
    if label in names:
        return names.index(label)
    from ..data import PAIR_INDEX

    return PAIR_INDEX[pair] % len(names)  # a model of another label set (tiny:vit): any fixed class


def vit_items(m, scenes, seed):
    import numpy as np

    from ..data import PAIRS
    from ..metrics import vit_score_fn

    names = m.class_names()
    act = "sigmoid" if set(f"{c} {s}" for c, s in PAIRS) <= set(names) else "softmax"
    for s in scenes:
        b = m.prepare(images=[s.pil()])
        for pair in dict.fromkeys(s.pairs()):
            mask = np.any([o.mask for o in s.objects if o.pair == pair], 0)
            k = _vit_index(m, pair, names)
            yield Item(f"{pair[0]} {pair[1]}", b, k, mask, s.image, vit_score_fn(m, k, act))


def clip_items(m, scenes, seed):
    import numpy as np

    from ..data import PAIRS
    from ..metrics import clip_score_fn

    everything = [f"a {c} {s}" for c, s in PAIRS]
    for s in scenes:
        pairs = list(dict.fromkeys(s.pairs()))
        texts = [f"a {c} {sh}" for c, sh in pairs]
        b = m.prepare(images=[s.pil()], text=texts)
        for j, pair in enumerate(pairs):
            mask = np.any([o.mask for o in s.objects if o.pair == pair], 0)
            yield Item(texts[j], b, j, mask, s.image, clip_score_fn(m, texts[j], everything))


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


def diffusion_items(m, scenes, seed, steps: int = 20, guidance: float = 1.0):
    for i, s in enumerate(scenes):
        o = s.objects[0]
        prompt = f"a {o.colour} {o.shape}"
        b = m.prepare(text=[prompt], seed=seed * 1000 + i)
        yield Item(prompt, b, o.shape, None, extra={"colour": o.colour, "steps": steps, "guidance": guidance})


ITEMS = {"vlm": llava_items, "vit": vit_items, "clip": clip_items, "diffusion": diffusion_items}


# ------------------------------------------------------------------ measuring
def _generated(m, item, res):
    """The image a diffusion item's map refers to: from the Result if the method kept it, else sampled."""
    import numpy as np

    from ..core.images import load_image

    for key in ("image", "generated"):
        v = res.arrays.get(key) if key in res.arrays else res.meta.get(key)
        if v is not None:
            return np.asarray(load_image(v), np.uint8)
    return np.asarray(m.sample(item.batch, steps=item.extra.get("steps", 20), guidance_scale=item.extra.get("guidance", 1.0),
                               progress=False)[0], np.uint8)


def measure(res, item, row: int, steps: int, seed: int) -> dict[str, float]:
    from .. import metrics as M

    ev = {"pointing_game": M.pointing_game(res, item.mask, row),
          "energy_pointing_game": M.energy_pointing_game(res, item.mask, row),
          "obj_iou": M.obj_iou(res, item.mask, row),
          "deletion_auc": math.nan, "insertion_auc": math.nan}
    if item.score_fn is not None and steps > 0:
        ev["deletion_auc"] = M.deletion_auc(item.image, res, item.score_fn, row, steps, seed=seed)
        ev["insertion_auc"] = M.insertion_auc(item.image, res, item.score_fn, row, steps, seed=seed)
    return ev


WRAPPERS = ("msea",)  # run another method; benchmark them by name with --methods


def _applicable(names, m, methods_arg, sample_steps: int = 20, guidance: float = 1.0):
    """Instantiate each method; a method the family does not support is skipped with its reason."""
    from .explain import _takes, method

    from ..core.errors import VlinterpError

    out, skipped = {}, {}
    for name in names:
        opts = {"steps": sample_steps} if m.kind == "diffusion" and _takes(name, "steps") else {}
        if m.kind == "diffusion" and _takes(name, "guidance_scale"):
            opts["guidance_scale"] = guidance
        try:
            out[name] = method(name, m, **opts)
        except (VlinterpError, TypeError) as e:
            if methods_arg:  # the user asked for it by name: say why it cannot run
                raise
            skipped[name] = f"{type(e).__name__}: {e}"
    return out, skipped


def scene_measures(m, scene_indices, names, methods_given: bool, seed: int = 1, steps: int = 16, sample_steps: int = 20,
                   guidance: float = 1.0) -> list[dict]:
    """Measure every method (and the random / centre baselines) on the held-out scenes with these
    indices. One entry per scene: ``{"per": {method: [measures per item]}, "extras": [...],
    "skipped": {method: reason}}``. Scenes are independent (the random map's seed comes from the
    scene index and the item's place in it), so any split of the scenes gives the same entries."""
    from .. import metrics as M
    from ..core.errors import UnsupportedError

    meths, skipped = _applicable(names, m, methods_given, sample_steps, guidance)
    if not meths:
        raise UnsupportedError(f"no saliency method runs on {m.family} models (tried: {', '.join(names)})")
    kw = {"steps": sample_steps, "guidance": guidance} if m.kind == "diffusion" else {}
    out = []
    for si in scene_indices:
        from ..data import make_scene

        entry = {"per": {k: [] for k in [*meths, "random", "centre"]}, "extras": [], "skipped": {}}
        for j, item in enumerate(ITEMS[m.kind](m, [make_scene(SPLIT, seed, si)], seed, **kw)):
            entry["extras"].append(item.extra)
            base = None
            for name, meth in list(meths.items()):
                t0 = time.perf_counter()
                try:
                    res = meth.attribute(item.batch, target=item.target)
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
                if item.mask is None:  # diffusion: GT from the generated image
                    img = _generated(m, item, res)
                    item.mask = colour_mask(img, item.extra["colour"])
                    item.extra["mask_pixels"] = int(item.mask.sum())
                if not item.mask.any():
                    break
                entry["per"][name].append({**measure(res, item, item.row, steps if item.score_fn else 0, seed), "seconds": dt})
                base = base or res
            if base is None or item.mask is None or not item.mask.any():
                continue
            rseed = seed + 1000 * (si + 1) + j
            for bname, fn in (("random", lambda r: M.random_map(r, seed=rseed)), ("centre", M.centre_map)):
                entry["per"][bname].append({**measure(fn(base), item, item.row, steps if item.score_fn else 0, seed), "seconds": 0.0})
        entry["skipped"].update(skipped)
        out.append(entry)
    return out


def _bench_worker(adapter, scene_indices, start, **kw):
    return scene_measures(adapter, scene_indices, **kw)


def bench_saliency(model: str, methods: list[str] | None = None, n: int = 8, seed: int = 1, steps: int = 16,
                   progress: bool = True, sample_steps: int = 20, workers: int = 1, address: str | None = None,
                   guidance: float = 1.0) -> dict:
    """Run the benchmark; returns ``{"rows": {method: {metric: mean}}, ...}`` (see the module doc).
    ``workers`` > 1 measures the scenes on Ray workers (one model replica each); the rows equal
    the single-process run."""
    from functools import partial

    import numpy as np

    import vlinterp as vi

    from .. import saliency
    from ..core.errors import UnsupportedError
    from ..scale import WorkerPool

    m = vi.load(model)
    if m.kind not in ITEMS:
        raise UnsupportedError(f"bench saliency does not support {m.family} models")
    names = methods or [x for x in saliency.names(m.kind) if x not in WRAPPERS]
    work = partial(_bench_worker, names=names, methods_given=bool(methods), seed=seed, steps=steps, sample_steps=sample_steps,
                   guidance=guidance)
    with WorkerPool(model, workers, address) as pool:
        if workers <= 1:
            pool._local = m
        entries = pool.map(work, list(range(n)), shard=max(1, -(-n // max(1, 2 * workers))), desc=f"bench {m.name}", progress=progress)
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
    out = {"model": model, "family": m.family, "split": SPLIT, "seed": seed, "scenes": n, "items": len(extras),
           "steps": steps, "rows": rows, "skipped": skipped}
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
        cells = ["-" if not np.isfinite(r[k]) else f"{r[k]:.3f}" for k in METRICS]
        lines.append(f"{name:<{w}}  " + "  ".join(f"{c:>13}" for c in cells) + f"  {r['n']:>4}")
    return "\n".join(lines)


# ------------------------------------------------------------------ command
def _add(p: argparse.ArgumentParser):
    p.add_argument("what", choices=sorted(BENCHES), help="what to benchmark")
    p.add_argument("--model", required=True, help="tiny:<family>, a zoo organism or a local model path")
    p.add_argument("--methods", help="comma-separated saliency methods (default: every method the family supports)")
    p.add_argument("--n", type=int, default=8, help="number of held-out scenes")
    p.add_argument("--seed", type=int, default=1, help="held-out scene seed")
    p.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (0 = skip them)")
    p.add_argument("--sample-steps", type=int, default=20, help="diffusion: sampler steps per generated image")
    p.add_argument("--guidance", type=float, default=1.0, help="diffusion: classifier-free guidance scale of the sampler")
    p.add_argument("--workers", type=int, default=1, help="Ray workers (needs vlinterp[scale]); rows equal the single-process run")
    p.add_argument("--address", help="existing Ray cluster instead of a local one")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON (atomically)")


def _saliency(args) -> int:
    from ..core.errors import PromptError
    from ..viz.overlay import write_bytes_atomic

    if args.n < 1:
        raise PromptError(f"--n must be >= 1, got {args.n}")
    if not 0 <= args.steps <= 1000:
        raise PromptError(f"--steps must be in 0..1000, got {args.steps}")
    methods = [x.strip() for x in args.methods.split(",") if x.strip()] if args.methods else None
    res = bench_saliency(args.model, methods, args.n, args.seed, args.steps, sample_steps=args.sample_steps, workers=args.workers,
                         address=args.address, guidance=args.guidance)
    print(f"bench saliency: {res['model']} ({res['family']}), {res['items']} items on {res['scenes']} held-out scenes (seed {res['seed']})")
    print(table(res))
    if res.get("answer_accuracy") is not None:
        print(f"answer accuracy: {res['answer_accuracy']:.3f}")
        pc = res.get("pointing_game_correct_answers") or {}
        if pc:
            print("pointing game on correctly answered items: " + ", ".join(f"{k} {v:.3f}" for k, v in pc.items()))
    for k, why in res["skipped"].items():
        print(f"skipped {k}: {why}")
    if args.json:
        write_bytes_atomic(args.json, json.dumps(res, indent=1, default=float).encode())
    return 0


BENCHES = {"saliency": _saliency}


def _run(args) -> int:
    return BENCHES[args.what](args)


register("bench", "benchmarks: `bench saliency` scores methods against shapes-world masks", _add, _run)
