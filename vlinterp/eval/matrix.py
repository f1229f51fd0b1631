"""The method x family matrix: every method run once on every tiny model, small and fast.

A cell runs one method end to end on ``tiny:<family>`` with one or two items and returns a short
note of what it measured; where the method does not apply it raises
:class:`~vlinterp.core.errors.UnsupportedError` naming why (that reason is the cell's ``✗``).
``tests/test_method_matrix.py`` runs every cell; :func:`markdown` prints the table for the README
(``python -m vlinterp.eval.matrix``). DAAM (diffusion models only) is not in the matrix.

Shapes: images are ``[H, W, 3]`` uint8; ``logits`` ``[B, T, V]``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..core.errors import UnsupportedError

# tiny models: the VLM families, then the vision encoders (CLIP / SigLIP, ViT / DINOv2)
VLMS = ("llava", "llava-next", "qwen2-vl", "qwen2.5-vl", "qwen3-vl", "llava-onevision", "gemma3", "paligemma", "internvl",
        "smolvlm")
ENCODERS = ("clip", "siglip", "vit", "dinov2")
MODELS = VLMS + ENCODERS

# methods of another model kind than any here: DAAM explains text-to-image diffusion models
NOT_IN_MATRIX = ("daam",)
PROMPT = "what is in the image?"
STEER_PROMPT = "is there a red circle in the image?"  # a yes/no question naming an object: every method acts on it
TEXTS = ["a red circle", "a blue square"]


def image(seed: int = 0, h: int = 40, w: int = 56) -> np.ndarray:
    """A random ``[h, w, 3]`` uint8 image (non-square: exercises each family's resize)."""
    return np.random.RandomState(seed).randint(0, 255, (h, w, 3), np.uint8)


def _items(n: int = 2):
    from ..core.items import Item

    return [Item(image(i), PROMPT) for i in range(n)]


# ------------------------------------------------------------------ saliency
def _saliency(name: str):
    def run(m) -> str:
        from ..saliency import get
        from ..saliency.explanation import explain

        if name == "clip_text":  # scores the text tokens, not the image: no map for explain to draw
            from ..saliency.base import check_kind

            cls = get(name)
            check_kind(cls, m)
            res = cls(m).attribute(m.prepare(images=[image()], text=TEXTS), target=[0, 1])
            if not np.isfinite(res.scores).all() or float(np.abs(res.scores).max()) == 0.0:
                raise AssertionError(f"{name} on {m.family}: empty or non-finite scores")
            return f"{res.scores.shape[1]} text tokens"

        kw = {"texts": TEXTS} if m.kind == "clip" else {}
        if name == "ig":
            kw["n_steps"] = 4
        if name == "msea":
            kw["scales"] = (0.75, 1.0)
        ex = explain(m, image(), PROMPT if m.kind == "vlm" else None, method=name, max_new_tokens=2, progress=False, **kw)
        amap = np.asarray(ex.answer_map)
        if not np.isfinite(amap).all() or float(np.abs(amap).max()) == 0.0:
            raise AssertionError(f"{name} on {m.family}: empty or non-finite map")
        return f"map {amap.shape[0]}x{amap.shape[1]}"
    return run


# ------------------------------------------------------------------- tracing
def _target(m, batch):
    if m.kind == "vlm":
        return int(m.run(batch).logits[0, -1].argmax())
    return 0


def _trace(corruption: str | None, positions: str = "groups"):
    def run(m) -> str:
        from ..tracing import make_corruption, trace

        b = m.prepare(images=[image()], text=[PROMPT] if m.kind == "vlm" else None) if m.kind == "vlm" else m.prepare(images=[image()])
        corr = None
        if corruption == "interchange":
            corr = make_corruption("interchange", image=image(7))
        elif corruption == "text-noise":
            T = b.inputs["input_ids"].shape[1] if "input_ids" in b.inputs else 2
            corr = make_corruption("text-noise", positions=[T - 2])  # a prompt token near the end
        elif corruption is not None:
            corr = make_corruption(corruption)
        L = m.num_layers("lm" if m.kind == "vlm" else "vision")
        r = trace(m, b, _target(m, b), positions=positions, layers=[L - 1], samples=1, corruption=corr)
        ie = r.arrays["ie"]
        if not np.isfinite(ie).all() or ie.size == 0:
            raise AssertionError(f"trace on {m.family}: no finite effect")
        return f"{ie.size} cells"
    return run


# ----------------------------------------------------------------------- SAE
def _sae(m) -> str:
    from ..sae import ActivationStore
    from ..sae.attach import splice_edit
    from ..sae.train import train_sae

    site = "blocks.0.resid" if m.kind == "vlm" else "vision.blocks.0.resid"
    if m.kind == "vlm":
        items = _items(2)
    else:
        from ..core.items import Item

        items = [Item(image(i), "") for i in range(2)]
    store = ActivationStore.harvest(m, site, items, batch_size=2, progress=False)
    # encoders' streams hold image tokens only: no image/text balance to draw
    sae = train_sae(store, d_sae=16, k=2, steps=3, batch_size=8, image_fraction=0.5 if m.kind == "vlm" else None, progress=False)
    b = m.prepare(images=[image()], text=[PROMPT]) if m.kind == "vlm" else m.prepare(images=[image()])
    with torch.no_grad():
        plain = _out(m.run(b))
        spliced = _out(m.run(b, edits={site: splice_edit(sae, site)}))
    if torch.equal(plain, spliced):
        raise AssertionError(f"SAE splice on {m.family} changed nothing")
    return f"{len(store.acts)} rows"


def _out(res) -> torch.Tensor:
    for k in ("logits", "logits_per_image", "image_embeds", "last_hidden_state", "pooler_output"):
        v = getattr(res, k, None)
        if isinstance(v, torch.Tensor):
            return v.float()
    raise AssertionError(f"no output tensor in {type(res).__name__}")


# ------------------------------------------------------------------- pruning
def _prune(spec: str):
    def run(m) -> str:
        from ..pruning import PrunedLM, make_pruner

        runner = PrunedLM(m)
        b = m.prepare(images=[image()], text=[PROMPT])
        pre = runner.prefill(b, make_pruner(spec), generator=torch.Generator().manual_seed(0))
        N = runner.n_image(b)
        k = pre.image_kept.shape[1]
        if not 0 < k < N:
            raise AssertionError(f"{spec} on {m.family}: kept {k} of {N} image tokens")
        runner.generate(b, make_pruner(spec), max_new_tokens=2, generator=torch.Generator().manual_seed(0))
        return f"{k}/{N} kept"
    return run


# ------------------------------------------------------------------ steering
#: each steering method's strengths, given (no calibration sweep), and SAVE's SAE kept small
STEER_OPTS = {"vcd": dict(alpha=1.0), "meandiff": dict(alpha=0.1), "iri": dict(lam=1.0),
              "save": dict(sae_steps=50, sae_features=64, sae_k=8), "probe": dict(alpha=1.0),
              "ground": dict(alpha=1.0, beta=1.0, gate=1.0)}


def _steer_fit(name: str, m, names: bool = False):
    """``name`` fitted on 8 shapes-world probe items of its own recipe (POPE questions, or scenes with
    masks for grounding; no captions, no calibration: the strengths are given), SAVE's SAE on the same items.
    ``names`` (grounding): the objects lose their colour / shape attributes and the probe reads their
    names, as on COCO categories (the yes/no rule only)."""
    from ..data.shapes import PAIRS
    from ..steering import STEERING
    from .steer import fit_items, make_config

    cls = STEERING.get(name)
    items, _, _ = fit_items(name, n=8, n_captions=0, calib=False, sae_items=False)
    if names:
        for it in items:
            for o in it.objects:
                o.attrs = {}
        return cls.fit(m, items, cls.Config(alpha=1.0, objects=tuple(f"{c} {s}" for c, s in PAIRS)))
    cfg = make_config(name, **STEER_OPTS[name])
    if name == "iri":
        # a tiny LM has two layers, so its only possible source is layer 0 and whether that layer's RR
        # comes out positive is noise (tiny Gemma 3's sliding-window layer 0 never sees the image):
        # the RR is traced on the family, the plan fixed at attention 0 -> attention 1
        rr = cls.layer_rr(m, [it for it in items if it.answer == "yes"][:2], cfg.samples)
        return cls([("attn", 0, 1.0)], [("attn", 1)], cfg, meta={"rr": {k: v.tolist() for k, v in rr.items()}})
    extra = {"sae_items": items} if name == "save" else {}
    return cls.fit(m, items, cfg, **extra)


def _steer(name: str, names: bool = False):
    """A steering method fitted on 8 items (:func:`_steer_fit`; VCD needs no fit): its edits change
    the answer logits, generation runs with them, and no hook is left."""
    def run(m) -> str:
        from ..core.hooks import count_hooks
        from ..steering import STEERING

        STEERING.get(name).check_kind(m)  # encoders: the method's own refusal, before any fit
        method = STEERING.create("vcd", **STEER_OPTS["vcd"]) if name == "vcd" else _steer_fit(name, m, names)
        b = m.prepare(images=[image()], text=[STEER_PROMPT])
        before = count_hooks(m.model)
        with torch.no_grad():
            z0 = m.run(b).logits
            with method.applied(m):
                z1 = m.run(b).logits
        out = method.generate(m, b, max_new_tokens=2)
        if count_hooks(m.model) != before:
            raise AssertionError(f"{name} on {m.family}: hooks left behind")
        d = float((z1.float() - z0.float()).abs().max())
        if not d > 0:
            raise AssertionError(f"{name} on {m.family}: the logits did not change")
        return f"max |logit change| {d:.3g}; generated {out.texts[0]!r}"
    return run


# ---------------------------------------------------------------- prototypes
def _prototypes(m) -> str:
    from ..prototypes.fit import fit

    from PIL import Image

    imgs = [Image.fromarray(image(i, 32, 32)) for i in range(4)]
    labels = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.float32)
    pm = fit(m, imgs, labels, ["a", "b"], scales=(1,), dim=8, warm_steps=2, last_steps=2, min_weight=None, progress=False)
    return f"{pm.head.prototypes.shape[0]} prototypes"


