"""`vlinterp trace --dataset shapes|FILE.jsonl --json RR.json [--workers N]`: causal tracing over a
dataset, one RR table per item and the RR of the means over the items.

Items are traced independently (item ``i``: noise seed ``--seed + i``), in contiguous shards on a
:class:`~vlinterp.scale.WorkerPool` (this process, or ``--workers`` Ray workers with one model
each); the merged file is the same either way. Items are ``{"id", "image": PIL, "prompt",
"target", "box", "object"}``.
"""
from __future__ import annotations

import json
import sys
from functools import partial

import numpy as np

# the single-item arguments a worker needs (argparse names)
TRACE_ARGS = ("stream", "saliency", "object_fraction", "corruption", "noise", "components", "positions", "window",
              "samples", "batch_size", "seed")


def shapes_items(n: int, seed: int) -> list[dict]:
    """The positive presence questions of ``n`` held-out scenes (split ``test``, ``seed``): target
    ``yes``, ``box`` the asked object's ground-truth box, ``object`` its words."""
    from ..data.questions import positive_presence

    pairs = positive_presence("test", n, seed)
    out = []
    for s, qa in pairs:
        o = s.objects[qa.obj_index]
        out.append({"id": f"test:{seed}:{s.index}", "image": s.pil(), "prompt": qa.question, "target": "yes",
                    "box": list(o.bbox), "object": f"{o.colour} {o.shape}"})
    return out


def file_items(path: str, image_dir: str | None) -> list[dict]:
    """Items of a JSON-lines file (``image`` and ``prompt`` required for LLaVA; errors name the line)."""
    from ..core.errors import PromptError
    from ..data.jsonl import read_jsonl
    from .trace import _parse_box

    items = []
    for k, (d, img) in enumerate(read_jsonl(path, ("image",), image_dir)):
        box = d.get("box")
        if isinstance(box, str):
            box = _parse_box(box)
        elif box is not None and (not isinstance(box, list) or len(box) != 4):
            raise PromptError(f"{path}: item {d.get('id', k)}: box must be [x0, y0, x1, y1], got {box!r}")
        items.append({"id": str(d.get("id", k)), "image": img, "prompt": d.get("prompt"), "target": d.get("target"),
                      "box": box, "object": d.get("object")})
    return items


def trace_items(adapter, items: list[dict], start: int, opts: dict) -> list[dict]:
    """Trace ``items`` (item ``start + k`` with noise seed ``opts['seed'] + start + k``); one entry
    per item with its ``p_patch`` / ``rr`` ``[components, layers, positions]``."""
    from argparse import Namespace

    from .trace import trace_item

    args = Namespace(**opts)
    out = []
    for k, it in enumerate(items):
        try:
            r = trace_item(adapter, args, it["image"], it["prompt"], it["target"], it["box"], it["object"],
                           seed=int(opts["seed"]) + start + k)
        except Exception as e:  # the error names the item, wherever it ran
            try:
                named = type(e)(f"item {it['id']}: {e}")
            except Exception:  # noqa: BLE001 - an exception type with another constructor
                raise e from None
            raise named from e
        a = r.arrays
        out.append({"id": it["id"], "prompt": it["prompt"], "target": r.meta["target"],
                    "object_mask_source": r.meta["object_mask_source"], "object_words": r.meta["object_words"],
                    "positions": r.meta["positions"], "components": r.meta["components"], "layers": r.meta["layers"],
                    "p_clean": float(a["p_clean"][0]), "p_corrupt": float(np.mean(a["p_corrupt"])),
                    "p_patch": a["p_patch"].tolist(), "rr": a["rr"].tolist()})
    return out


def rr_of_means(entries: list[dict]) -> np.ndarray:
    """``(mean P_patch - mean P_corr) / (mean P_clean - mean P_corr)`` ``[C, L, G]`` (ROME), stable
    where single items have a tiny total effect."""
    pp = np.mean([e["p_patch"] for e in entries], 0)
    pc = float(np.mean([e["p_corrupt"] for e in entries]))
    te = float(np.mean([e["p_clean"] for e in entries])) - pc
    return (pp - pc) / te if abs(te) > 1e-12 else np.zeros_like(pp)


def run_trace_dataset(args) -> dict:
    from ..core.errors import PromptError
    from ..core.result import Result
    from ..scale import WorkerPool
    from ..viz.overlay import write_bytes_atomic
    from ..viz.trace_plot import plot_trace

    if args.image:
        raise PromptError("give an IMAGE or --dataset, not both")
    if args.positions != "groups":
        raise PromptError("--dataset traces the seven position groups (--positions groups): token positions differ between items")
    if args.interchange or args.corruption == "interchange":
        raise PromptError("--corruption interchange needs one second image per item; not supported with --dataset")
    items = shapes_items(args.n, args.split_seed) if args.dataset == "shapes" else file_items(args.dataset, args.image_dir)
    if not items:
        raise PromptError(f"no items in {args.dataset}")
    opts = {k: getattr(args, k) for k in TRACE_ARGS}
    workers = int(getattr(args, "workers", 1) or 1)
    with WorkerPool(args.model, workers, getattr(args, "address", None)) as pool:
        shard = max(1, -(-len(items) // max(1, 2 * workers)))
        entries = pool.map(partial(trace_items, opts=opts), items, shard=shard, desc="trace", ids=[it["id"] for it in items],
                           progress=sys.stderr.isatty())
        name = pool.local_adapter().name if workers <= 1 else args.model
    first = entries[0]
    for e in entries[1:]:
        if e["positions"] != first["positions"] or e["layers"] != first["layers"]:
            raise PromptError(f"item {e['id']}: position groups or layers differ from item {first['id']}")
    rr = rr_of_means(entries)
    meta = {"model": name, "dataset": args.dataset, "n": len(entries), "components": first["components"],
            "layers": first["layers"], "positions": first["positions"], "seed": args.seed, "samples": args.samples,
            "corruption": args.corruption, "noise": args.noise, "workers": workers,
            "p_clean": float(np.mean([e["p_clean"] for e in entries])),
            "p_corrupt": float(np.mean([e["p_corrupt"] for e in entries]))}
    out = {"meta": meta, "rr_of_means": rr.tolist(), "items": entries}
    write_bytes_atomic(args.json, json.dumps(out, indent=1).encode())
    if args.plot:
        arrays = {"rr": rr, "p_clean": np.array([meta["p_clean"]]), "p_corrupt": np.array([meta["p_corrupt"]])}
        r = Result("trace", arrays, meta={k: meta[k] for k in ("components", "layers", "positions")})
        plot_trace(r, args.plot, title=f"{name}: RR of the means over {len(entries)} items "
                                       f"(P clean {meta['p_clean']:.3f}, corrupted {meta['p_corrupt']:.3f})")
    return out


__all__ = ["run_trace_dataset", "shapes_items", "file_items", "trace_items", "rr_of_means"]
