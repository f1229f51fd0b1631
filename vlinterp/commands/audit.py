"""`vlinterp audit`: does the model answer the same content the same way as text, image, rendered
text and mixed?

    vlinterp audit --model shapes-llava [--dataset shapes|FILE.jsonl] [--n 64] [--seed 5] --json PATH --report DIR
                   [--image-dir DIR] [--embedder shapes-clip|none] [--no-factors] [--plant-noise SIGMA]

User files: one JSON object per line ``{"id", "context", "question", "answer", "image"?, "candidates"?}``;
malformed lines are reported by line number and skipped. ``--plant-noise`` also runs the audit with
Gaussian noise on the projector output (the image pathway) and overlays both in the report.
"""
from __future__ import annotations

import argparse
import json

from ..cli import register


def _add(p: argparse.ArgumentParser):
    p.add_argument("--model", default="shapes-llava")
    p.add_argument("--dataset", default="shapes", help="'shapes' (held-out scenes) or a JSON-lines file")
    p.add_argument("--image-dir", help="folder the image paths in --dataset are relative to")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--embedder", default="auto", help="CLIP model for image-text similarity ('auto': shapes-clip for the shapes dataset; 'none')")
    p.add_argument("--no-factors", action="store_true", help="skip the font-size / colour / resolution variants")
    p.add_argument("--plant-noise", type=float, default=0.0, help="also audit with this much noise on the projector output")
    p.add_argument("--json")
    p.add_argument("--report")


def _run(args) -> int:
    import sys

    import vlinterp as vi
    from ..audit import audit, load_items, projector_noise, shapes_items
    from ..audit.report import write_report
    from ..core.errors import PromptError
    from ..zoo.common import write_json_atomic

    m = vi.load(args.model)
    errors = []
    if args.dataset == "shapes":
        items = shapes_items(args.n, args.seed)
    else:
        items, errors = load_items(args.dataset, args.image_dir)
        for ln, msg in errors:
            print(f"skipped line {ln}: {msg}", file=sys.stderr)
        items = items[: args.n] if args.n else items
    if not items:
        raise PromptError(f"no usable items in {args.dataset}")
    emb = None
    if args.embedder == "auto" and args.dataset == "shapes":
        emb = vi.load("shapes-clip")
    elif args.embedder not in ("auto", "none"):
        emb = vi.load(args.embedder)
    res = audit(m, items, seed=args.seed, factors=not args.no_factors, embedder=emb)
    res.update(model=args.model, dataset=args.dataset, seed=args.seed, skipped_lines=[{"line": ln, "error": e} for ln, e in errors])
    planted = None
    if args.plant_noise > 0:
        planted = audit(m, items, seed=args.seed, factors=not args.no_factors, embedder=emb, edits=projector_noise(args.plant_noise))
        res["planted"] = {k: planted[k] for k in ("accuracy", "render_equivalence", "pair_agreement") if k in planted}
        res["planted"]["sigma"] = args.plant_noise
    print(f"{len(items)} items: render-equivalence {res['render_equivalence']:.3f}; accuracy "
          + ", ".join(f"{k} {v:.3f}" for k, v in res["accuracy"].items() if ":" not in k))
    print(f"OCR control: {res['ocr']['correct_rate']:.3f} read; equivalence on those "
          f"{res['ocr']['render_equivalence_on_ocr_correct']}")
    if planted is not None:
        print(f"planted noise {args.plant_noise}: render-equivalence {planted['render_equivalence']:.3f}; image accuracy "
              f"{planted['accuracy'].get('image', float('nan')):.3f}")
    if errors:
        print(f"{len(errors)} malformed line(s) skipped: {', '.join(str(ln) for ln, _ in errors)}")
    if args.json:
        write_json_atomic(args.json, res)
    if args.report:
        print(f"report: {write_report(res, args.report, f'modality audit: {args.model}', other=planted)}")
    return 0


register("audit", "modality-inconsistency audit: same content as text, image, rendered and mixed", _add, _run)