# --------------------------------------------------------------------- audit
def _audit(m) -> str:
    from ..audit import audit, shapes_items

    res = audit(m, shapes_items(1), factors=False, inside=False, progress=False)
    if not res:
        raise AssertionError(f"audit on {m.family}: empty result")
    return f"{len(res)} fields"


def methods() -> dict[str, Callable]:
    """``{column name: run(adapter) -> note}``: every method of every registry."""
    from ..pruning import PRUNERS
    from ..saliency import REGISTRY
    from ..steering import STEERING
    from ..tracing import CORRUPTIONS

    out: dict[str, Callable] = {}
    for name in REGISTRY.names():
        if name not in NOT_IN_MATRIX:
            out[f"saliency:{name}"] = _saliency(name)
    for name in CORRUPTIONS.names():
        out[f"trace:{name}"] = _trace(name)
    out["trace:tokens"] = _trace(None, "tokens")
    out["sae:harvest+splice"] = _sae
    for name in PRUNERS.names():
        spec = {"fastv": "fastv:0.5:layer=1", "info": "info:0.5:layer=1",
                "hybrid": "hybrid:0.5:early=info:layer=1:horizon=1"}.get(name, f"{name}:0.5")
        out[f"prune:{name}"] = _prune(spec)
    out["prune:hybrid(visionzip)"] = _prune("hybrid:0.5:layer=1:horizon=1")
    for name in STEERING.names():
        out[f"steer:{name}"] = _steer(name)
    out["steer:ground(names)"] = _steer("ground", names=True)  # COCO-style category names, the yes/no rule
    out["prototypes"] = _prototypes
    out["audit"] = _audit
    return out


