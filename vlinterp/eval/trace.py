"""Causal tracing of items: one item (image, prompt, target, object box/words) or a dataset of them,
one RR table per item and the RR of the means over the items (ROME).

Items are :class:`~vlinterp.core.items.Item`: ``prompt`` the question (LLaVA), ``answer`` the traced
target (``None``: the greedy answer's first token / top class), ``objects[0]`` the object whose
``box`` forms the ``object-visual`` group (without one: the top ``object_fraction`` of the target's
``saliency`` map); ``meta["object"]`` names the ``text-object`` words (default: the longest run of
shapes-world colour/shape words in the prompt). Item ``i`` of
a dataset uses noise seed ``noise_seed + i``, so a :class:`~vlinterp.scale.WorkerPool` with Ray
workers gives the same tables as one process.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import ConfigError, PromptError, UnsupportedError
from ..core.items import Item, Object


@dataclass
class TraceOptions:
    """How each item is traced (see :func:`vlinterp.tracing.trace`)."""

    components: tuple[str, ...] = ("attn", "mlp", "resid")
    positions: str = "groups"
    window: int = 1
    window_mode: str = "rome"
    stream: str | None = None
    corruption: str = "noise"
    noise: float = 3.0
    samples: int = 3
    noise_seed: int = 0
    batch_size: int = 32
    saliency: str = "relevancy"
    object_fraction: float = 0.1
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------- items
WANTED = ("present",)  # what `trace --dataset` reads: positive presence questions (other data: what it holds)


def trace_items_from(items: list[Item], seed: int = 0) -> list[Item]:
    """Items to trace from dataset items: scene items (an image without a prompt) ask the ``present``
    question about one of their objects (:func:`vlinterp.eval.scene_questions.derive`, drawn with
    ``seed``); every other item keeps its prompt, its answer as the target (``None``: the greedy
    answer) and the object it asks about (:func:`~vlinterp.eval.scene_questions.asked_object`) as
    its only object; ``meta["object"]`` names the object words."""
    from .scene_questions import asked_object, derive

    if items and all(it.prompt is None and it.objects for it in items):
        items = derive(items, ("present",), seed)
    out = []
    for it in items:
        o = asked_object(it)
        words = it.meta.get("object") or (o.name if o is not None and o.name != "object" else None)
        out.append(Item(it.image, it.prompt, it.answer, [o] if o is not None and o.box is not None else [], it.id, it.kind,
                        {**it.meta, "object": words}, it.source))
    return out


def shapes_items(n: int, seed: int, split: str = "test") -> list[Item]:
    """The positive presence questions of ``n`` held-out scenes: target ``yes``, ``objects[0]`` the
    object asked about (exact box and mask)."""
    from .datasets import open_dataset

    return trace_items_from(open_dataset(f"shapes:{split}:{n}:{seed}:present").items())


def parse_box(text: str, what: str = "--box") -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` -> four floats (:class:`ConfigError` otherwise)."""
    try:
        box = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise ConfigError(f"{what} must be x0,y0,x1,y1 in image pixels, got {text!r}")
    return box


def default_object(prompt: str) -> str | None:
    """The longest run of the shapes world's colour/shape words in ``prompt`` (the object words)."""
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


# ---------------------------------------------------------------- one item
def prepare(adapter, image, prompt, target):
    """Batch and target for one item (the greedy answer's first token / top class when None)."""
    if adapter.kind == "vlm":
        if not prompt:
            raise PromptError("LLaVA models need a prompt (the question whose answer is traced)")
        b = adapter.prepare(images=[image], text=[prompt])
        if target is None:
            last = int(b.layout.span("last", 0)[0])
            tid = int(adapter.run(b).logits[0, last].argmax())
            target = adapter.tokenizer.decode([tid]).strip() or tid
        return b, target
    if adapter.kind == "vit":
        b = adapter.prepare(images=[image])
        if target is None:
            return b, int(adapter.run(b).logits[0].argmax())
        return b, int(target) if str(target).isdigit() else target
    raise UnsupportedError(f"trace supports LLaVA and ViT models, not {adapter.family}")


def saliency_patch_mask(adapter, batch, target, method: str, fraction: float) -> np.ndarray:
    """``[rows, cols]`` bool: the top ``fraction`` of the image's patches under ``method``'s map."""
    from .. import saliency

    r = saliency.get(method)(adapter).attribute(batch, target=target)
    s = np.asarray(r.scores[0], float)
    n = len(s) if adapter.kind != "vlm" else len(batch.layout.image_positions(0))
    k = max(1, int(round(fraction * n)))
    grid = batch.layouts[adapter.main_stream].grid(0)
    mask = np.zeros(len(s), bool)
    mask[np.argsort(-s)[:k]] = True
    return mask[: grid[0] * grid[1]].reshape(grid)


