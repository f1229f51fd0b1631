"""Performance at the sizes users run: models of real geometry with random weights (built from the
published configs under ``tests/configs`` by :mod:`realsize_models`), every number a ratio measured
side by side in one process (interleaved rounds, medians).

    nice -n 5 python benchmarks/realsize.py [--only pruning|tracing|capture|steering|relevancy|memory|sae]
                                            [--device cpu|cuda] [--dtype bfloat16] [--repeats 3] [--json PATH]

Parts (each within 15 minutes on 2 shared CPU cores):

* ``capture``: a forward capturing every residual stream / a plain forward (LLaVA-1.5 geometry with
  4 Llama-7B-width layers, LLaVA-1.5 tower + Qwen2-0.5B, ViT-B/16, CLIP ViT-B/32, the SD-1.5 UNet).
* ``tracing``: batched causal tracing / the naive loop over the 7 FCCT groups x 3 components on the
  LLaVA-1.5 geometry (2 LM layers of width 4096: 42 cells, one noise sample).
* ``pruning``: FastV, VisionZip (at the feature layer and inside the tower), hybrid and random at
  10/25/50% of the 576 image tokens kept: LM prefill, whole prefill, decode per token (batch 1 and
  8, from the pruned KV cache), FLOPs, peak memory, each against unpruned.
* ``relevancy``: seconds per image and per answer token and peak memory of relevancy on the LLaVA-1.5
  geometry (the rows the answer needs vs the full T x T maps of the former path), relevancy and
  Grad-CAM on ViT-B/16 and CLIP ViT-B/32.
* ``memory``: capturing every residual of the LLaVA-1.5 geometry over several prompts with and
  without ``budget_mb``: resident memory above a plain forward's peak.
* ``sae``: harvesting a residual site into an activation store: rows/s and time / plain forwards.
* ``steering``: per generated token with VCD, mean-difference vectors or IRI applied / plain, on the
  LLaVA-1.5 geometry (methods built, not fitted: random weights).

``--models vit_b16,clip_b32`` restricts capture / relevancy / pruning to those builders (the parts
that fit a few minutes on a loaded 2-core CPU; the Llama-7B-width ones need a GPU or an idle machine).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import realsize_models as M  # noqa: E402
from realsize_util import interleaved, load, machine, peak_anon_mb, peak_mb, rss_mb, timed  # noqa: E402

PARTS = ("pruning", "tracing", "capture", "steering", "relevancy", "memory", "sae")
PROMPT = "is there a red circle in the picture?"
RESULTS: dict = {}


def say(*a):
    print(*a, flush=True)


def vlm_batch(m, n: int = 1, answer=None, seed: int = 0):
    return m.prepare(images=[M.image(seed=seed + i) for i in range(n)], text=[PROMPT] * n, answer=answer)


def batch_for(m):
    if m.kind == "vlm":
        return vlm_batch(m)
    if m.kind == "diffusion":
        return m.prepare(text=["a red circle next to a blue square"])
    if m.kind == "clip":
        return m.prepare(images=[M.image()], text=["a red circle", "a blue square"])
    return m.prepare(images=[M.image()])


def resid_sites(m) -> list[str]:
    """Every residual stream: ``*.resid`` blocks; the UNet's down/mid/up block outputs."""
    return [s for s in m.sites() if s.endswith(".resid") or s.startswith(("unet.down.", "unet.mid.", "unet.up."))]


def wanted(args, name: str) -> bool:
    """``--models`` (empty: every builder a part uses) names the builders to run."""
    return not args.models or name in args.models


def build(name, args, **kw):
    t0 = time.perf_counter()
    m = M.BUILDERS[name](dtype=args.torch_dtype, **kw)
    if args.device != "cpu":
        m.model.to(args.device)
    say(f"  built {M.describe(m)} in {time.perf_counter() - t0:.0f}s; RSS {rss_mb():.0f} MB")
    return m


