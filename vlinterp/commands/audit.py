"""`vlinterp audit`: does the model answer the same content the same way as text, image, rendered
text and mixed?

    vlinterp audit --model shapes-llava [--dataset SPEC] [--n 64] [--seed 5] [--json PATH] [--out DIR]
                   [--image-dir DIR] [--embedder shapes-clip|none] [--no-factors] [--plant-noise SIGMA]

Data (:mod:`vlinterp.eval.datasets`): ``shapes`` (kind ``audit``: one question per held-out scene),
POPE / JSON lines / HF questions, COCO scenes (one question each). A user's JSON lines
``{"id", "context", "question", "answer", "image"?, "candidates"?}`` give the context in words;
shapes scenes have it from their objects. A malformed record stops the command with ``file:line``. ``--json PATH`` writes
the table, ``--out DIR`` the report directory (plots, ``audit.json``, ``report.html``).
``--plant-noise`` also runs the audit with Gaussian noise on the projector output (the image
pathway) and overlays both in the report.
"""
from __future__ import annotations

import argparse

from ..cli import register
from . import args as A
from .dataset_args import add_dataset

SHAPES_N, SHAPES_SEED = 64, 5


def _add(p: argparse.ArgumentParser):
    A.add_model(p)
    A.add_load_options(p)
    add_dataset(p, "shapes", SHAPES_N, SHAPES_SEED, "the items to audit")
    p.add_argument("--image-dir", type=A.existing_dir, metavar="DIR", help="folder the image paths in --dataset are relative to")
    p.add_argument("--embedder", default="auto", metavar="M",
                   help="CLIP model for image-text similarity ('auto': shapes-clip for shapes-world items; 'none')")
    p.add_argument("--no-factors", action="store_true", help="skip the font-size / colour / resolution variants")
    p.add_argument("--plant-noise", type=A.nonneg_float, default=0.0, help="also audit with this much noise on the projector output")
    A.add_workers(p)
    A.add_json(p, "write the audit table as JSON to this file")
    A.add_out(p, "report directory (plots, audit.json, report.html)", required=False)


def _items(args):
    """``(audit items, info)``, read and checked before any model loads."""
    from ..audit.items import WANTED, audit_items_from
    from .dataset_args import read

    items, info = read(args, WANTED, SHAPES_N, SHAPES_SEED)
    return audit_items_from(items, info["seed"] or 0), info


def _run(args) -> int:
    import os
    from functools import partial

    import vlinterp as vi
    from ..audit.report import write_report
    from ..audit.run import _raw_worker, summarise
    from ..core.io import output_dir, write_json
    from ..scale import WorkerPool

    items, info = _items(args)  # read (and checked) before any model loads
    seed = info["seed"] if info["seed"] is not None else SHAPES_SEED  # the renderings' seed
    emb = None
    if args.embedder == "auto" and all(it.scene is not None for it in items):
        emb = vi.load("shapes-clip", **A.load_kwargs(args))
    elif args.embedder not in ("auto", "none"):
        emb = vi.load(args.embedder, **A.load_kwargs(args))
    ids = [it.id for it in items]
    with WorkerPool(args.model, args.workers, args.address, load_options=A.load_kwargs(args)) as pool:
        work = partial(_raw_worker, seed=seed, factors=not args.no_factors, inside=True)
        raw = pool.map(partial(work, sigma=0.0), items, shard=32, desc="audit", ids=ids)
        raw_planted = pool.map(partial(work, sigma=args.plant_noise), items, shard=32, desc="audit (planted)", ids=ids) if args.plant_noise > 0 else None
    res = summarise(raw, items, emb)
    res.update(model=args.model, dataset=info["dataset"], kinds=info["kinds"], seed=seed, workers=args.workers)
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
    if args.json:
        write_json(args.json, res, flag="--json")
    if args.out:
        with output_dir(args.out) as tmp:
            write_report(res, tmp, f"modality audit: {args.model}", other=planted, items=items)
        print(f"report: {os.path.join(args.out, 'report.html')}")
    return 0


register("audit", "modality-inconsistency audit: same content as text, image, rendered and mixed", _add, _run)
