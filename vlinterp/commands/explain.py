"""`vlinterp explain IMAGE --prompt "..." [--model shapes-llava] [--method relevancy] --out DIR`.

Answers (LLaVA: greedy generation; ViT: the top or ``--target`` class; CLIP: the best of the
``--text`` captions; diffusion: generates from ``--prompt`` and explains ``--word``), runs the
saliency method(s) and writes DIR with:

* ``overlay.png``: the answer's map over the image (OpenCV colormap); the answer's map is the
  mean over the answer's rows (LLaVA: every answer token; CLIP: the best text; ViT: the
  class; diffusion: the word);
* ``tokens/NN_<label>.png``: one overlay per answer token (per text / class / word);
* ``result.json``: answer, method, per-token patch scores, the layout grid(s) and boxes;
* ``report.html``: one self-contained file, answer tokens as buttons switching the overlay,
  a method/layer selector (``--compare`` and ``--per-layer`` add precomputed views).

``--save-heatmap PATH.npy``: the answer's ``[H, W]`` float32 map aligned to the input image.
DIR is built in a temp directory beside it and renamed at the end: on any error DIR is absent
(or the previous DIR is untouched).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field

from ..cli import register

DEFAULT_METHOD = {"vlm": "relevancy", "vit": "relevancy", "clip": "relevancy", "diffusion": "daam"}


@dataclass
class Subject:
    """What is explained: the batch, the image shown under overlays, the answer, and the
    ``calls``: one ``(labels, target)`` per ``attribute`` call (rows are concatenated)."""

    batch: object
    image: object
    answer: str
    calls: list[tuple[list[str], object]]
    answer_rows: list[int]
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------- per family
def _need_image(args, family: str):
    from ..core.errors import ImageError

    if args.image is None:
        raise ImageError(f"{family} models need an IMAGE argument")
    return args.loaded_image


def _llava(m, args) -> Subject:
    import torch

    from ..core.errors import PromptError

    img = _need_image(args, "LLaVA")
    if not args.prompt:
        raise PromptError("LLaVA models need --prompt (the question to answer)")
    b = m.prepare(images=[img], text=[args.prompt])
    g = m.generate(b, max_new_tokens=args.max_new_tokens, keep_scores=True)
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
    probs = [round(x, 6) for x in probs]
    return Subject(b, img, answer, [(labels, ids)], list(range(len(ids))),
                   {"prompt": args.prompt, "answer_tokens": labels, "answer_token_ids": ids, "answer_probs": probs})


def _vit(m, args) -> Subject:
    import torch

    from ..metrics.faithfulness import class_index

    img = _need_image(args, "ViT")
    b = m.prepare(images=[img])
    logits = m.run(b).logits[0].float()
    names = m.class_names()
    k = int(logits.argmax()) if args.target is None else class_index(m, args.target)
    p = torch.softmax(logits, -1)[k].item()
    return Subject(b, img, names[k], [([names[k]], k)], [0],
                   {"target": names[k], "class_index": k, "softmax": round(p, 6), "sigmoid": round(torch.sigmoid(logits[k]).item(), 6),
                    "score": getattr(m, "score_kind", "classifier"), "value": round(float(logits[k]), 6)})


def _clip(m, args) -> Subject:
    import torch

    from ..core.errors import PromptError

    img = _need_image(args, "CLIP")
    texts = list(args.text or ([args.prompt] if args.prompt else []))
    if not texts:
        raise PromptError("CLIP models need --text TEXT (repeat it to compare several texts)")
    b = m.prepare(images=[img], text=texts)
    logits = m.run(b).logits[0].float()
    best = int(logits.argmax())
    sigmoid = bool(getattr(m, "sigmoid_scores", False))  # SigLIP: independent image-text match probabilities
    probs = (torch.sigmoid(logits) if sigmoid else torch.softmax(logits, -1)).tolist()
    return Subject(b, img, texts[best], [(texts, list(range(len(texts))))], [best],
                   {"texts": texts, "logits": [round(float(x), 4) for x in logits], "probs": [round(p, 6) for p in probs],
                    "probs_kind": "sigmoid" if sigmoid else "softmax"})


def _diffusion(m, args) -> Subject:
    from ..core.errors import PromptError

    if not args.prompt or not args.word:
        raise PromptError("diffusion models need --prompt (what to generate) and --word (the word to explain)")
    imgs = [args.loaded_image] if args.image is not None else None
    b = m.prepare(images=imgs, text=[args.prompt], seed=args.seed)
    return Subject(b, args.loaded_image, args.word, [([args.word], args.word)], [0],
                   {"prompt": args.prompt, "word": args.word, "seed": args.seed, "steps": args.steps})


SUBJECTS = {"vlm": _llava, "vit": _vit, "clip": _clip, "diffusion": _diffusion}


# ------------------------------------------------------------------- helpers
def method(name: str, adapter, **opts):
    """``saliency.get(name)(adapter, **opts)`` with our error for unknown names."""
    from .. import saliency
    from ..core.errors import UnsupportedError

    known = list(saliency.names())
    if name not in known:
        import difflib

        near = difflib.get_close_matches(name, known, n=3)
        raise UnsupportedError(f"unknown saliency method {name!r}; " + (f"nearest: {', '.join(near)}" if near else f"known: {', '.join(known)}"))
    return saliency.get(name)(adapter, **opts)


def attribute(meth, subject: Subject, name: str):
    """Run every call of ``subject`` and stack the rows into one Result."""
    import numpy as np

    from ..core.result import Result

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


def _image_for(subject: Subject, res):
    """The image under the overlays: the input, or (diffusion without IMAGE) the generated one."""
    if subject.image is not None:
        return subject.image
    for key in ("image", "generated"):
        v = res.arrays.get(key) if key in res.arrays else res.meta.get(key)
        if v is not None:
            from ..core.images import load_image

            return load_image(v)
    H, W = res.layout.images[res.image_index].size
    import numpy as np

    return np.zeros((H, W, 3), np.uint8)


def _safe(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_")
    return s[:40] or "tok"


def _parse_layers(s: str | None):
    if s is None:
        return None
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        from ..core.errors import LayerRangeError

        raise LayerRangeError(f"--layers must be comma-separated integers, got {s!r}") from None


def _layer_opts(name: str, layers: list[int] | None) -> dict | None:
    """``{"layers": [...]}`` or ``{"layer": l}`` (one layer) as the method's options take it;
    ``None`` when it takes neither."""
    if layers is None:
        return {}
    if _takes(name, "layers"):
        return {"layers": list(layers)}
    if _takes(name, "layer") and len(layers) == 1:
        return {"layer": layers[0]}
    return None


def _views(m, subject: Subject, args, progress):
    """``[(view name, Result)]``: the main method, ``--compare`` methods, ``--per-layer`` views."""
    from ..core.errors import UnsupportedError

    main = args.method or DEFAULT_METHOD.get(m.kind, "relevancy")
    layers = _parse_layers(args.layers)
    base = {"steps": args.steps} if m.kind == "diffusion" and _takes(main, "steps") else {}
    lo = _layer_opts(main, layers) if main in _names() else {}
    if lo is None:
        raise UnsupportedError(f"--layers: method {main!r} takes no list of layers" + (" (give one layer)" if layers and len(layers) > 1 else ""))
    plan = [(main, main, {**base, **lo})]
    for name in [x.strip() for x in (args.compare or "").split(",") if x.strip() and x.strip() != main]:
        plan.append((name, name, {"steps": args.steps} if m.kind == "diffusion" and _takes(name, "steps") else {}))
    if args.per_layer:
        try:
            n = m.num_layers()
        except Exception:  # noqa: BLE001 - families without blocks in the main stream
            n = 0
        if n and main in _names() and _layer_opts(main, [0]) is None:
            print(f"vlinterp explain: note: {main} has no layer option; no per-layer views", file=sys.stderr)
            n = 0
        for l in range(n):
            plan.append((f"{main} / layer {l}", main, {**base, **_layer_opts(main, [l])}))
    out = []
    for label, name, opts in progress(plan, desc="saliency", unit="view"):
        try:
            meth = method(name, m, **opts)
        except TypeError as e:
            if label == main:
                raise UnsupportedError(f"method {name!r}: {e}") from None
            print(f"vlinterp explain: note: no view {label!r} ({e})", file=sys.stderr)
            continue
        out.append((label, attribute(meth, subject, name)))
    return main, out


def _takes(name: str, option: str) -> bool:
    """Whether method ``name`` declares ``option`` in its ``defaults``."""
    from .. import saliency

    return name in saliency.names() and option in getattr(saliency.get(name), "defaults", {})


def _names() -> list[str]:
    from .. import saliency

    return list(saliency.names())


def _answer_map(res, rows):
    import numpy as np

    from ..metrics.faithfulness import result_map

    return np.mean([result_map(res, k) for k in rows], 0).astype(np.float32)


def _aligned(hm, size):
    """Resize ``hm`` to the input file's ``(H, W)`` when loading changed the size (huge images)."""
    import numpy as np

    if size is None or hm.shape == tuple(size):
        return hm
    import cv2

    return cv2.resize(hm, (size[1], size[0]), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
            out[k] = v
        except (TypeError, ValueError):
            pass
    return out


# ------------------------------------------------------------------ command
def _add(p: argparse.ArgumentParser):
    p.add_argument("image", nargs="?", help="image file (any mode is converted to RGB); optional for diffusion")
    p.add_argument("--prompt", help="LLaVA: the question; diffusion: the prompt to generate from")
    p.add_argument("--model", default="shapes-llava", help="tiny:<family>, a zoo organism or a local model path")
    p.add_argument("--method", help="saliency method (default: relevancy; daam for diffusion)")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--save-heatmap", metavar="PATH.npy", help="also save the answer's HxW float32 map aligned to the input")
    p.add_argument("--text", action="append", help="CLIP: a text to explain (repeat for several)")
    p.add_argument("--target", help="ViT: class name or index (default: the top class)")
    p.add_argument("--word", help="diffusion: the prompt word whose heat map to show")
    p.add_argument("--compare", help="comma-separated extra methods embedded in the report")
    p.add_argument("--layers", help="comma-separated layers for the main method (methods that take layers=)")
    p.add_argument("--per-layer", action="store_true", help="add one report view per layer of the main method")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--seed", type=int, default=0, help="diffusion: noise seed")
    p.add_argument("--steps", type=int, default=20, help="diffusion: sampler steps")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--colormap", default="jet", help="OpenCV colormap: jet, turbo, inferno, viridis, hot, magma")


def explain(args) -> dict:
    """Do the work of ``vlinterp explain``; returns the result.json dict."""
    import numpy as np
    from tqdm.auto import tqdm

    import vlinterp as vi

    from ..core.errors import ImageError, UnsupportedError
    from ..core.images import load_image
    from ..metrics.faithfulness import result_map
    from ..viz.overlay import COLORMAPS, save_overlay, write_bytes_atomic
    from ..viz.report import view_from_result, write_report
    from ..zoo.common import atomic_dir

    if args.colormap not in COLORMAPS:
        raise UnsupportedError(f"unknown --colormap {args.colormap!r}; known: {', '.join(COLORMAPS)}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UnsupportedError(f"--alpha must be in [0, 1], got {args.alpha}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ImageError(f"--out {args.out!r} exists and is not a directory")
    args.loaded_image, size = None, None
    if args.image is not None:  # fail on bad images before loading any model
        args.loaded_image = load_image(args.image, name="IMAGE")
        size = (args.loaded_image.height, args.loaded_image.width)
        try:
            from PIL import Image

            with Image.open(args.image) as im:
                size = (im.height, im.width)
        except Exception:  # noqa: BLE001 - already validated by load_image
            pass
    progress = lambda it, **kw: tqdm(it, disable=None, leave=False, **kw)  # noqa: E731

    m = vi.load(args.model)
    if m.kind not in SUBJECTS:
        raise UnsupportedError(f"explain does not support {m.family} models")
    subject = SUBJECTS[m.kind](m, args)
    main, views = _views(m, subject, args, progress)
    res = views[0][1]
    image = _image_for(subject, res)
    hm = _answer_map(res, subject.answer_rows)

    with atomic_dir(args.out) as tmp:
        save_overlay(os.path.join(tmp, "overlay.png"), image, hm, alpha=args.alpha, colormap=args.colormap)
        os.makedirs(os.path.join(tmp, "tokens"))
        token_files = []
        for k, lab in enumerate(progress(res.targets, desc="overlays", unit="map")):
            name = f"tokens/{k:02d}_{_safe(lab)}.png"
            save_overlay(os.path.join(tmp, name), image, result_map(res, k), alpha=args.alpha, colormap=args.colormap)
            token_files.append(name)
        report_views = [view_from_result(label, r, image, args.alpha, args.colormap) for label, r in progress(views, desc="report", unit="view")]
        L = res.layout.to_dict()
        g = L["images"][res.image_index]
        out = {
            "model": args.model, "family": m.family, "image": args.image, "method": main,
            "answer": subject.answer, **_jsonable(subject.info),
            "targets": list(res.targets),
            "scores": np.asarray(res.scores, np.float32).round(6).tolist(),
            "answer_rows": subject.answer_rows,
            "layout": {"image_size": g["size"], "grid": [t["grid"] for t in g["tiles"]], "tiles": g["tiles"],
                       "patch_order": "tile by tile, row-major (layout.image_positions)"},
            "meta": _jsonable(res.meta),
            "views": [{"name": label, "method": r.method, "targets": list(r.targets)} for label, r in views],
            "files": {"overlay": "overlay.png", "tokens": token_files, "report": "report.html", "result": "result.json"},
        }
        info = {"model": args.model, "method": main, "answer": subject.answer}
        if args.prompt:
            info["prompt"] = args.prompt
        write_report(os.path.join(tmp, "report.html"), image, report_views, title=f"vlinterp explain: {args.prompt or subject.answer}", info=info)
        write_bytes_atomic(os.path.join(tmp, "result.json"), json.dumps(out, indent=1).encode())
        from ..viz.overlay import _umask

        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; DIR gets the usual permissions
        if args.save_heatmap:
            buf = io.BytesIO()
            np.save(buf, _aligned(hm, size))
            dest, root = os.path.abspath(args.save_heatmap), os.path.abspath(args.out)
            if dest.startswith(root + os.sep):  # inside DIR: goes into the new DIR, not the old one
                dest = os.path.join(tmp, os.path.relpath(dest, root))
            write_bytes_atomic(dest, buf.getvalue())
    return out


def _run(args) -> int:
    out = explain(args)
    print(f"{out['answer']}\nwrote {args.out}/report.html ({out['method']}, {len(out['targets'])} map(s))")
    return 0


register("explain", "answer and show where the model looked (saliency overlays, JSON, HTML report)", _add, _run)