# ------------------------------------------------------------------- capture
def part_capture(args):
    rows = []
    for name, kw in (("llava15", {"lm_layers": args.lm_layers}), ("llava_qwen05", {}), ("vit_b16", {}), ("clip_b32", {}), ("sd15", {})):
        if not wanted(args, name):
            continue
        m = build(name, args, **kw)
        b = batch_for(m)
        sites = resid_sites(m)
        with torch.no_grad():
            res = interleaved({"plain": lambda: m.run(b), "capture": lambda: m.run(b, capture=sites)},
                              args.repeats if name.startswith("llava") else 3 * args.repeats, base="plain", device=args.device)
        r = {"model": m.name, "sites": len(sites), "tokens": list(b.layout.shape), "plain_s": res["plain"]["s"],
             "capture_s": res["capture"]["s"], "ratio": res["capture"]["ratio"]}
        rows.append(r)
        say(f"capture {m.name}: {len(sites)} residual sites, plain {r['plain_s']:.2f}s, capture {r['capture_s']:.2f}s, "
            f"ratio {r['ratio']:.3f}")
        del m, b
    return rows


# ------------------------------------------------------------------- tracing
def part_tracing(args):
    from vlinterp.tracing import trace, trace_naive

    m = build("llava15", args, lm_layers=args.trace_layers)
    b = vlm_batch(m)
    kw = dict(components=("resid", "mlp", "attn"), positions="groups", samples=1)
    if args.profile:   # the profile alone: shares and FLOPs, no timings (a profiler slows what it measures)
        prof = trace_profile(m, b, lambda: trace(m, b, "yes", batch_size=args.trace_batch, **kw))
        return [{"model": m.name, "cells": prof["cells"], "profile": prof}]
    fast, tf = timed(lambda: trace(m, b, "yes", batch_size=args.trace_batch, **kw), args.device)
    slow, tn = timed(lambda: trace_naive(m, b, "yes", **kw), args.device)
    fast2, tf2 = timed(lambda: trace(m, b, "yes", batch_size=args.trace_batch, **kw), args.device)
    import numpy as np

    cells = int(fast.arrays["rr"].size)
    diff = float(np.abs(fast.arrays["p_patch"] - slow.arrays["p_patch"]).max())
    r = {"model": m.name, "cells": cells, "batched_s": statistics.median([tf, tf2]), "naive_s": tn,
         "speedup": tn / statistics.median([tf, tf2]), "max_p_diff": diff}
    say(f"tracing {m.name}: {cells} cells (7 groups x 3 components x {args.trace_layers} layers, 1 sample); "
        f"batched {r['batched_s']:.1f}s (runs {tf:.1f}, {tf2:.1f}), naive {tn:.1f}s: {r['speedup']:.1f}x; max |P diff| {diff:.1e}")
    return [r]


