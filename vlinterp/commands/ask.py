"""`vlinterp ask IMAGE --prompt "..." [--model shapes-llava] [--prune hybrid:0.25] [--format json] [--json PATH]`:
greedy answer of a vision-language model (:func:`vlinterp.eval.answer.answer`)."""
from __future__ import annotations

import argparse
import json

from ..cli import register
from . import args as A


def _prune_spec(text: str) -> str:
    from ..eval.answer import pruner_for

    from ..core.errors import UsageError

    try:
        pruner_for(text)  # name, keep and options checked now, before the model loads
    except TypeError as e:  # an option the pruner does not take
        raise UsageError(f"{text!r}: {e}") from None
    return text


def _add(p: argparse.ArgumentParser):
    p.add_argument("image", type=A.image_file, help="image file (any mode is converted to RGB)")
    p.add_argument("--prompt", required=True, help="the question")
    A.add_model(p)
    A.add_load_options(p)
    p.add_argument("--max-new-tokens", type=A.positive_int, default=12, help="longest answer generated")
    p.add_argument("--prune", type=A._type(_prune_spec, "pruning spec"), metavar="METHOD:KEEP",
                   help="answer with visual token pruning on, e.g. hybrid:0.25 (methods: random, fastv, visionzip, info, hybrid)")
    A.add_format(p, help="what to print on stdout: the answer, or JSON with each answer token's probability")
    A.add_json(p, help="also write the answer, its tokens and their probabilities as JSON to this file")


def _run(args) -> int:
    import vlinterp as vi

    from ..core.images import fit_note, load_image
    from ..core.io import write_json
    from ..eval.answer import answer
    from .explain import warning_lines

    img = load_image(args.image, name="IMAGE")
    m = vi.load(args.model, **A.load_kwargs(args))
    with warning_lines("vlinterp ask"):
        if m.kind == "vlm":
            note = fit_note(img, m.prepare(images=[img], text=[args.prompt]).layout, 0, name=f"IMAGE {args.image!r}", source=args.image)
            if note:
                import warnings

                from ..core.errors import VlinterpWarning

                warnings.warn(note, VlinterpWarning)
        res = answer(m, img, args.prompt, args.max_new_tokens, args.prune, progress=None)
    out = {"model": args.model, "prompt": args.prompt, **res, **({"prune": args.prune} if args.prune else {})}
    print(json.dumps(out, indent=2) if args.format == "json" else res["answer"])
    if args.json:
        write_json(args.json, out, flag="--json")
    return 0


register("ask", "answer a question about an image (greedy)", _add, _run)
