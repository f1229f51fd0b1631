"""`vlinterp trace IMAGE --prompt "is there a red circle?" --target yes --json RR.json --plot RR.png`.

Causal tracing (:func:`vlinterp.tracing.trace`) of one answer token (LLaVA) or class (ViT):
corrupt the image (or the object words), restore each component's clean output at each layer
and position group, and write the recovery-rate table (JSON, atomically) and one heat map per
component (layers x positions, PNG).

``object-visual`` patches come from ``--box x0,y0,x1,y1`` when given, otherwise from the
``--saliency`` map of the target (its top ``--object-fraction`` of patches); ``text-object``
tokens from ``--object "red circle"`` (by default the longest run of colour/shape words of the
shapes world found in the prompt, if any).

Over a dataset: ``vlinterp trace --dataset shapes|FILE.jsonl --json RR.json [--workers N]`` traces
every item (JSON lines with ``image``, ``prompt`` and optionally ``target``, ``box``, ``object``,
``id``; ``shapes``: the positive presence questions of ``--n`` held-out scenes, seed
``--split-seed``, with the ground-truth box of the object asked about) and writes the per-item RR
tables and the RR of the means over the items (ROME). Item ``i`` uses noise seed ``--seed + i``,
so ``--workers N`` (Ray, one model per worker) writes the same file as one process.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..cli import register


def _parse_box(s: str | None):
    from ..core.errors import ShapeMismatchError

    if not s:
        return None
    try:
        box = tuple(float(v) for v in s.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise ShapeMismatchError(f"--box must be x0,y0,x1,y1 in image pixels, got {s!r}")
    return box


def _default_object(prompt: str) -> str | None:
    from ..data.shapes import COLOURS, SHAPES

    words = {*COLOURS, *SHAPES, *(s + "s" for s in SHAPES)}
    toks = prompt.lower().replace("?", " ").replace(".", " ").split()
    best: list[str] = []
    run: list[str] = []
    for t in toks + [""]:
        if t in words:
            run.append(t)
        else:
            best, run = (run if len(run) > len(best) else best), []
    return " ".join(best) or None


def _saliency_mask(m, b, target, method: str, fraction: float):
    import numpy as np

    from .explain import method as make_method

    r = make_method(method, m).attribute(b, target=target)
    s = np.asarray(r.scores[0], float)
    n = len(s) if m.kind != "vlm" else len(b.layout.image_positions(0))
    k = max(1, int(round(fraction * n)))
    grid = b.layouts[m.main_stream].grid(0)
    mask = np.zeros(len(s), bool)
    mask[np.argsort(-s)[:k]] = True
    return mask[: grid[0] * grid[1]].reshape(grid)


def _add(p: argparse.ArgumentParser):
    p.add_argument("image", nargs="?", help="image file (or --dataset)")
    p.add_argument("--dataset", help="trace every item: 'shapes' (held-out presence questions) or a JSON-lines file")
    p.add_argument("--image-dir", help="folder the image paths in --dataset are relative to (default: the file's folder)")
    p.add_argument("--n", type=int, default=32, help="--dataset shapes: number of items")
    p.add_argument("--split-seed", type=int, default=11, help="--dataset shapes: held-out split seed")
    p.add_argument("--workers", type=int, default=1, help="Ray workers for --dataset (needs vlinterp[scale])")
    p.add_argument("--address", help="existing Ray cluster for --workers (ray://host:port or auto)")
    p.add_argument("--prompt", help="LLaVA: the question")
    p.add_argument("--target", help="LLaVA: the answer token (default: the greedy answer's first token); ViT: class name or index (default: top class)")
    p.add_argument("--model", default="shapes-llava", help="tiny:<family>, a zoo organism or a local model path")
    p.add_argument("--components", default="attn,mlp,resid", help="comma-separated: attn, mlp, resid")
    p.add_argument("--positions", default="groups", choices=["groups", "tokens"], help="the seven FCCT groups or every single token")
    p.add_argument("--window", type=int, default=1, help="restore K consecutive layers around each layer")
    p.add_argument("--stream", choices=["lm", "vision"], help="LLaVA: lm (default) or the vision tower")
    p.add_argument("--corruption", default="noise", choices=["noise", "pixel-noise", "blur", "text-noise", "interchange"])
    p.add_argument("--noise", type=float, default=3.0, help="noise scale in units of the empirical std (ROME: 3)")
    p.add_argument("--samples", type=int, default=3, help="noise samples averaged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interchange", metavar="IMAGE2", help="the second image for --corruption interchange")
    p.add_argument("--box", help="object box x0,y0,x1,y1 in image pixels (the object-visual group)")
    p.add_argument("--saliency", default="relevancy", help="without --box: saliency method whose top patches form object-visual")
    p.add_argument("--object-fraction", type=float, default=0.1, help="without --box: fraction of patches taken as the object")
    p.add_argument("--object", help="the object words in the prompt (text-object group; text-noise positions)")
    p.add_argument("--batch-size", type=int, default=32, help="patched rows per forward")
    p.add_argument("--json", required=True, help="output RR table (JSON, written atomically)")
    p.add_argument("--plot", help="output heat map PNG (one panel per component)")


def _prepare(m, img, prompt, target):
    """Batch and target for one item (the greedy answer's first token / top class when None)."""
    from ..core.errors import PromptError

    if m.kind == "vlm":
        if not prompt:
            raise PromptError("LLaVA models need --prompt (the question whose answer is traced)")
        b = m.prepare(images=[img], text=[prompt])
        if target is None:
            last = int(b.layout.span("last", 0)[0])
            tid = int(m.run(b).logits[0, last].argmax())
            target = m.tokenizer.decode([tid]).strip() or tid
        return b, target
    if m.kind == "vit":
        b = m.prepare(images=[img])
        if target is None:
            return b, int(m.run(b).logits[0].argmax())
        return b, int(target) if str(target).isdigit() else target
    raise PromptError(f"trace supports LLaVA and ViT models, not {m.family}")


def trace_item(m, args, img, prompt=None, target=None, box=None, object_words=None, seed: int = 0, interchange=None,
               progress: bool = False):
    """Trace one (image, prompt, target); returns the :class:`~vlinterp.core.result.Result`."""
    from ..tracing import make_corruption, text_positions, trace

    b, target = _prepare(m, img, prompt, target)
    obj_words = object_words or (_default_object(prompt) if m.kind == "vlm" and prompt else None)
    obj_pos = text_positions(m, b, obj_words) if obj_words and m.kind == "vlm" else None
    stream = args.stream or m.main_stream
    if box is not None:
        mask, source = box, "box"
    elif stream == m.main_stream or m.kind == "vit":
        mask, source = _saliency_mask(m, b, target, args.saliency, args.object_fraction), f"saliency:{args.saliency}"
    else:
        mask, source = None, "none"
    corr = make_corruption(args.corruption, args.noise, positions=obj_pos, image=interchange)
    r = trace(m, b, target, components=[c.strip() for c in args.components.split(",") if c.strip()],
              positions=args.positions, window=args.window, samples=args.samples, seed=seed,
              object_mask=mask, object_positions=obj_pos if args.positions == "groups" else None, stream=stream,
              corruption=corr, batch_size=args.batch_size, progress=progress)
    r.meta.update({"prompt": prompt, "object_mask_source": source, "object_words": obj_words})
    return r


def run_trace(args) -> dict:
    import numpy as np

    from .. import load
    from ..core.errors import PromptError
    from ..core.images import load_image
    from ..viz.overlay import write_bytes_atomic
    from ..viz.trace_plot import plot_trace

    if args.dataset:
        from .trace_sweep import run_trace_dataset

        return run_trace_dataset(args)
    if not args.image:
        raise PromptError("trace needs an IMAGE, or --dataset")
    m = load(args.model)
    img = load_image(args.image, name="IMAGE")
    r = trace_item(m, args, img, args.prompt, args.target, _parse_box(args.box), args.object, args.seed,
                   load_image(args.interchange, name="IMAGE2") if args.interchange else None, sys.stderr.isatty())
    r.meta.update({"model": m.name, "image": args.image})
    out = r.to_json()
    write_bytes_atomic(args.json, json.dumps(out, indent=1).encode())
    if args.plot:
        plot_trace(r, args.plot, title=f"{m.name}: P({r.meta['target']}) clean {r.arrays['p_clean'][0]:.3f}, "
                                       f"corrupted {float(np.mean(r.arrays['p_corrupt'])):.3f}")
    return out


def _run(args) -> int:
    out = run_trace(args)
    meta = out["meta"]
    if args.dataset:
        rr = out["rr_of_means"]
        print(f"{meta['n']} items: P clean {meta['p_clean']:.4f}, corrupted {meta['p_corrupt']:.4f} (RR of the means)")
    else:
        rr = out["arrays"]["rr"]
        print(f"target {meta['target']!r}: P clean {out['arrays']['p_clean'][0]:.4f}, corrupted {sum(out['arrays']['p_corrupt']) / len(out['arrays']['p_corrupt']):.4f}")
    for c, comp in enumerate(meta["components"]):
        best = max(((rr[c][l][g], meta["layers"][l], meta["positions"][g]) for l in range(len(meta["layers"])) for g in range(len(meta["positions"]))), default=None)
        if best:
            print(f"  {comp:5s} best RR {best[0]:.3f} at layer {best[1]}, positions {best[2]}")
    print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot else ""))
    return 0


register("trace", "causal tracing (FCCT): recovery rate per component, layer and position group", _add, _run)
