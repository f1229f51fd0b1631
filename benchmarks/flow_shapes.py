"""Issue 32's information-flow numbers on shapes-llava (``--model shapes-qwen``: the second organism): attention knockout, DLA exactness, RelP agreement.

- knockout: the flow map (mean relative drop of P(yes) per edge and single-layer window) on the
  positive presence questions of ``--n`` held-out scenes answered "yes"; goal: image -> last at
  layer 1 (the attention peak tracing found) drops P(yes) by >= 50%, the other windows much less.
  Figure: ``assets/flow_knockout.png``.
- dla: on the same scenes, max |sum of the parts + direct path + constants - the model's
  logit(yes) - logit(no)|; goal <= 1e-4 (final norm's scale frozen at its clean-run value).
- attention: tracing's attention output at the last token split by the keys it reads (image /
  text / whole, ``--n-parts`` scenes): where the image part peaks is where knockout's image -> last
  edge should matter most. Figure (with the knockout's image -> last drop): ``assets/flow_handoff.png``.
- relp: RelP (LRP rules as published; ``attnlrp``: with AttnLRP's attention rules) and attribution
  patching (plain gradients) against activation patching on the same cells (attn/mlp/resid x layers x
  the seven FCCT groups, image noise) of ``--n-relp`` scenes; goal: sign agreement >= 90%.
- relp-grid: the same agreement for every combination of the rules (attention: AH / AttnLRP / plain
  gradient; LN rule on/off; MLP rules on/off): which rule costs agreement.

Numbers go to ``assets/flow_shapes.json`` (shapes-qwen: ``benchmarks/results/shapes_qwen/flow.json``).

    python benchmarks/flow_shapes.py [--model shapes-llava] [--n 32] [--n-relp 16] [--seed 11] [--parts knockout,dla,attention,relp]
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

import vlinterp as vi
from vlinterp.core.io import check_output_file, write_json
from vlinterp.eval.flow import attention_part_curves, knockout_flow, relp_agreement
from vlinterp.eval.trace import shapes_items
from vlinterp.tracing import dla
from vlinterp.viz.flow_plot import plot_knockout_flow, plot_layer_curves

ASSETS = os.path.join(os.path.dirname(__file__), "..", "assets")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--n-relp", type=int, default=16)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--parts", default="knockout,dla,attention,relp")
    ap.add_argument("--n-parts", type=int, default=48, help="scenes for the attention-parts curves")
    ap.add_argument("--handoff-png", default=None, help="the hand-off figure (default: assets/flow_handoff[_qwen].png)")
    ap.add_argument("--metric", default="prob", help="what RelP differentiates: prob (P(yes)) or logit")
    ap.add_argument("--relp-steps", type=int, default=1, help="RelP path steps (1: as published; >1: integrated along the path)")
    ap.add_argument("--relp-corruption", default="noise", choices=("noise", "removed"),
                    help="RelP vs patching on image noise, or on the scene with the queried object painted out")
    ap.add_argument("--relp-rules", default="lrp,attnlrp,none", help="the rule sets the relp part compares")
    ap.add_argument("--window", type=int, default=1, help="knockout window (layers blocked per cell, ROME-centred)")
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--out", default=None, help="default: assets/flow_shapes.json (shapes-llava), "
                                                "benchmarks/results/shapes_qwen/flow.json (shapes-qwen)")
    ap.add_argument("--png", default=None, help="the knockout figure (default: assets/flow_knockout[_qwen][_windowK].png)")
    a = ap.parse_args()
    suffix = "" if a.model == "shapes-llava" else "_" + a.model.split("-")[-1]  # shapes-qwen -> _qwen
    if a.out is None:
        a.out = os.path.join(ASSETS, "flow_shapes.json") if not suffix else \
            os.path.join(os.path.dirname(__file__), "results", a.model.replace("-", "_"), "flow.json")
    parts = a.parts.split(",")
    check_output_file(a.out, "--out")  # before any work: never replace a file vlinterp did not write
    a.png = a.png or os.path.join(ASSETS, f"flow_knockout{suffix}" + ("" if a.window == 1 else f"_window{a.window}") + ".png")
    a.handoff_png = a.handoff_png or os.path.join(ASSETS, f"flow_handoff{suffix}.png")
    for flag, png, part in (("--png", a.png, "knockout"), ("--handoff-png", a.handoff_png, "attention")):
        if part in parts:
            check_output_file(png, flag)
    torch.set_num_threads(1)
    m = vi.load(a.model)
    res = {"model": a.model, "seed": a.seed}  # merged into --out's other parts when written
    if "knockout" in parts:
        k = knockout_flow(m, n=a.n, seed=a.seed, window=a.window, progress=True)
        key = "knockout" if a.window == 1 else f"knockout_window{a.window}"
        res[key] = k
        d = np.array(k["drop"])
        print(f"knockout: {k['n']} scenes ({k['skipped_wrong']} answered wrong skipped), P(yes) clean {k['p_clean']:.3f}")
        for e, row, se in zip(k["edges"], d, np.array(k["drop_se"])):
            print(f"  {e:16s} " + "  ".join(f"L{'-'.join(map(str, w))}: {100 * v:5.1f}% (±{100 * s:.1f})" for w, v, s in zip(k["windows"], row, se)))
        plot_knockout_flow(d, k["edges"], ["-".join(map(str, w)) for w in k["windows"]], a.png,
                           title=f"{a.model}: attention knockout (window {a.window}), mean drop of P(yes), {k['n']} presence questions",
                           err=np.array(k["drop_se"]))
    if "dla" in parts:
        errs, totals, comps = [], [], []
        for it in shapes_items(a.n, a.seed, "test"):
            b = m.prepare(images=[it.image], text=[it.prompt])
            r = dla(m, b, "yes", foil="no").arrays
            s = r["components"].sum() + r["direct"][0] + r["other"][0] + r["const"][0]
            errs.append(abs(float(s - r["total"][0])))
            totals.append(float(r["total"][0]))
            comps.append(r["components"])
        c = np.mean(comps, 0)
        res["dla"] = {"n": len(errs), "max_abs_error": max(errs), "mean_logit_diff": float(np.mean(totals)),
                      "mean_components": c.tolist(), "linearisation": "final norm's scale frozen at its clean-run value"}
        print(f"dla: {len(errs)} scenes, max |parts - logit diff| {max(errs):.2e}; mean logit(yes)-logit(no) "
              f"{np.mean(totals):.3f}; mean attn {np.round(c[0], 3).tolist()} mlp {np.round(c[1], 3).tolist()}")
    old = json.load(open(a.out)) if os.path.exists(a.out) else {}
    if "attention" in parts:
        ap_ = attention_part_curves(m, n=a.n_parts, seed=a.seed, progress=True)
        res["attention_parts"] = ap_
        print(f"attention parts ({ap_['n']} scenes): " + "; ".join(f"{k} " + " ".join(f"{v:.3f}" for v in vals)
                                                              for k, vals in ap_["rr"].items()))
        ko = res.get("knockout") or old.get("knockout")
        series = {"tracing RR: last token's whole attention output": ap_["rr"]["whole"],
                  "tracing RR: its part reading the image keys": ap_["rr"]["image"],
                  "tracing RR: its part reading the text keys": ap_["rr"]["text"]}
        err = {}
        if ko:
            e = ko["edges"].index("image:last")
            label = f"knockout image -> last: drop in P(yes) ({ko['n']} questions, ± s.e.)"
            series[label], err[label] = ko["drop"][e], ko["drop_se"][e]
        plot_layer_curves(series, a.handoff_png, ylabel="fraction of P(yes)", err=err,
                          title=f"{a.model}: where the image reaches the last token (tracing: {ap_['n']} presence questions)")
    if "relp" in parts:
        for rules in a.relp_rules.split(","):
            r = relp_agreement(m, n=a.n_relp, seed=a.seed, rules=rules, metric=a.metric, steps=a.relp_steps,
                               corruption=a.relp_corruption, progress=True)
            keep = {k: r[k] for k in ("n", "skipped_wrong", "rules", "metric", "agreement", "cells", "agreement_large",
                                      "cells_large", "min_rel", "pearson", "agreement_by_component", "steps", "corruption")}
            res[f"relp_{rules}" + ("" if a.metric == "prob" else f"_{a.metric}") + ("" if a.relp_steps == 1 else f"_steps{a.relp_steps}")
                + ("" if a.relp_corruption == "noise" else f"_{a.relp_corruption}")] = keep
            print(f"relp rules={rules} metric={a.metric} steps={a.relp_steps} corruption={a.relp_corruption}: sign agreement {r['agreement']:.3f} over {r['cells']} cells; "
                  f"{r['agreement_large']:.3f} over {r['cells_large']} cells with |IE| >= 1% of TE; pearson {r['pearson']:.3f}; by component {r['agreement_by_component']}")
    if "relp-grid" in parts:
        res["relp_grid" + ("" if a.relp_corruption == "noise" else f"_{a.relp_corruption}")] = relp_grid(m, a)
    write_json(a.out, {**old, **res})


def relp_grid(m, a) -> list[dict]:
    """Sign agreement (all cells, and cells >= 1% of the total effect) for every rule combination."""
    rows = []
    for attention in ("ah", "attnlrp", "grad"):
        for norm in (True, False):
            for mlp in (True, False):
                rules = {"attention": attention, "norm": norm, "mlp": mlp}
                r = relp_agreement(m, n=a.n_relp, seed=a.seed, rules=rules, metric=a.metric, corruption=a.relp_corruption)
                rows.append({**rules, "agreement": r["agreement"], "agreement_large": r["agreement_large"], "cells": r["cells"]})
                print(f"relp grid attention={attention} norm_rule={norm} mlp_rules={mlp}: {r['agreement']:.3f} "
                      f"({r['agreement_large']:.3f} on cells >= 1% of TE)", flush=True)
    return rows


if __name__ == "__main__":
    main()
