"""Run a LLaVA-family model over every rendering of every audit item and measure how consistently it
answers the same content.

Answers: the model's choice among the item's candidates (first-token logits at the last prompt
position), or a greedy answer normalised to lowercase words when an item has no candidates.
Measures: accuracy per rendering; render-equivalence rate (an item is consistent when its
``text``, ``image``, ``rendered`` and ``mixed`` renderings, those it has, all give one answer) and
per-pair agreement; an OCR control (equivalence on the items whose rendered text the model reads);
each rendering factor's accuracy and agreement with the text answer; the correlation between an
item's consistency and the similarity of its image and text; and inside the model, per layer, the
cosine between the last-token states of the text and image renderings and a logit-lens reading of
the answer's probability per rendering.
"""
from __future__ import annotations

import contextlib
import itertools
import re

import numpy as np
import torch
from tqdm.auto import tqdm

from .render import BASE, FACTORS, renderings


def normalise(s: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", str(s).lower()))


def _correct(pred: str, answer: str) -> bool:
    p, a = normalise(pred), normalise(answer)
    return p == a or p.startswith(a + " ")


def _answers(adapter, tasks, batch_size: int, progress: bool) -> dict:
    """``tasks``: ``[(key, image or None, prompt, candidates or None)]`` -> ``{key: answer}``."""
    from ..metrics.pope import choose

    groups: dict = {}
    for t in tasks:
        groups.setdefault((t[1] is None, tuple(t[3]) if t[3] else None), []).append(t)
    out = {}
    bar = tqdm(total=len(tasks), desc="audit: answering", disable=not progress)
    for (no_image, cands), ts in groups.items():
        for i in range(0, len(ts), batch_size):
            chunk = ts[i:i + batch_size]
            if cands:
                preds = choose(adapter, [(t[1], t[2]) for t in chunk], list(cands), batch_size)
            else:
                b = adapter.prepare(images=None if no_image else [t[1] for t in chunk], text=[t[2] for t in chunk])
                preds = adapter.generate(b, max_new_tokens=8).texts
            for t, p in zip(chunk, preds):
                out[t[0]] = normalise(p)
            bar.update(len(chunk))
    bar.close()
    return out


@torch.no_grad()
def last_states(adapter, pairs, batch_size: int = 32) -> torch.Tensor:
    """Residual state at the last prompt position after every LM block: ``[n, L, D]`` for
    ``pairs`` = ``[(image or None, prompt)]`` (one modality per call)."""
    L = adapter.num_layers("lm")
    sites = [f"blocks.{i}.resid" for i in range(L)]
    out = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        b = adapter.prepare(images=None if chunk[0][0] is None else [p[0] for p in chunk], text=[p[1] for p in chunk])
        cache = adapter.run(b, capture=sites).cache
        last = [int(b.layout.span("last", r)[0]) for r in range(len(chunk))]
        out.append(torch.stack([torch.stack([cache[s][r, last[r]] for s in sites]) for r in range(len(chunk))]).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def logit_lens(adapter, states: torch.Tensor, token_ids: list[int]) -> np.ndarray:
    """Probability of ``token_ids[i]`` read from each layer's state: ``[n, L]`` (final norm + head)."""
    norm, head = adapter.module("norm"), adapter.module("logits")
    p = head(norm(states.to(adapter.device, adapter.dtype))).float().softmax(-1).cpu()
    return p[torch.arange(len(token_ids)), :, torch.tensor(token_ids)].numpy()


def _first_token(adapter, answer: str) -> int:
    tok = adapter.tokenizer
    ids = tok(" " + answer, add_special_tokens=False)["input_ids"] or tok(answer, add_special_tokens=False)["input_ids"]
    return int(ids[0])


def _ocr_ok(adapter, items, rend, batch_size: int, progress: bool) -> list[bool]:
    """Whether the model reads each item's default rendered text: shapes items, by answering "yes"
    to a presence question for every object listed; others, by transcribing (word recall >= 0.8)."""
    from ..data.questions import presence_question

    tasks, owners = [], []
    for k, it in enumerate(items):
        img = next(r.image for r in rend[k] if r.name == "rendered")
        if it.scene is not None:
            for j, o in enumerate(it.scene.objects):
                tasks.append(((k, j), img, presence_question(o.colour, o.shape), ["yes", "no"]))
        else:
            tasks.append(((k, 0), img, "what is written in the image?", None))
        owners.append(k)
    ans = _answers(adapter, tasks, batch_size, progress)
    ok = [True] * len(items)
    for (k, j), a in ans.items():
        it = items[k]
        if it.scene is not None:
            ok[k] &= a == "yes"
        else:
            words = normalise(it.context).split()
            ok[k] = bool(words) and np.mean([w in a.split() for w in words]) >= 0.8
    return ok


def _similarity(embedder, items) -> np.ndarray | None:
    """Cosine between each item's image and its context under a CLIP-family ``embedder``."""
    if embedder is None or any(it.image is None for it in items):
        return None
    sims = []
    for i in range(0, len(items), 32):
        chunk = items[i:i + 32]
        b = embedder.prepare(images=[it.image for it in chunk], text=[it.context for it in chunk])
        out = embedder.run(b)
        scale = out.raw.get("logit_scale") if isinstance(out.raw, dict) else None
        scale = float(scale) if scale is not None else 1.0
        sims += (torch.diagonal(out.logits.float()) / scale).tolist()
    return np.array(sims)


def audit_raw(adapter, items, start: int = 0, seed: int = 0, factors: bool = True, inside: bool = True, edits=None,
              batch_size: int = 32, progress: bool = False) -> list[dict]:
    """Per-item raw results (answers per rendering, OCR control, and with ``inside`` each rendering's
    per-layer logit-lens probability and last-token states) for ``items``; ``start`` is the index of
    ``items[0]`` in the whole set (kept in the results)."""
    if adapter.kind != "vlm":
        from ..core.errors import UnsupportedError

        raise UnsupportedError(f"the modality audit asks a vision-language model questions about images and text; {adapter.family} ({adapter.kind}) models do not answer questions")
    _check_text_only(adapter)
    rend = [renderings(it, seed, factors) for it in items]
    ctx = adapter.edits(edits) if edits else contextlib.nullcontext()
    with ctx:
        tasks = [((k, r.name), r.image, r.prompt, it.candidates) for k, it in enumerate(items) for r in rend[k]]
        ans = _answers(adapter, tasks, batch_size, progress)
        ocr = _ocr_ok(adapter, items, rend, batch_size, progress)
        inner = _inside(adapter, items, rend, batch_size) if inside else {}
    out = []
    for k, it in enumerate(items):
        row = {"index": start + k, "id": it.id, "answers": {r.name: ans[(k, r.name)] for r in rend[k]}, "ocr": bool(ocr[k])}
        if inside:
            row["lens"] = {n: v[k] for n, v in inner["lens"].items() if k in v}
            row["states"] = {n: v[k] for n, v in inner["states"].items() if k in v}
        out.append(row)
    return out


def _check_text_only(adapter) -> None:
    """:class:`UnsupportedError` when the model cannot be asked a question without an image (the
    audit's text renderings): PaliGemma's processor needs an image in every prompt."""
    from ..core.errors import PromptError, UnsupportedError

    try:
        adapter.prepare(images=None, text=["is there a circle?"])
    except PromptError as e:
        raise UnsupportedError(f"the modality audit asks every question as text alone too; {adapter.family} cannot take "
                               f"a prompt without an image ({e})") from e


def _raw_worker(adapter, items, start, seed, factors, inside, sigma):
    from .plant import projector_noise

    return audit_raw(adapter, items, start, seed, factors, inside, projector_noise(sigma) if sigma else None)


def audit(adapter, items, seed: int = 0, factors: bool = True, inside: bool = True, embedder=None, edits=None,
          batch_size: int = 32, progress: bool = True, raw: list[dict] | None = None) -> dict:
    """The whole audit of ``items`` (see the module docstring); ``edits`` (site -> fn) stay on for
    every forward, e.g. to plant an inconsistency. ``raw``: per-item results already computed
    (:func:`audit_raw`, e.g. by workers); only the summary is computed then. Returns a JSON-able dict."""
    if raw is None:
        raw = audit_raw(adapter, items, 0, seed, factors, inside, edits, batch_size, progress)
    return summarise(raw, items, embedder)


def summarise(raw: list[dict], items, embedder=None) -> dict:
    """Accuracy, equivalence, agreement, OCR, factors, similarity and inside curves from per-item results."""
    names = list(dict.fromkeys(n for r in raw for n in r["answers"]))
    ans = {(k, n): a for k, r in enumerate(raw) for n, a in r["answers"].items()}
    acc = {n: float(np.mean([_correct(ans[(k, n)], items[k].answer) for k in range(len(items)) if (k, n) in ans])) for n in names}
    base = [n for n in BASE if n in names]
    consistent = []
    for k in range(len(items)):
        got = [ans[(k, n)] for n in base if (k, n) in ans]
        consistent.append(len(set(got)) == 1)
    pairs = {f"{a}|{b}": float(np.mean([ans[(k, a)] == ans[(k, b)] for k in range(len(items)) if (k, a) in ans and (k, b) in ans]))
             for a, b in itertools.combinations(base, 2) if any((k, a) in ans and (k, b) in ans for k in range(len(items)))}
    fac = {}
    for f, values in FACTORS.items():
        fac[f] = {}
        for v in values:
            n = "rendered" if f"rendered:{f}={v}" not in names else f"rendered:{f}={v}"
            keys = [k for k in range(len(items)) if (k, n) in ans]
            fac[f][str(v)] = {"accuracy": float(np.mean([_correct(ans[(k, n)], items[k].answer) for k in keys])),
                              "agrees_with_text": float(np.mean([ans[(k, n)] == ans[(k, "text")] for k in keys]))}
    cons = np.array(consistent, float)
    ocr = [r["ocr"] for r in raw]
    ocr_idx = [k for k in range(len(items)) if ocr[k]]
    res = {"n_items": len(items), "renderings": names, "accuracy": acc, "render_equivalence": float(cons.mean()),
           "pair_agreement": pairs, "ocr": {"correct_rate": float(np.mean(ocr)), "n_correct": len(ocr_idx),
                                            "render_equivalence_on_ocr_correct": float(cons[ocr_idx].mean()) if ocr_idx else None},
           "factors": fac, "per_item": [{"id": it.id, "question": it.question, "consistent": bool(c), "ocr": bool(ocr[k]),
                                         "answers": {n: ans.get((k, n)) for n in base}, "answer": it.answer}
                                        for k, (it, c) in enumerate(zip(items, consistent))]}
    inner = _inside_summary(raw) if raw and "states" in raw[0] else None
    sim = _similarity(embedder, items)
    source = "embedder"
    if sim is None and inner is not None and "text_image_final_cos" in inner:
        sim, source = np.array(inner.pop("text_image_final_cos")), "model final-layer last-token cosine (text vs image)"
    elif inner is not None:
        inner.pop("text_image_final_cos", None)
    if sim is not None and len(set(cons.tolist())) > 1:
        res["similarity_vs_consistency"] = {"source": source, "pearson": float(np.corrcoef(sim, cons)[0, 1]),
                                            "mean_sim_consistent": float(sim[cons == 1].mean()), "mean_sim_inconsistent": float(sim[cons == 0].mean())}
    elif sim is not None:
        res["similarity_vs_consistency"] = {"source": source, "pearson": None, "note": "every item had the same consistency"}
    if inner is not None:
        res["inside"] = inner
    return res


def _inside_summary(raw: list[dict]) -> dict:
    out: dict = {}
    for name in ("text", "image", "rendered", "mixed"):
        vals = [r["lens"][name] for r in raw if name in r["lens"]]
        if vals:
            out.setdefault("logit_lens", {})[name] = np.mean(vals, 0).tolist()
    for other in ("image", "rendered", "mixed"):
        common = [r for r in raw if "text" in r["states"] and other in r["states"]]
        if common:
            a = torch.stack([torch.as_tensor(r["states"]["text"]) for r in common])
            b = torch.stack([torch.as_tensor(r["states"][other]) for r in common])
            cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)  # [n, L]
            out.setdefault("layer_cosine", {})[f"text|{other}"] = cos.mean(0).tolist()
            if other == "image" and len(common) == len(raw):
                out["text_image_final_cos"] = cos[:, -1].tolist()
    return out


def _inside(adapter, items, rend, batch_size: int) -> dict:
    """Per item and base rendering: last-token states ``[L, D]`` and logit-lens answer probability ``[L]``."""
    states: dict = {}
    lens: dict = {}
    for name in ("text", "image", "rendered", "mixed"):
        idx = [k for k in range(len(items)) if any(r.name == name for r in rend[k])]
        if not idx:
            continue
        pairs = [next((r.image, r.prompt) for r in rend[k] if r.name == name) for k in idx]
        st = last_states(adapter, pairs, batch_size)
        lp = logit_lens(adapter, st, [_first_token(adapter, items[k].answer) for k in idx])
        states[name] = {k: st[i] for i, k in enumerate(idx)}
        lens[name] = {k: lp[i].tolist() for i, k in enumerate(idx)}
    return {"states": states, "lens": lens}


__all__ = ["audit", "audit_raw", "summarise", "normalise", "last_states", "logit_lens"]