def trace_item(adapter, item: Item, opts: TraceOptions, seed: int | None = None, interchange=None, progress: bool = False):
    """Trace one item; returns the :class:`~vlinterp.core.result.Result` (``meta`` adds the prompt,
    where the object mask came from and the object words). ``seed``: the noise seed (default
    ``opts.noise_seed``)."""
    from ..tracing import make_corruption, text_positions, trace

    b, target = prepare(adapter, item.image, item.prompt, item.answer)
    words = item.meta.get("object") or (default_object(item.prompt) if adapter.kind == "vlm" and item.prompt else None)
    obj_pos = text_positions(adapter, b, words) if words and adapter.kind == "vlm" else None
    stream = opts.stream or adapter.main_stream
    box = item.objects[0].box if item.objects else None
    if box is not None:
        mask, source = box, "box"
    elif stream == adapter.main_stream or adapter.kind == "vit":
        mask, source = saliency_patch_mask(adapter, b, target, opts.saliency, opts.object_fraction), f"saliency:{opts.saliency}"
    else:
        mask, source = None, "none"
    corr = make_corruption(opts.corruption, opts.noise, positions=obj_pos, image=interchange)
    r = trace(adapter, b, target, components=list(opts.components), positions=opts.positions, window=opts.window,
              window_mode=opts.window_mode, samples=opts.samples, seed=opts.noise_seed if seed is None else seed,
              object_mask=mask, object_positions=obj_pos if opts.positions == "groups" else None, stream=stream,
              corruption=corr, batch_size=opts.batch_size, progress=progress)
    r.meta.update({"prompt": item.prompt, "object_mask_source": source, "object_words": words})
    return r


# ----------------------------------------------------------------- datasets
def trace_items(adapter, items: list[Item], start: int, opts: TraceOptions) -> list[dict]:
    """Trace ``items`` (item ``start + k`` with noise seed ``opts.noise_seed + start + k``); one entry
    per item with its ``p_patch`` / ``rr`` ``[components, layers, positions]``."""
    from ..core.errors import VlinterpError

    out = []
    for k, it in enumerate(items):
        try:
            r = trace_item(adapter, it, opts, seed=int(opts.noise_seed) + start + k)
        except VlinterpError as e:  # the error names the item, wherever it ran
            try:
                named = type(e)(f"item {it.id}: {e}")
            except Exception:  # noqa: BLE001 - an error type with another constructor
                raise e from None
            raise named from e
        a = r.arrays
        out.append({"id": it.id, "prompt": it.prompt, "target": r.meta["target"],
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


def check_sweep(opts: TraceOptions) -> None:
    """What a dataset sweep cannot do, refused before any work (:class:`ConfigError`)."""
    if opts.positions != "groups":
        raise ConfigError("a dataset is traced over the seven position groups (positions 'groups'): token positions differ between items")
    if str(opts.corruption).split(":")[0] == "interchange":
        raise ConfigError("the interchange corruption needs one second image per item; not supported over a dataset")


def trace_dataset(pool, items: list[Item], opts: TraceOptions, progress: bool = False) -> dict:
    """Trace every item on ``pool`` (a :class:`~vlinterp.scale.WorkerPool`); returns ``{"meta",
    "rr_of_means" [C, L, G], "items": [per-item entries]}``."""
    from functools import partial

    check_sweep(opts)
    if not items:
        raise ConfigError("no items to trace")
    shard = max(1, -(-len(items) // max(1, 2 * pool.workers)))
    entries = pool.map(partial(trace_items, opts=opts), items, shard=shard, desc="trace (items)",
                       ids=[it.id for it in items], progress=progress)
    first = entries[0]
    for e in entries[1:]:
        if e["positions"] != first["positions"] or e["layers"] != first["layers"]:
            raise ConfigError(f"item {e['id']}: position groups or layers differ from item {first['id']}")
    meta = {"n": len(entries), "components": first["components"], "layers": first["layers"], "positions": first["positions"],
            "noise_seed": opts.noise_seed, "samples": opts.samples, "corruption": opts.corruption, "noise": opts.noise,
            "window": opts.window, "window_mode": opts.window_mode,
            "p_clean": float(np.mean([e["p_clean"] for e in entries])),
            "p_corrupt": float(np.mean([e["p_corrupt"] for e in entries]))}
    return {"meta": meta, "rr_of_means": rr_of_means(entries).tolist(), "items": entries}


__all__ = ["TraceOptions", "WANTED", "trace_items_from", "shapes_items", "parse_box", "default_object", "prepare", "saliency_patch_mask",
           "trace_item", "trace_items", "rr_of_means", "check_sweep", "trace_dataset"]
