"""`vlinterp trace IMAGE --prompt "is there a red circle?" --target yes --json RR.json --plot RR.png`.

Causal tracing (:func:`vlinterp.tracing.trace`) of one answer token (LLaVA) or class (ViT):
corrupt the image (or the object words), restore each component's clean output at each layer
and position group, and write the recovery-rate table (JSON, atomically) and one heat map per
component (layers x positions, PNG).

``object-visual`` patches come from ``--box x0,y0,x1,y1`` when given, otherwise from the
``--saliency`` map of the target (its top ``--object-fraction`` of patches); ``text-object``
tokens from ``--object "red circle"`` (by default the longest run of colour/shape words of the
shapes world found in the prompt, if any).

Over a dataset: ``vlinterp trace --dataset SPEC --json RR.json [--workers N]`` traces every item
and writes the per-item RR tables and the RR of the means over the items (ROME). ``shapes``: the
positive presence questions (kind ``present``) of ``--n`` held-out scenes drawn with ``--seed``, with
the ground-truth box of the object asked about; POPE / JSON lines / HF: the questions they hold
(``target``/``answer`` the traced token, the box of the object asked about or ``box``; JSON lines in
the older ``{"image", "prompt", "target", "box", "object", "id"}`` form read the same); COCO scenes:
one ``present`` question per image (:mod:`vlinterp.eval.scene_questions`). A malformed record stops
the command with ``file:line``. Item ``i`` uses noise seed ``--noise-seed + i``, so ``--workers N``
writes the same file as one process.

``--knockout FROM:TO`` (attention knockout), ``--method dla`` (direct logit attribution),
``--method relp`` (relevance patching) and ``--method parts`` (the last token's attention output
restored by key group) run the other tracing methods (:mod:`.trace_flow`).
"""
from __future__ import annotations

import argparse
import sys

from ..cli import register
from . import args as A
from .dataset_args import add_dataset

COMPONENTS = ("attn", "mlp", "resid")
SHAPES_N, SHAPES_SEED = 32, 11  # --dataset shapes: held-out scenes and their seed


def _corruption(text: str) -> str:
    """A corruption spec (``noise``, ``blur:sigma=2`` ...), name and options checked."""
    from ..tracing.corrupt import CORRUPTIONS

    name, opts = CORRUPTIONS.parse(text)
    CORRUPTIONS.config(name, **opts)
    return str(text)


def _box(text: str):
    from ..eval.trace import parse_box

    return parse_box(text)


def _saliency(text: str) -> str:
    from .. import saliency

    known = list(saliency.names())
    if text not in known:
        from ..core.errors import UnknownNameError

        raise UnknownNameError("saliency method", text, known)
    return text


def _method(text: str) -> str:
    """A tracing method spec (``relp``, ``knockout:window=2`` ...), name and options checked."""
    from ..tracing.methods import TRACING_METHODS

    name, opts = TRACING_METHODS.parse(text)
    TRACING_METHODS.config(name, **opts)
    return str(text)


def _edges(text: str) -> list[str]:
    from ..tracing.knockout import parse_edges

    return [f"{a}:{b}" for a, b in parse_edges(text)]


def _add(p: argparse.ArgumentParser):
    p.add_argument("image", nargs="?", type=A.image_file, metavar="IMAGE", help="image file (or --dataset)")
    add_dataset(p, None, SHAPES_N, SHAPES_SEED, "trace every item of this dataset ('shapes': held-out presence questions)")
    p.add_argument("--image-dir", type=A.existing_dir, metavar="DIR",
                   help="folder the image paths in --dataset are relative to (default: the file's folder)")
    A.add_workers(p)
    p.add_argument("--prompt", help="LLaVA: the question")
    p.add_argument("--target", help="LLaVA: the answer token (default: the greedy answer's first token); ViT: class name or index (default: top class)")
    A.add_model(p)
    A.add_load_options(p)
    p.add_argument("--components", type=A.names_in(COMPONENTS, "trace component"), default=list(COMPONENTS), metavar="LIST",
                   help="comma-separated: attn, mlp, resid")
    p.add_argument("--positions", default="groups", choices=["groups", "tokens"], help="the seven FCCT groups or every single token")
    p.add_argument("--window", type=A.positive_int, default=1, help="restore this many consecutive layers around each layer")
    p.add_argument("--window-mode", default="rome", choices=["rome", "slide"],
                   help="rome: windows are cut short at the first/last layers (ROME); slide: they slide inward to keep --window layers")
    p.add_argument("--stream", choices=["lm", "vision"], help="LLaVA: lm (default) or the vision tower")
    p.add_argument("--corruption", type=A._type(_corruption, "corruption"), default="noise", metavar="SPEC",
                   help="noise, pixel-noise, blur, text-noise or interchange, options after a colon (blur:sigma=2)")
    p.add_argument("--noise", type=A.positive_float, default=3.0, help="noise scale in units of the empirical std (ROME: 3)")
    p.add_argument("--samples", type=A.positive_int, default=3, help="noise samples averaged")
    p.add_argument("--noise-seed", type=A.integer, default=0, help="seed of the noise samples (item i of a dataset: this + i)")
    p.add_argument("--interchange", type=A.image_file, metavar="IMAGE2", help="the second image for --corruption interchange")
    p.add_argument("--box", type=A._type(_box, "box"), metavar="X0,Y0,X1,Y1", help="object box in image pixels (the object-visual group)")
    p.add_argument("--saliency", type=A._type(_saliency, "saliency method"), default="relevancy", metavar="METHOD",
                   help="without --box: saliency method whose top patches form object-visual")
    p.add_argument("--object-fraction", type=A.open_ratio, default=0.1, help="without --box: fraction of patches taken as the object")
    p.add_argument("--object", metavar="WORDS", help="the object words in the prompt (text-object group; text-noise positions)")
    p.add_argument("--batch-size", type=A.positive_int, default=32, help="patched rows per forward")
    A.add_json(p, "output RR table (JSON, written atomically)", required=True)
    p.add_argument("--plot", type=A.png_file, metavar="PATH", help="output heat map PNG (one panel per component)")
    p.add_argument("--method", type=A._type(_method, "tracing method"), default="causal", metavar="SPEC",
                   help="causal (activation patching), knockout, dla (direct logit attribution), relp (relevance "
                        "patching) or parts (the last token's attention by the keys it reads); options after a colon "
                        "(relp:rules=none)")
    p.add_argument("--knockout", type=A._type(_edges, "knockout edges"), metavar="FROM:TO",
                   help="attention knockout of these edges (comma-separated FROM:TO; groups: image, object, question, "
                        "text, last and the FCCT groups) over --window layers around each layer")
    p.add_argument("--foil", metavar="TOKEN", help="--method dla: the token the target's logit is compared with (default: the runner-up)")