_OP_KINDS = (("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
             ("attention", ("scaled_dot_product", "aten::_softmax", "aten::softmax")))


def trace_profile(m, b, batched) -> dict:
    """Where batched tracing's time goes (torch.profiler, self CPU time by op kind) and the work it
    cannot avoid: FLOPs of the batched run vs those of the naive loop, counted as one plain forward per
    cell plus the clean and corrupted runs, so the FLOPs ratio bounds the speed-up."""
    from torch.profiler import ProfilerActivity, profile

    def run_profiled(fn):
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            res = fn()
        wall = time.perf_counter() - t0
        ev = prof.key_averages()
        mm = [e for e in ev if e.key in _OP_KINDS[0][1]]   # leaf matmuls only (their callers report FLOPs too)
        out = {"wall_s": wall, "flops": float(sum(e.flops for e in mm))}
        used = 0.0
        for kind, names in _OP_KINDS:
            us = sum(e.self_cpu_time_total for e in ev if any(n in e.key for n in names))
            out[kind + "_s"] = us / 1e6
            used += us / 1e6
        out["other_ops_s"] = sum(e.self_cpu_time_total for e in ev) / 1e6 - used
        out["matmul_gflops_per_s"] = out["flops"] / 1e9 / max(out["matmul_s"], 1e-9)
        return out, res

    with torch.no_grad():
        fwd, _ = run_profiled(lambda: m.run(b))
    bat, result = run_profiled(batched)
    cells = int(result.arrays["rr"].size)
    naive_forwards = cells + 2
    prof = {"cells": cells, "batched": bat, "forward": fwd, "naive_flops": naive_forwards * fwd["flops"],
            "flops_ratio": naive_forwards * fwd["flops"] / max(bat["flops"], 1.0)}
    say(f"  profile (batched, {bat['wall_s']:.1f}s under the profiler): matmul {bat['matmul_s']:.1f}s "
        f"({bat['matmul_gflops_per_s']:.0f} GFLOP/s), attention {bat['attention_s']:.1f}s, other ops {bat['other_ops_s']:.1f}s; "
        f"FLOPs batched {bat['flops'] / 1e12:.2f} T vs naive {prof['naive_flops'] / 1e12:.2f} T "
        f"({naive_forwards} forwards of {fwd['flops'] / 1e12:.3f} T): the FLOPs ratio bounds the speed-up at {prof['flops_ratio']:.1f}x")
    return prof


# ------------------------------------------------------------------- pruning
def _prune_specs(depth: int, L: int):
    specs = []
    for keep in (0.10, 0.25, 0.50):
        specs += [("fastv", keep, {}), ("visionzip", keep, {}), ("visionzip", keep, {"tower_layer": depth // 2}),
                  ("hybrid", keep, {"horizon": L // 2}), ("random", keep, {})]
    return specs


def part_pruning(args):
    from vlinterp.pruning import PrunedLM, make_pruner
    from vlinterp.pruning.flops import lm_flops, tower_flops

    rows = []
    for name, kw in (("llava15", {"lm_layers": args.lm_layers}), ("llava_qwen05", {})):
        if args.models and name not in args.models:
            continue
        m = build(name, args, **kw)
        run = PrunedLM(m)
        vcfg, Lv, depth = run.tower_shape()
        b = vlm_batch(m)
        N = int((b.inputs["input_ids"][0] == m.image_token_id).sum())
        n_text = b.inputs["input_ids"].shape[1] - N
        tcfg = m.text_config
        specs = [("none", 1.0, {})] + _prune_specs(depth, run.L)
        label = lambda n, k, o: n if n == "none" else f"{n}{'[' + ','.join(f'{a}={v}' for a, v in o.items()) + ']' if o else ''}:{k:g}"  # noqa: E731
        pruners = {label(*s): (None if s[0] == "none" else make_pruner(s[0], keep=s[1], **s[2])) for s in specs}

        def prefill(p):
            def fn():
                run.prefill(b, p, generator=torch.Generator().manual_seed(0))
                return run.timing["vision"] + run.timing["lm"]
            return fn

        say(f"  {m.name}: {N} image tokens + {n_text} text; {len(pruners)} configurations x {args.repeats} rounds; {load()}")
        lm_t, whole_t = {k: [] for k in pruners}, {k: [] for k in pruners}
        for k, p in pruners.items():  # warm-up
            run.prefill(b, p, generator=torch.Generator().manual_seed(0))
        for r in range(args.repeats):
            for k, p in pruners.items():
                run.prefill(b, p, generator=torch.Generator().manual_seed(0))
                lm_t[k].append(run.timing["lm"])
                whole_t[k].append(run.timing["vision"] + run.timing["lm"])
            say(f"    round {r + 1}: unpruned LM {lm_t['none'][-1]:.2f}s whole {whole_t['none'][-1]:.2f}s; " +
                ", ".join(f"{k} {whole_t[k][-1]:.1f}" for k in list(pruners)[1:6]))
        # decode: the pruned KV cache of one prefill, tiled to the batch size, args.decode_tokens steps
        states = {k: run.prefill(b, p, generator=torch.Generator().manual_seed(0)) for k, p in pruners.items()}
        dec = {}
        for bs in args.decode_batch:
            def decode(k, bs=bs):
                def fn():
                    st = states[k].repeat(bs)
                    t0 = time.perf_counter()
                    run.decode(st, args.decode_tokens + 1, stop_at_eos=False)
                    return (time.perf_counter() - t0) / args.decode_tokens
                return fn
            dec[bs] = interleaved({k: decode(k) for k in pruners}, args.repeats, base="none", device=args.device,
                                  progress=False, self_timed=True)
        # peak memory of prefill + decode (batch 1)
        peaks = {}
        for k, p in pruners.items():
            _, peaks[k] = peak_mb(lambda p=p: run.decode(run.prefill(b, p, generator=torch.Generator().manual_seed(0)),
                                                         args.decode_tokens + 1, stop_at_eos=False))
        f0 = lm_flops(tcfg, n_text, [N] * run.L)["prefill"]
        t0f = tower_flops(vcfg, [N + 1] * Lv)
        for (nm, keep, opts), k in zip(specs, pruners):
            p = pruners[k]
            sched = [N] * run.L if p is None else p.schedule(N, run.L)
            tsched = [N + 1] * Lv if p is None else p.tower_schedule(N, Lv, depth)
            fl = lm_flops(tcfg, n_text, sched)["prefill"]
            tf = tower_flops(vcfg, tsched)
            row = {"model": m.name, "method": k, "keep": keep,
                   "lm_prefill": statistics.median([a / c for a, c in zip(lm_t[k], lm_t["none"])]),
                   "whole_prefill": statistics.median([a / c for a, c in zip(whole_t[k], whole_t["none"])]),
                   "lm_s": statistics.median(lm_t[k]), "whole_s": statistics.median(whole_t[k]),
                   "flops_lm": fl / f0, "flops_whole": (fl + tf) / (f0 + t0f), "peak_mb": peaks[k]}
            for bs in args.decode_batch:
                row[f"decode_b{bs}"] = dec[bs][k]["ratio"]
                row[f"decode_b{bs}_ms"] = 1e3 * dec[bs][k]["s"]
            rows.append(row)
        say(f"pruning {m.name} ({N} image tokens; ratios to unpruned: LM prefill {statistics.median(lm_t['none']):.2f}s, "
            f"whole {statistics.median(whole_t['none']):.2f}s, decode " +
            ", ".join(f"batch {bs} {1e3 * dec[bs]['none']['s']:.0f} ms/token" for bs in args.decode_batch) + f"; {load()})")
        say(f"  {'method':32s} {'LM pre':>7s} {'whole':>7s} " + " ".join(f"{'dec b' + str(bs):>8s}" for bs in args.decode_batch)
            + f" {'FLOPs LM':>9s} {'whole':>6s} {'peak MB':>8s}")
        for row in rows:
            if row["model"] == m.name:
                say(f"  {row['method']:32s} {row['lm_prefill']:6.2f}x {row['whole_prefill']:6.2f}x " +
                    " ".join(f"{row[f'decode_b{bs}']:7.2f}x" for bs in args.decode_batch) +
                    f" {row['flops_lm']:8.2f}x {row['flops_whole']:5.2f}x {row['peak_mb']:8.0f}")
        del m, run, states
    return rows


# ----------------------------------------------------------------- relevancy
def part_relevancy(args):
    from vlinterp import saliency

    rows = []
    for name in [n for n in ("llava15", "llava_next") if wanted(args, n) and (n == "llava15" or args.models)]:
        rows.append(_relevancy_vlm(args, name))
    for name in ("vit_b16", "clip_b32"):
        if not wanted(args, name):
            continue
        m = build(name, args)
        b = batch_for(m)
        for meth in ("relevancy", "gradcam"):
            sm = saliency.create(meth, m)
            sm.attribute(b)
            times, peaks = [], []
            for _ in range(args.repeats):
                (_, pk), s = timed(lambda: peak_mb(lambda: sm.attribute(b)), args.device)
                times.append(s)
                peaks.append(pk)
            r = {"model": m.name, "method": meth, "s_per_image": statistics.median(times), "peak_mb": max(peaks)}
            rows.append(r)
            say(f"{meth} {m.name}: {r['s_per_image']:.2f}s per image, peak +{r['peak_mb']:.0f} MB")
        del m
    return rows


def _relevancy_vlm(args, name: str) -> dict:
    """Relevancy on a VLM geometry: the answer's rows (no vision-tower graph) vs the former path."""
    from vlinterp import saliency
    from vlinterp.saliency.relevancy import relevance_and_layers

    m = build(name, args, lm_layers=args.lm_layers)
    answer = "yes red circle"
    b = vlm_batch(m)
    rel = saliency.create("relevancy", m)
    t = rel.resolve(b, answer)
    n = t.n
    (res, peak), s = timed(lambda: peak_mb(lambda: rel.attribute(b, target=answer)), args.device)
    (_, peak2), s2 = timed(lambda: peak_mb(lambda: rel.attribute(b, target=answer)), args.device)
    (_, peak_full), s_full = timed(lambda: peak_mb(lambda: relevance_and_layers(m, t, None, None, score="logprob", queries=t.queries)),
                                   args.device)
    r = {"model": m.name, "method": "relevancy", "tokens": int(b.layout.shape[1]), "answer_tokens": n,
         "s_per_image": statistics.median([s, s2]), "s_per_answer_token": statistics.median([s, s2]) / n,
         "peak_mb": max(peak, peak2), "former_path_s": s_full, "former_path_peak_mb": peak_full}
    say(f"relevancy {m.name}: {r['tokens']} tokens, {n} answer tokens: {r['s_per_image']:.1f}s per image, "
        f"{r['s_per_answer_token']:.1f}s per answer token, peak +{r['peak_mb']:.0f} MB (process RSS {rss_mb():.0f} MB); "
        f"the former path (full T x T maps, graph from the pixels) {s_full:.1f}s, peak +{peak_full:.0f} MB")
    return r


# -------------------------------------------------------------------- memory
def part_memory(args):
    m = build("llava15", args, lm_layers=args.lm_layers)
    sites = resid_sites(m)
    batches = [vlm_batch(m, seed=10 * i) for i in range(args.memory_prompts)]
    with torch.no_grad():
        def plain():  # the outputs dropped as the captures' runs drop them (a kept list held 6 x 75 MB of logits)
            for x in batches:
                m.run(x)

        plain()  # warm-up: the allocator's first growth is not the capture's
        _, plain_peak = peak_mb(plain)
        _, plain_anon = peak_anon_mb(plain)

        def capture(budget):
            with m.capture(sites, budget_mb=budget) as cache:
                for x in batches:
                    m.run(x)
                size = sum(t.numel() * t.element_size() for ts in cache.steps.values() for t in ts) / 2**20
                return size

        size, free_peak = peak_mb(lambda: capture(None))
        _, free_anon = peak_anon_mb(lambda: capture(None))
        rows = [{"model": m.name, "budget_mb": None, "captured_mb": size, "peak_mb": free_peak, "plain_peak_mb": plain_peak,
                 "anon_peak_mb": free_anon, "plain_anon_mb": plain_anon, "anon_over_plain_mb": free_anon - plain_anon}]
        for budget in args.budgets:
            got, pk = peak_mb(lambda: capture(budget))
            _, an = peak_anon_mb(lambda: capture(budget))
            rows.append({"model": m.name, "budget_mb": budget, "captured_mb": got, "peak_mb": pk, "plain_peak_mb": plain_peak,
                         "over_plain_mb": pk - plain_peak, "anon_peak_mb": an, "plain_anon_mb": plain_anon,
                         "anon_over_plain_mb": an - plain_anon, "within": (an - plain_anon) <= 1.2 * budget})
    for r in rows:
        extra = "" if r["budget_mb"] is None else f" ({'within' if r['within'] else 'OVER'} budget + 20%)"
        say(f"memory {m.name}: {len(sites)} residual sites x {len(batches)} prompts = {r['captured_mb']:.0f} MB captured, "
            f"budget {r['budget_mb']}: peak RSS +{r['peak_mb']:.0f} MB over the start (plain forwards +{r['plain_peak_mb']:.0f} MB); "
            f"anonymous +{r['anon_peak_mb']:.0f} MB (plain +{r['plain_anon_mb']:.0f} MB): {r['anon_over_plain_mb']:+.0f} MB above plain{extra}")
    return rows


# ----------------------------------------------------------------------- sae
def part_sae(args):
    from vlinterp.core.items import Item
    from vlinterp.sae.store import ActivationStore

    rows = []
    for name, kw, site in (("llava15", {"lm_layers": args.lm_layers}, "blocks.1.resid"), ("llava_qwen05", {}, "blocks.12.resid")):
        m = build(name, args, **kw)
        items = [Item(M.image(seed=i), PROMPT, None, [], f"random {i}") for i in range(args.sae_items)]
        bs = 2

        def plain():
            with torch.no_grad():
                for i in range(0, len(items), bs):
                    m.run(m.prepare(images=[it.image for it in items[i:i + bs]], text=[it.prompt for it in items[i:i + bs]]))

        harvest = lambda: ActivationStore.harvest(m, site, items, batch_size=bs, tokens="content", progress=False)  # noqa: E731
        res = interleaved({"plain": plain, "harvest": harvest}, max(1, args.repeats - 1), base="plain", device=args.device)
        st = harvest()
        r = {"model": m.name, "site": site, "items": len(items), "rows": len(st), "d": st.d,
             "rows_per_s": len(st) / res["harvest"]["s"], "ratio_to_plain": res["harvest"]["ratio"]}
        rows.append(r)
        say(f"sae harvest {m.name} {site}: {r['rows']} rows x {r['d']} from {len(items)} prompts, {r['rows_per_s']:.0f} rows/s, "
            f"{r['ratio_to_plain']:.2f}x the plain forwards")
        del m, st
    return rows


def part_steering(args):
    """Per generated token with a steering method applied / plain generation, on the LLaVA-1.5
    geometry (``--decode-tokens`` tokens greedy, prefill included, interleaved rounds). The methods are
    built, not fitted (random weights give nothing to fit): VCD (a second, noised-image forward per
    token), mean-difference vectors at the upper half of the LM layers (random unit directions) and
    IRI injecting layer 0's attention and MLP outputs into the last layer's, SAVE adding a random unit
    direction at the middle layer's last position, grounding with a random patch probe over 3 x 3
    colour-shape words at the middle layer (``gate=inf``: its caption rule acts on every colour or
    shape word on top, its worst case). Their hooks cost the same whatever the fitted values; probe
    steering needs its fitted heads (its overhead is measured on the organism,
    ``benchmarks/steering_overhead.py``)."""
    import contextlib

    from vlinterp.steering import IRI, SAVE, VCD, Grounding, MeanDiff

    if not wanted(args, "llava15"):
        return []
    m = build("llava15", args, lm_layers=args.lm_layers)
    b = vlm_batch(m)
    L, D = m.num_layers("lm"), int(m.text_config.hidden_size)
    g = torch.Generator().manual_seed(0)
    methods = {"vcd": VCD(alpha=1.0),
               "meandiff": MeanDiff({l: torch.randn(D, generator=g) for l in range(L // 2, L)}, alpha=0.1),
               "iri": IRI([("attn", 0, 1.0), ("mlp", 0, 1.0)], [("attn", L - 1), ("mlp", L - 1)], lam=1.0),
               "save": SAVE(torch.randn(D, generator=g), config=SAVE.Config(site=f"blocks.{L // 2}.resid", alpha=0.2)),
               "ground": Grounding(torch.randn(10, D, generator=g) / D ** 0.5, torch.zeros(10),
                                   Grounding.Config(layer=L // 2, alpha=1.0, beta=1.0, gate=float("inf"),
                                                    colours=("red", "green", "blue"), shapes=("circle", "square", "triangle")))}
    T = args.decode_tokens

    def gen(meth):
        def fn():
            with (meth.applied(m) if meth is not None else contextlib.nullcontext()):
                t0 = time.perf_counter()
                out = m.generate(b, max_new_tokens=T, min_new_tokens=T)
                if args.device != "cpu":
                    torch.cuda.synchronize()
                return (time.perf_counter() - t0) / max(int(out.new_tokens.shape[1]), 1)
        return fn

    say(f"  steering on {m.name}: {T} tokens per generation x {args.repeats} rounds; {load()}")
    res = interleaved({"none": gen(None), **{k: gen(v) for k, v in methods.items()}}, args.repeats, base="none",
                      device=args.device, progress=True, self_timed=True)
    rows = [{"model": m.name, "method": k, "per_token_ratio": res[k]["ratio"], "per_token_ms": 1e3 * res[k]["s"],
             "plain_ms": 1e3 * res["none"]["s"], "tokens": T} for k in methods]
    say(f"steering {m.name} (plain {1e3 * res['none']['s']:.0f} ms per generated token, prefill included; {load()}): " +
        ", ".join(f"{r['method']} {r['per_token_ratio']:.2f}x" for r in rows))
    del m
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=PARTS, action="append", help="run this part (repeat for several; default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians)")
    p.add_argument("--lm-layers", type=int, default=4, help="language-model layers of the Llama-7B-width geometries")
    p.add_argument("--trace-layers", type=int, default=2)
    p.add_argument("--trace-batch", type=int, default=16)
    p.add_argument("--profile", action="store_true", help="tracing: profile the batched run instead of timing it (op kinds, FLOPs vs the naive loop)")
    p.add_argument("--models", default="", help="only these builders (comma-separated: llava15, llava_qwen05, llava_next, vit_b16, clip_b32, sd15); "
                   "capture, relevancy and pruning honour it")
    p.add_argument("--decode-tokens", type=int, default=8)
    p.add_argument("--decode-batch", default="1,8")
    p.add_argument("--memory-prompts", type=int, default=6)
    p.add_argument("--budgets", default="64")
    p.add_argument("--sae-items", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", help="write every row here")
    a = p.parse_args(argv)
    a.torch_dtype = getattr(torch, a.dtype)
    a.decode_batch = [int(x) for x in a.decode_batch.split(",")]
    a.budgets = [float(x) for x in a.budgets.split(",")]
    a.models = [x for x in a.models.split(",") if x]
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    say(f"machine: {machine(a.device)}; dtype {a.dtype}; {load()}")
    for part in a.only or PARTS:
        t0 = time.perf_counter()
        say(f"== {part} ({load()})")
        before = os.getloadavg()
        RESULTS[part] = {"rows": globals()[f"part_{part}"](a), "load_before": before}
        RESULTS[part]["seconds"] = time.perf_counter() - t0
        RESULTS[part]["load_after"] = os.getloadavg()
        say(f"== {part}: {RESULTS[part]['seconds'] / 60:.1f} min ({load()})")
        if a.json:  # after every part: a run stopped later keeps what it measured
            with open(a.json, "w") as f:
                json.dump({"machine": machine(a.device), "dtype": a.dtype, "parts": RESULTS}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
