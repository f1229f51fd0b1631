"""`vlinterp explain IMAGE --prompt "..." [--model shapes-llava] [--method relevancy] --out DIR`.

Answers (LLaVA: greedy generation; ViT: the top or ``--target`` class; CLIP: the best of the
``--text`` captions; diffusion: generates from ``--prompt`` and explains ``--word``), explains the
answer (:func:`vlinterp.explain`) and writes DIR (:func:`vlinterp.viz.write_explanation`):
``overlay.png``, ``tokens/NN_<label>.png``, ``result.json``, ``report.html``. DIR must be new,
empty or an earlier vlinterp output (your own files in it are kept); on any error it is as it was.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from ..cli import register
from . import args as A

COLORMAPS = ("jet", "turbo", "inferno", "viridis", "hot", "magma")  # vlinterp.viz.overlay.COLORMAPS


def _method_spec(text: str) -> tuple[str, dict]:
    """``name`` or ``name:k=v,...``: a registered saliency method and options it takes (checked now)."""
    from .. import saliency

    name, opts = saliency.REGISTRY.parse(text)
    saliency.config(name, **opts)
    return name, opts


method_spec = A._type(_method_spec, "method")


@contextlib.contextmanager
def warning_lines(prog: str):
    """Print each :class:`VlinterpWarning` raised inside as one ``PROG: warning: ...`` line on stderr,
    when it is raised (other warnings are shown as usual)."""
    from ..core.errors import VlinterpWarning

    with warnings.catch_warnings():  # restores the filters and showwarning on exit
        warnings.simplefilter("always", VlinterpWarning)
        show = warnings.showwarning

        def line(message, category, filename, lineno, file=None, text=None):
            if issubclass(category, VlinterpWarning):
                print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)
            else:
                show(message, category, filename, lineno, file, text)

        warnings.showwarning = line
        yield


def _add(p: argparse.ArgumentParser):
    p.add_argument("image", nargs="?", type=A.image_file, help="image file (any mode is converted to RGB); optional for diffusion")
    p.add_argument("--prompt", help="LLaVA: the question; diffusion: the prompt to generate from")
    A.add_model(p)
    A.add_load_options(p)
    p.add_argument("--method", type=method_spec, metavar="NAME[:k=v,...]",
                   help="saliency method and options, e.g. relevancy:score=logit (default: relevancy; daam for diffusion)")
    A.add_out(p)
    p.add_argument("--save-heatmap", type=A.npy_file, metavar="PATH.npy", help="also save the answer's HxW float32 map aligned to the input")
    p.add_argument("--text", action="append", help="CLIP: a text to explain (repeat for several)")
    p.add_argument("--target", help="ViT: class name or index (default: the top class)")
    p.add_argument("--word", help="diffusion: the prompt word whose heat map to show")
    p.add_argument("--compare", type=A.names_in(_registry()), metavar="M1,M2", help="extra saliency methods embedded in the report")
    p.add_argument("--layers", type=A.int_list, metavar="L1,L2", help="layers for the main method (methods with a layers/layer option)")
    p.add_argument("--per-layer", action="store_true", help="add one report view per layer of the main method")
    p.add_argument("--max-new-tokens", type=A.positive_int, default=12, help="LLaVA: longest answer generated")
    p.add_argument("--seed", type=A.integer, default=0, help="diffusion: noise seed")
    p.add_argument("--steps", type=A.positive_int, default=20, help="diffusion: sampler steps")
    p.add_argument("--alpha", type=A.ratio, default=0.5, help="overlay opacity in [0, 1]")
    p.add_argument("--colormap", default="jet", choices=COLORMAPS, help="OpenCV colormap of the overlays")


def _registry():
    from ..saliency import REGISTRY

    return REGISTRY


def run_explain(args) -> dict:
    """Do the work of ``vlinterp explain``; returns the result.json dict."""
    import vlinterp as vi

    from ..saliency.explanation import explain
    from ..viz.explanation import write_explanation

    name, opts = args.method or (None, {})
    m = vi.load(args.model, **A.load_kwargs(args))
    with warning_lines("vlinterp explain"):
        ex = explain(m, args.image, args.prompt, name, args.layers, target=args.target, texts=args.text, word=args.word,
                     compare=args.compare or (), per_layer=args.per_layer, max_new_tokens=args.max_new_tokens, seed=args.seed,
                     steps=args.steps, progress=None, **opts)
    ex.model = args.model
    return write_explanation(ex, args.out, alpha=args.alpha, colormap=args.colormap, heatmap=args.save_heatmap, progress=None)


def _run(args) -> int:
    out = run_explain(args)
    print(f"{out['answer']}\nwrote {args.out}/report.html ({out['method']}, {len(out['targets'])} map(s))")
    return 0


register("explain", "answer and show where the model looked (saliency overlays, JSON, HTML report)", _add, _run)