def options(args):
    from ..eval.trace import TraceOptions

    return TraceOptions(components=tuple(args.components), positions=args.positions, window=args.window, window_mode=args.window_mode,
                        stream=args.stream, corruption=args.corruption, noise=args.noise, samples=args.samples,
                        noise_seed=args.noise_seed, batch_size=args.batch_size, saliency=args.saliency,
                        object_fraction=args.object_fraction)


def _check(args) -> None:
    """Combinations that cannot work, refused before any work."""
    from ..core.errors import UsageError

    kind = args.corruption.split(":")[0]
    if getattr(args, "foil", None) is not None:
        raise UsageError("--foil is for --method dla")
    if args.dataset:
        from ..eval.trace import check_sweep

        if args.image:
            raise UsageError("give an IMAGE or --dataset, not both")
        for flag in ("prompt", "target", "box", "object", "interchange"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} is for one IMAGE; with --dataset each item gives its own")
        check_sweep(options(args))
        return
    if not args.image:
        raise UsageError("trace needs an IMAGE, or --dataset")
    if args.n is not None or args.seed is not None or args.image_dir:
        raise UsageError("--n, --seed and --image-dir are for --dataset")
    if kind == "interchange" and not args.interchange:
        raise UsageError("--corruption interchange needs --interchange IMAGE2")
    if args.interchange and kind != "interchange":
        raise UsageError("--interchange IMAGE2 is used by --corruption interchange only")
    if kind == "text-noise" and not args.object:
        from ..eval.trace import default_object

        if not (args.prompt and default_object(args.prompt)):
            raise UsageError("--corruption text-noise needs the object words: give --object WORDS")


def _items(args):
    """``(items, info)``: the items to trace, read and checked before any model loads."""
    from ..eval.trace import WANTED, trace_items_from
    from .dataset_args import read

    items, info = read(args, WANTED, SHAPES_N, SHAPES_SEED)
    return trace_items_from(items, info["seed"] or 0), info


def run_trace(args) -> dict:
    """Trace one image or a dataset; write ``--json`` (and ``--plot``); return the JSON written."""
    import numpy as np

    from .. import load
    from ..core.images import load_image
    from ..core.io import write_json
    from ..viz.trace_plot import plot_trace

    _check(args)
    opts = options(args)
    if args.dataset:
        from ..core.result import Result
        from ..eval.trace import trace_dataset
        from ..scale import WorkerPool

        items, info = _items(args)  # read (and checked) before the model loads
        with WorkerPool(args.model, args.workers, args.address, load_options=A.load_kwargs(args)) as pool:
            out = trace_dataset(pool, items, opts, progress=sys.stderr.isatty())
            name = pool.local_adapter().name if args.workers <= 1 else args.model
        meta = out["meta"]
        meta.update(model=name, dataset=info["dataset"], kinds=info["kinds"], seed=info["seed"], workers=args.workers)
        write_json(args.json, out, flag="--json")
        if args.plot:
            arrays = {"rr": np.asarray(out["rr_of_means"]), "p_clean": np.array([meta["p_clean"]]), "p_corrupt": np.array([meta["p_corrupt"]])}
            r = Result("trace", arrays, meta={k: meta[k] for k in ("components", "layers", "positions")})
            plot_trace(r, args.plot, title=f"{name}: RR of the means over {meta['n']} items "
                                           f"(P clean {meta['p_clean']:.3f}, corrupted {meta['p_corrupt']:.3f})")
        return out
    from ..core.items import Item, Object
    from ..eval.trace import trace_item

    img = load_image(args.image, name="IMAGE")
    item = Item(img, args.prompt, args.target, [Object(args.object or "object", args.box)] if args.box else [], args.image,
                "trace", {"object": args.object})
    m = load(args.model, **A.load_kwargs(args))
    r = trace_item(m, item, opts, interchange=load_image(args.interchange, name="IMAGE2") if args.interchange else None,
                   progress=sys.stderr.isatty())
    r.meta.update({"model": m.name, "image": args.image})
    out = r.to_json()
    write_json(args.json, out, flag="--json")
    if args.plot:
        plot_trace(r, args.plot, title=f"{m.name}: P({r.meta['target']}) clean {r.arrays['p_clean'][0]:.3f}, "
                                       f"corrupted {float(np.mean(r.arrays['p_corrupt'])):.3f}")
    return out


def _run(args) -> int:
    from .trace_flow import method_name

    if method_name(args) != "causal":
        from .trace_flow import run

        return run(args)
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
