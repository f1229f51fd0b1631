"""Pruning benchmark: accuracy retention, prefill latency and FLOPs ratios, side by side in one run,
and the information curve's probe items.

Items are held-out shapes questions (presence with adversarial negatives, colour, count), or the
questions of any dataset (:func:`bench_items`: POPE / JSON lines / HF questions with candidates,
COCO scenes asked presence questions); each answer is the model's choice among the candidates'
first tokens at the last prompt position.
Retention = accuracy with pruning / accuracy unpruned (pooled and per question kind). Latency:
median over ``repeats`` of the prefill of one batch, every configuration timed in turn inside
each repeat (so drift hits all alike); ``lm`` is the language-model prefill (what pruning acts on),
``total`` adds the vision tower, projector and embedding.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.items import Item
from ..pruning import PrunedLM, make_pruner
from ..pruning.flops import lm_flops, tower_flops
from ..pruning.information import horizon_for as _measure_horizon
from ..pruning.information import known_horizon
from . import shapes

KINDS = ("presence", "colour", "count")
WANTED = ("pope-adversarial", "colour-count")  # what `prune bench --dataset` reads (other data: what it holds)
PROBE_WANTED = ("probe",)                       # what `prune info --dataset` reads


def eval_items(split: str = "test", n: int = 128, seed: int = 21) -> list[Item]:
    """``n`` POPE-adversarial presence items (half yes), then per scene of ``n`` one colour item
    (when a shape occurs once) and one count item; ``meta["candidates"]`` the answer words."""
    return shapes.pope(split, n, seed, "adversarial") + shapes.colour_count(split, n, seed)


def bench_items(items: list[Item], seed: int = 0) -> list[Item]:
    """Benchmark questions from dataset items: scene items (no prompt) are asked a presence "yes"
    and "no" question, and on shapes scenes a colour and a count question
    (:func:`vlinterp.eval.scene_questions.derive`, drawn with ``seed``); questions keep their
    ``meta["candidates"]`` (yes/no questions without them get ``("yes", "no")``). A question without
    an answer or candidates is a :class:`DataError` naming it."""
    from ..core.errors import DataError
    from .scene_questions import derive

    if items and all(it.prompt is None and it.objects for it in items):
        items = derive(items, ("presence", "colour", "count"), seed)
    for it in items:
        if not it.prompt or it.answer is None:
            raise DataError(f"{it.where()}: a benchmark question needs a prompt and its answer")
        if not it.meta.get("candidates"):
            if str(it.answer).lower() not in ("yes", "no"):
                raise DataError(f"{it.where()}: no answer candidates (meta candidates: the answer words to choose from)")
            it.meta["candidates"] = ("yes", "no")
        if it.answer not in it.meta["candidates"]:
            raise DataError(f"{it.where()}: the answer {it.answer!r} is not among its candidates {list(it.meta['candidates'])}")
    return items


def probe_items(n: int = 8, seed: int = 101, split: str = "val") -> list[Item]:
    """Presence, colour and count questions in turn (the information curve's items)."""
    return shapes.mixed_questions(split, n, seed)


_HORIZON_CACHE: dict[tuple, int] = {}


def horizon_for(adapter, n: int = 8, seed: int = 101, progress: bool = False) -> int:
    """The information horizon of ``adapter`` on ``n`` shapes probe items (cached per model, ``n`` and
    ``seed``); afterwards ``hybrid`` pruners with ``horizon=None`` use it."""
    key = (id(adapter.model), n, seed)
    if key not in _HORIZON_CACHE:
        _HORIZON_CACHE[key] = _measure_horizon(adapter, probe_items(n, seed), progress=progress)
    return _HORIZON_CACHE[key]


def resolve_horizon(adapter, pruner, progress: bool = False):
    """``pruner`` ready to bind: a ``hybrid`` with ``horizon=None`` gets the model's measured horizon
    (measured here on the shapes probe items when the model has none yet)."""
    if getattr(pruner, "name", None) == "hybrid" and pruner.horizon is None and known_horizon(adapter) is None:
        horizon_for(adapter, progress=progress)
    return pruner


def answers(runner: PrunedLM, items, pruner=None, batch_size: int = 32, seed: int = 0, start: int = 0) -> list[bool]:
    """Whether each item is answered correctly under ``pruner``. Random choices are seeded per batch
    from ``seed`` and the batch's index in the whole set (``start`` = index of ``items[0]``), so any
    split into shards of whole batches gives the same answers."""
    a = runner.adapter
    ok = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        g = torch.Generator().manual_seed(seed * 1_000_003 + start + i)
        b = a.prepare(images=[it.image for it in chunk], text=[it.prompt for it in chunk])
        logits = runner.prefill(b, pruner, generator=g).logits.float().cpu()
        for r, it in enumerate(chunk):
            cands = list(it.meta["candidates"])
            ids = [a.token_id(c) for c in cands]
            ok.append(cands[int(logits[r, ids].argmax())] == it.answer)
    return ok


def accuracy(ok, items) -> dict[str, float]:
    """Accuracy per question kind and pooled (``all``)."""
    out = {k: float(np.mean([o for o, it in zip(ok, items) if it.kind == k])) for k in KINDS if any(it.kind == k for it in items)}
    out["all"] = float(np.mean(ok))
    return out


_acc = accuracy  # the name notebooks used


def latency(runner: PrunedLM, batch, pruners: dict, repeats: int = 7) -> dict[str, dict[str, float]]:
    """Median prefill seconds ``{name: {"lm", "total"}}``, configurations interleaved per repeat."""
    times = {k: {"lm": [], "total": []} for k in pruners}
    for k, p in pruners.items():  # warm-up
        runner.prefill(batch, p, generator=torch.Generator().manual_seed(0))
    for _ in range(repeats):
        for k, p in pruners.items():
            t0 = time.perf_counter()
            runner.prefill(batch, p, generator=torch.Generator().manual_seed(0))
            tot = time.perf_counter() - t0
            times[k]["lm"].append(runner.timing["lm"])
            times[k]["total"].append(tot)
    return {k: {m: float(np.median(v)) for m, v in d.items()} for k, d in times.items()}


def _pruner(spec, horizon):
    return None if spec is None else make_pruner(spec, **({"horizon": horizon} if spec.startswith("hybrid") else {}))


def _answers_worker(adapter, items, start, spec=None, horizon=None, batch_size=32):
    return answers(PrunedLM(adapter), items, _pruner(spec, horizon), batch_size, start=start)


def method_spec(method: str, keep: float) -> str:
    """``"visionzip[tower_layer=3]"`` at keep 0.25 -> ``"visionzip:0.25:tower_layer=3"``."""
    name, _, opts = method.partition("[")
    return ":".join([name, f"{keep:g}", *(o.strip() for o in opts.rstrip("]").split(",") if o.strip())])


def run_bench(adapter, keeps=(0.1, 0.25, 0.5, 0.75), methods=("random", "fastv", "visionzip", "info", "hybrid"), n: int = 128,
              seed: int = 21, batch_size: int = 32, repeats: int = 7, horizon: int | None = None, progress: bool = True,
              pool=None, items: list[Item] | None = None) -> dict:
    """The full comparison; returns a JSON-able dict (``rows``: one per method and keep ratio).
    ``items``: the questions (:func:`bench_items`; default :func:`eval_items` of ``n`` / ``seed``).
    ``pool`` (a :class:`~vlinterp.scale.WorkerPool` on the same model) computes the accuracies on
    its workers; latencies are always timed here, side by side."""
    from functools import partial

    runner = PrunedLM(adapter)
    items = eval_items("test", n, seed) if items is None else items
    hz = horizon if horizon is not None else horizon_for(adapter, progress=progress)

    def ok_for(spec):
        if pool is None:
            return answers(runner, items, _pruner(spec, hz), batch_size)
        return pool.map(partial(_answers_worker, spec=spec, horizon=hz, batch_size=batch_size), items, shard=4 * batch_size,
                        desc=spec or "unpruned", progress=False)

    base = accuracy(ok_for(None), items)
    specs, labels = {}, {}
    for k in keeps:
        for m in methods:
            spec = method_spec(m, k)
            specs[spec] = _pruner(spec, hz)
            labels[spec] = m
    rows = []
    for name, p in tqdm(specs.items(), desc="pruning bench: accuracy per method and keep ratio", disable=not progress):
        acc = accuracy(ok_for(name), items)
        rows.append({"method": labels[name], "keep": p.keep, "accuracy": acc,
                     "retention": {k: (acc[k] / base[k] if base[k] else float("nan")) for k in acc}})
    lat_batch = adapter.prepare(images=[it.image for it in items[:batch_size]], text=[it.prompt for it in items[:batch_size]])
    lat = latency(runner, lat_batch, {"none": None, **specs}, repeats)
    cfg = adapter.text_config
    N = runner.n_image(lat_batch)
    n_text = int(lat_batch.inputs["attention_mask"][0].sum()) - N
    full = lm_flops(cfg, n_text, [N] * runner.L)
    vcfg, Lv, depth = runner.tower_shape()
    full_tower = tower_flops(vcfg, [N + 1] * Lv)
    for r, (name, p) in zip(rows, specs.items()):
        fl = lm_flops(cfg, n_text, p.schedule(N, runner.L))
        tw = tower_flops(vcfg, p.tower_schedule(N, Lv, depth))
        r["latency_ratio"] = {m: lat[name][m] / lat["none"][m] for m in ("lm", "total")}
        r["flops_ratio"] = fl["prefill"] / full["prefill"]
        r["flops_ratio_total"] = (fl["prefill"] + tw) / (full["prefill"] + full_tower)
    return {"model": adapter.name, "n_items": len(items), "seed": seed, "batch": batch_size, "repeats": repeats,
            "horizon": hz, "unpruned": {"accuracy": base, "latency_s": lat["none"]}, "rows": rows}


def table(res: dict) -> str:
    """Plain-text table of :func:`run_bench` output."""
    lines = [f"unpruned accuracy {res['unpruned']['accuracy']['all']:.3f} ({', '.join(f'{k} {v:.3f}' for k, v in res['unpruned']['accuracy'].items() if k != 'all')}); "
             f"LM prefill {res['unpruned']['latency_s']['lm'] * 1e3:.1f} ms, total {res['unpruned']['latency_s']['total'] * 1e3:.1f} ms "
             f"(batch {res['batch']}, median of {res['repeats']}); horizon layer {res['horizon']}",
             f"{'method':<24}{'keep':>6}{'retain':>8}{'presence':>10}{'colour':>8}{'count':>7}{'lm lat':>8}{'tot lat':>9}{'FLOPs':>7}{'tot FLOPs':>10}"]
    for r in res["rows"]:
        t = r["retention"]
        lines.append(f"{r['method']:<24}{r['keep']:>6.2f}{t['all']:>8.3f}{t.get('presence', float('nan')):>10.3f}{t.get('colour', float('nan')):>8.3f}"
                     f"{t.get('count', float('nan')):>7.3f}{r['latency_ratio']['lm']:>8.2f}{r['latency_ratio']['total']:>9.2f}{r['flops_ratio']:>7.2f}{r.get('flops_ratio_total', float('nan')):>10.2f}")
    return "\n".join(lines)


__all__ = ["eval_items", "bench_items", "probe_items", "WANTED", "PROBE_WANTED", "horizon_for", "resolve_horizon", "answers", "accuracy", "latency", "run_bench", "table",
           "method_spec", "KINDS"]
