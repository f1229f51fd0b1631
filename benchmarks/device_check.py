"""Does every user-facing path run on an accelerator, and give what it gives on the CPU?

Each check runs the same call on the CPU and on ``--device`` (a fresh copy of the model on each)
and prints: ok or the error, the largest difference between the two results, and both times.
Checks whose libraries are missing (captum, pytorch-grad-cam, open_clip...) report the ImportError.

    python benchmarks/device_check.py --device cuda [--json PATH]

The tests never need a GPU; this is run by hand where one is lent (see README, Benchmarks).
"""
from __future__ import annotations

import argparse
import json
import os
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import vlinterp as vi  # noqa: E402
from vlinterp.data.shapes import make_split  # noqa: E402


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    if isinstance(x, dict):
        return {k: _np(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (torch.Tensor, np.ndarray)):
        return [_np(v) for v in x]
    return x


def diff(a, b) -> float:
    """Largest absolute difference between two results of the same shape (strings: 0 or inf)."""
    if isinstance(a, dict):
        return max((diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (list, tuple)) and a and not isinstance(a[0], str):
        return max(diff(x, y) for x, y in zip(a, b))
    if isinstance(a, (str, list, tuple)):
        return 0.0 if a == b else float("inf")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max()) if a.size else 0.0


def checks(scene, q):
    """``{name: (model name, fn(model, batch) -> result)}``."""
    from vlinterp.steering import IRI, VCD
    from vlinterp.tracing import trace, trace_naive

    def sal(name, **kw):
        from vlinterp import saliency

        return lambda m, b: saliency.get(name)(m, **kw).attribute(b, target="yes").scores

    def tr(fn):
        return lambda m, b: fn(m, b, "yes", components=("resid", "mlp", "attn"), positions="groups", samples=2).arrays["rr"]

    def iri(m, b):
        with IRI([("attn", 1, 1.0), ("mlp", 1, 1.0)], [("attn", 3), ("mlp", 3)], lam=2.0).applied(m):
            return m.generate(b, max_new_tokens=8).texts

    def meandiff(m, b):
        from vlinterp.eval.steer import fit

        s = fit("meandiff", m, n=32, alpha=0.2)
        with s.applied(m):
            return m.generate(b, max_new_tokens=8).texts

    def prune(spec):
        def fn(m, b):
            from vlinterp.eval.prune import resolve_horizon
            from vlinterp.pruning import PrunedLM, make_pruner

            return PrunedLM(m).generate(b, resolve_horizon(m, make_pruner(spec)), max_new_tokens=6).texts

        return fn

    def harvest(m, b):
        from vlinterp.eval.sae_data import shapes_items
        from vlinterp.sae import ActivationStore

        st = ActivationStore.harvest(m, "blocks.2.resid", shapes_items("dev", 16, 0), batch_size=8, progress=False)
        return st.rows["acts"] if "acts" in st.rows else next(iter(st.rows.values()))

    def pope(m, b):
        from vlinterp.eval.pope import pope as p

        return p(m, "adversarial", "dev", 32, 1)["accuracy"]

    def probe(m, b):
        from vlinterp.eval.steer import fit

        s = fit("probe", m, n=64, n_captions=32, alpha=0.2)
        with s.applied(m):
            return m.generate(b, max_new_tokens=8).texts

    def deletion(m, b):
        from vlinterp import saliency
        from vlinterp.metrics.faithfulness import deletion_auc, llava_score_fn

        res = saliency.get("relevancy")(m).attribute(b, target="yes")
        return deletion_auc(scene.pil(), res, llava_score_fn(m, q, "yes"), steps=8)

    def audit(m, b):
        from vlinterp.audit.run import last_states

        return last_states(m, [(scene.pil(), q)]), last_states(m, [(None, q)])

    def protos(m, b):
        from vlinterp.prototypes.features import patch_features
        from vlinterp.prototypes.fit import default_site

        return patch_features(m, [scene.pil()] * 2, default_site(m), noise=0.1).feats

    L = "shapes-llava"
    return {
        "forward + capture": (L, lambda m, b: m.run(b, capture=["blocks.*.resid"]).cache.get("blocks.3.resid")),
        "logits": (L, lambda m, b: m.run(b).logits),
        "attention maps": (L, lambda m, b: m.attention(b, layers=[0, 3])),
        "generate": (L, lambda m, b: m.generate(b, max_new_tokens=8).texts),
        "saliency attention": (L, sal("attention")),
        "saliency rollout": (L, sal("rollout")),
        "saliency relevancy": (L, sal("relevancy")),
        "saliency gradcam": (L, sal("gradcam")),
        "saliency ig": (L, sal("ig")),
        "saliency tam": (L, sal("tam")),
        "trace (batched)": (L, tr(trace)),
        "trace (naive)": (L, tr(trace_naive)),
        "IRI generate": (L, iri),
        "VCD generate": (L, lambda m, b: VCD().generate(m, b, max_new_tokens=8).texts),
        "MeanDiff fit + generate": (L, meandiff),
        "pruning fastv 25%": (L, prune("fastv:0.25")),
        "pruning hybrid 25%": (L, prune("hybrid:0.25")),
        "pruning visionzip tower 25%": (L, prune("visionzip:0.25:tower_layer=3")),
        "ProbeSteer fit + generate": (L, probe),
        "SAE store harvest": (L, harvest),
        "deletion AUC (relevancy)": (L, deletion),
        "audit last states": (L, audit),
        "prototype patch features": ("shapes-vit", protos),
        "POPE adversarial (32)": (L, pope),
        "tiny:vit relevancy": ("tiny:vit", lambda m, b: __import__("vlinterp").saliency.get("relevancy")(m).attribute(b, target=0).scores),
        "tiny:llava-next generate": ("tiny:llava-next", lambda m, b: m.generate(b, max_new_tokens=4).texts),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", help="comma-separated substrings of check names")
    ap.add_argument("--json")
    a = ap.parse_args()
    scene = make_split("device-check", 1, 3)[0]
    q = "is there a red circle?"
    models: dict = {}

    def model(name, dev):
        if (name, dev) not in models:
            models[name, dev] = vi.load(name, device=dev)
        return models[name, dev]

    def batch(m):
        if m.kind == "vlm":
            return m.prepare(images=[scene.pil()], text=[q])
        return m.prepare(images=[scene.pil()])

    rows = []
    for name, (mname, fn) in checks(scene, q).items():
        if a.only and not any(s in name for s in a.only.split(",")):
            continue
        row = {"check": name, "model": mname}
        try:
            out = {}
            for key, dev in (("cpu", "cpu"), ("dev", a.device)):
                m = model(mname, dev)
                b = batch(m)
                fn(m, b)  # warm-up (kernels, caches)
                if dev.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                out[key] = _np(fn(m, b))
                if dev.startswith("cuda"):
                    torch.cuda.synchronize()
                row[f"s_{key}"] = round(time.perf_counter() - t0, 4)
            row["max_diff"] = diff(out["cpu"], out["dev"])
            row["ok"] = True
        except Exception as e:  # noqa: BLE001 -- the report names every failure
            row["ok"] = False
            row["error"] = f"{type(e).__name__}: {e}"[:300]
            row["where"] = traceback.format_exc().strip().splitlines()[-3][:200]
        rows.append(row)
        status = f"ok  max|cpu-{a.device}|={row['max_diff']:.2e}  cpu {row['s_cpu']:.3f}s  {a.device} {row['s_dev']:.3f}s" \
            if row["ok"] else f"FAIL {row['error']}  ({row['where'].strip()})"
        print(f"{name:26s} {status}", flush=True)
    print(f"{sum(r['ok'] for r in rows)}/{len(rows)} checks ran on {a.device}")
    if a.json:
        from vlinterp.viz.overlay import write_bytes_atomic

        write_bytes_atomic(a.json, json.dumps(rows, indent=1).encode())


if __name__ == "__main__":
    main()
