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
    p.add_argument("--workers", type=int, default=1, help="Ray workers, each with one model replica (needs vlinterp[scale])")
    p.add_argument("--address", help="existing Ray cluster (ray://host:port or auto) instead of a local one")
    p.add_argument("--json")
    p.add_argument("--report")


def _run(args) -> int:
    import sys
    from functools import partial

    import vlinterp as vi
    from ..audit import load_items, shapes_items
    from ..audit.report import write_report
    from ..audit.run import _raw_worker, summarise
    from ..core.errors import PromptError
    from ..scale import WorkerPool
    from ..zoo.common import write_json_atomic

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
    ids = [it.id for it in items]
    with WorkerPool(args.model, args.workers, args.address) as pool:
        work = partial(_raw_worker, seed=args.seed, factors=not args.no_factors, inside=True)
        raw = pool.map(partial(work, sigma=0.0), items, shard=32, desc="audit", ids=ids)
        raw_planted = pool.map(partial(work, sigma=args.plant_noise), items, shard=32, desc="audit (planted)", ids=ids) if args.plant_noise > 0 else None
    res = summarise(raw, items, emb)
    res.update(model=args.model, dataset=args.dataset, seed=args.seed, workers=args.workers,
               skipped_lines=[{"line": ln, "error": e} for ln, e in errors])
    planted = None
    if raw_planted is not None:
        planted = summarise(raw_planted, items, emb)
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
        print(f"report: {write_report(res, args.report, f'modality audit: {args.model}', other=planted, items=items)}")
    return 0


register("audit", "modality-inconsistency audit: same content as text, image, rendered and mixed", _add, _run)
