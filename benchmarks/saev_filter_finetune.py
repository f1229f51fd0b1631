"""SAE-V's data-filtering payoff (issue 32): fine-tune shapes-llava (or ``--model shapes-qwen``) on the
top x% of a noisy instruction pool ranked by the SAE-V score, on a random x%, and on the whole pool;
measure POPE, colour, count and CHAIR after each (see :mod:`vlinterp.eval.saev_finetune`).

    nice -n 5 python benchmarks/saev_filter_finetune.py --out /tmp/saevft [--plot assets/saev_finetune.png]

Every stage is kept in ``--out`` (``scores.json``, ``results.json``): a rerun skips what is done.
One thread (``torch.set_num_threads(1)``); on this 2-core machine the default settings take about
1.5 hours. ``assets/saev_finetune.{json,png}`` were made with ``--eval-n 128 --caption-n 64 --steps 100``
(one or two ``--runs`` per invocation, the pool's scores and features kept in ``--out``), one
``--out`` per ``--seed``, then summarised over the seeds (means, standard errors, error bars):

    python benchmarks/saev_filter_finetune.py --summary DIR0,DIR1,DIR2 --summary-out assets/saev_finetune.json --plot assets/saev_finetune.png
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


def _load(path):
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="folder for the stage files (one per seed)")
    ap.add_argument("--scores", help="another run's scores.json of the same pool (--seed, --pool, --mismatch) to reuse "
                                     "instead of training a scorer (e.g. to fine-tune shapes-qwen on shapes-llava's ranking)")
    ap.add_argument("--summary", help="comma-separated --out folders of finished seeds: summarise them instead of running")
    ap.add_argument("--summary-out", help="JSON of the summary (with --summary)")
    ap.add_argument("--plot", help="PNG of the curves")
    ap.add_argument("--scorer", default="shapes-llava-aligned", help="organism whose SAE scores the pool")
    ap.add_argument("--model", default="shapes-llava", help="organism fine-tuned: shapes-llava or shapes-qwen (the pool is "
                                                             "scored by --scorer either way)")
    ap.add_argument("--pool", type=int, default=2000, help="pool samples")
    ap.add_argument("--mismatch", type=float, default=0.4, help="share of samples whose text describes another scene")
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps (every subset)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--sae-steps", type=int, default=4000)
    ap.add_argument("--eval-n", type=int, default=256)
    ap.add_argument("--caption-n", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="before,full,top-50,random-50,top-25,random-25,matched",
                    help="the runs to do in this invocation (comma-separated; the others are kept or skipped)")
    a = ap.parse_args(argv)
    from vlinterp.core.io import check_output_file

    for flag, path in (("--plot", a.plot), ("--summary-out", a.summary_out)):  # before any work
        if path:
            check_output_file(path, flag)
    if a.out:
        for name in ("results.json", "features.safetensors") + (() if a.scores else ("scores.json",)):
            check_output_file(os.path.join(a.out, name), "--out")
    if a.scores and (_load(a.scores) or {}).get("n") != a.pool:
        ap.error(f"--scores {a.scores}: not the scores of a {a.pool}-sample pool")
    if a.summary:
        return summary(a.summary.split(","), a.summary_out, a.plot)
    if not a.out:
        ap.error("--out is required (or --summary)")
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)

    from transformers import AutoModelForImageTextToText, AutoProcessor

    import vlinterp as vi
    from vlinterp.adapters.vlm import VlmAdapter
    from vlinterp.core.io import write_json
    from vlinterp.eval import saev_finetune as S
    from vlinterp.sae.analysis import filter_auroc
    from vlinterp.zoo import weights_dir

    log = lambda m: print(f"[saev-ft {time.strftime('%H:%M:%S')}] {m}", flush=True)  # noqa: E731
    t0 = time.time()
    pool = S.make_pool(a.pool, a.seed, a.mismatch)
    log(f"pool of {len(pool)} samples, {len(pool.bad)} mismatched ({time.time() - t0:.0f}s)")

    spath = a.scores or os.path.join(a.out, "scores.json")
    sc = _load(spath)
    if a.scores and sc.get("bad") != sorted(pool.bad):
        raise SystemExit(f"--scores {a.scores}: scores of another pool (its mismatched samples differ; give the same --seed)")
    if sc is None or sc.get("n") != len(pool):
        scorer_m = vi.load(a.scorer)
        scorer = S.train_scorer(scorer_m, steps=a.sae_steps, seed=a.seed)
        log(f"scorer trained ({time.time() - t0:.0f}s)")
        scores = S.score_pool(scorer_m, scorer, pool)
        auroc = filter_auroc({i: float(s) for i, s in enumerate(scores)}, pool.bad)
        sc = {"n": len(pool), "scores": scores.tolist(), "auroc": auroc, "bad": sorted(pool.bad), "scorer": a.scorer}
        write_json(spath, sc)
        del scorer_m, scorer
    scores = np.asarray(sc["scores"])
    log(f"SAE-V filtering AUROC on the pool: {sc['auroc']:.3f}")
    subsets = S.select(scores, pool, seed=a.seed)
    share_bad = {k: float(np.mean([i in pool.bad for i in v])) for k, v in subsets.items()}
    log("mismatched share per subset: " + ", ".join(f"{k} {v:.3f}" for k, v in share_bad.items()))

    rpath = os.path.join(a.out, "results.json")
    res = _load(rpath) or {"runs": {}}
    res.update({"auroc": sc["auroc"], "mismatched_share": share_bad, "settings": vars(a)})
    wdir = weights_dir(a.model)
    proc = AutoProcessor.from_pretrained(wdir, local_files_only=True)
    feats = None
    for name in ["before", "full", "top-50", "random-50", "top-25", "random-25", "matched"]:
        if name in res["runs"] or name not in a.runs.split(","):
            continue
        model = AutoModelForImageTextToText.from_pretrained(wdir, local_files_only=True)
        rec = {}
        if name != "before":
            if feats is None:
                fpath = os.path.join(a.out, "features.safetensors")  # the frozen tower's features, kept between runs
                if os.path.isfile(fpath):
                    from safetensors.torch import load_file

                    feats = load_file(fpath)["features"]
                if feats is None or feats.shape[0] != len(pool):
                    from safetensors.torch import save_file

                    from vlinterp.core.io import atomic_path

                    feats = S.pool_features(model, pool)
                    with atomic_path(fpath) as tmp:
                        save_file({"features": feats.contiguous()}, tmp)
            rec = S.finetune(model, proc, pool, feats, subsets[name], steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed,
                             log=log)
        row = S.measure(VlmAdapter(model, proc, name=f"{a.model}+{name}"), n=a.eval_n, n_captions=a.caption_n)
        row.update(rec, composite=S.composite(row), mismatched_share=share_bad.get(name))
        res["runs"][name] = row
        write_json(rpath, res)
        log(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)))
    runs = res["runs"]
    if "full" not in runs:
        print(json.dumps(runs, indent=1, default=str))
        return res
    res["relative_to_full"] = {k: v["composite"] / runs["full"]["composite"] for k, v in runs.items()}
    write_json(rpath, res)
    if a.plot and all(k in runs for k in ("before", "matched", "top-25", "top-50", "random-25", "random-50")):
        from vlinterp.viz.flow_plot import plot_selection_curves

        metrics = ["presence_random", "presence_adversarial", "colour", "count", "chair_s", "composite"]
        plot_selection_curves([0.25, 0.5, 1.0], _curves(runs, metrics), metrics, a.plot, full=runs["full"],
                              extra={"before fine-tuning": runs["before"], "matched samples only (oracle)": runs["matched"]},
                              title=f"{a.model} fine-tuned {a.steps} steps on a pool with {100 * a.mismatch:.0f}% mismatched "
                                    f"text (SAE-V AUROC {sc['auroc']:.3f})")
    print(json.dumps({k: v for k, v in res.items() if k != "settings"}, indent=1, default=str))
    return res


def _curves(runs: dict, metrics) -> dict:
    """``{rule: {metric: [top/random 25%, 50%, full pool]}}`` from ``runs[run][metric]`` (values or errors)."""
    return {label: {m: [runs[f"{rule}-{x}"][m] for x in (25, 50)] + [runs["full"][m]] for m in metrics}
            for label, rule in (("top x% by SAE-V score", "top"), ("random x%", "random"))}


def summary(dirs: list[str], out: str | None, plot: str | None) -> dict:
    """Means and standard errors over the seeds in ``dirs`` (each a finished ``--out``)."""
    from vlinterp.core.io import write_json
    from vlinterp.eval.saev_finetune import SUMMARY_METRICS, summarise

    per_seed = {}
    for d in dirs:
        r = _load(os.path.join(d, "results.json"))
        if r is None or "full" not in r.get("runs", {}):
            raise SystemExit(f"{d}: no finished results.json (run it with --out {d} first)")
        per_seed[int(r["settings"]["seed"])] = r
    s = summarise(per_seed)
    s["settings"] = {k: v for k, v in next(iter(per_seed.values()))["settings"].items() if k not in ("out", "seed", "runs", "plot")}
    s["per_seed"] = {str(k): {run: {m: v["runs"][run][m] for m in SUMMARY_METRICS} for run in s["runs"]} for k, v in per_seed.items()}
    if out:
        write_json(out, s)
    if plot and all(k in s["runs"] for k in ("before", "matched", "top-25", "top-50", "random-25", "random-50")):
        from vlinterp.viz.flow_plot import plot_selection_curves

        metrics = list(SUMMARY_METRICS)
        st = s["settings"]
        plot_selection_curves([0.25, 0.5, 1.0], _curves(s["mean"], metrics), metrics, plot, full=s["mean"]["full"],
                              extra={"before fine-tuning": s["mean"]["before"], "matched samples only (oracle)": s["mean"]["matched"]},
                              err=_curves(s["se"], metrics), title=f"{st['model']} fine-tuned {st['steps']} steps on pools with {100 * st['mismatch']:.0f}% "
                                             f"mismatched text, mean of {len(s['seeds'])} seeds (± s.e.)")
    print(json.dumps({k: s[k] for k in ("seeds", "auroc", "relative_to_full", "beats_full", "beats_random") if k in s}, indent=1))
    return s


if __name__ == "__main__":
    main()