def cell(method: str, model: str, adapter=None) -> str:
    """Run one cell: its note (what it measured), or :class:`UnsupportedError` naming why not."""
    if adapter is None:
        from ..adapters.registry import load

        adapter = load(f"tiny:{model}")
    return methods()[method](adapter)


def run_all(models=MODELS, progress: bool = True) -> dict[tuple[str, str], tuple[bool, str]]:
    """``{(method, model): (applies, note or reason)}`` over the whole matrix."""
    from tqdm.auto import tqdm

    from ..adapters.registry import load

    meths = methods()
    out = {}
    for model in tqdm(models, desc="method x family matrix", disable=not progress):
        a = load(f"tiny:{model}")
        for name, fn in meths.items():
            try:
                out[(name, model)] = (True, fn(a))
            except UnsupportedError as e:
                out[(name, model)] = (False, str(e))
    return out


def _general(reason: str, model: str) -> str:
    """A refusal's reason with the model's names and sizes generalised, so one footnote serves
    every model it applies to ("<family>'s tower has no CLS token", "split into n tiles")."""
    import re

    from ..adapters.registry import TINY

    for name in sorted({model, TINY.get(model, model)}, key=len, reverse=True):
        reason = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w.-])", "<family>", reason)
    reason = re.sub(r"\(\d+(?:, \d+)+\)", "(...)", reason)
    return re.sub(r"\b\d+ (tiles|crops|image\(s\))", r"n \1", reason)


def markdown(results: dict[tuple[str, str], tuple[bool, str]]) -> str:
    """The matrix as a Markdown table (methods down, models across; ✓, or ✗ with a footnote giving the reason)."""
    models = list(dict.fromkeys(m for _, m in results))
    meths = list(dict.fromkeys(n for n, _ in results))
    reasons: list[str] = []
    lines = ["| method | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for n in meths:
        row = []
        for m in models:
            ok, note = results.get((n, m), (False, "not run"))
            if ok:
                row.append("✓")
            else:
                note = _general(note, m)
                if note not in reasons:
                    reasons.append(note)
                row.append(f"✗{reasons.index(note) + 1}")
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    lines.append("")
    lines += [f"{i + 1}. {r}" for i, r in enumerate(reasons)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run_all()))
