"""Per-layer recovery-rate curves at the last token, averaged over held-out scenes: what the
README plots for shapes-llava (attention output, MLP output and residual state).

    python -m vlinterp.tracing.curves [--model shapes-llava] [--n 48] [--png assets/tracing_rr_curves.png]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm.auto import tqdm

from ..data.questions import positive_presence
from .localise import localisation
from .trace import trace


def last_token_curves(adapter, n: int = 48, split: str = "test", seed: int = 11, samples: int = 3,
                      components=("attn", "mlp", "resid"), progress: bool = False) -> dict:
    """RR of the means per layer ``{component: [L]}`` for restoring each component at the last
    token, over the positive presence questions of ``n`` scenes that the model answers right."""
    items = positive_presence(split, n, seed)
    pp, pc, pk = [], [], []
    for s, qa in tqdm(items, desc="curves", disable=not progress):
        b = adapter.prepare(images=[s.pil()], text=[qa.question])
        last = b.layout.span("last", 0).tolist()
        lg = adapter.run(b).logits[0, last[0]]
        if lg[adapter.token_id("yes")] <= lg[adapter.token_id("no")]:
            continue
        r = trace(adapter, b, "yes", components=components, positions={"last": last}, samples=samples, seed=int(s.index))
        pp.append(r.arrays["p_patch"][:, :, 0])
        pc.append(float(r.arrays["p_clean"][0]))
        pk.append(float(np.mean(r.arrays["p_corrupt"])))
    rr = (np.mean(pp, 0) - np.mean(pk)) / (np.mean(pc) - np.mean(pk))
    return {"curves": {c: rr[i].tolist() for i, c in enumerate(components)}, "n": len(pc),
            "p_clean": float(np.mean(pc)), "p_corrupt": float(np.mean(pk))}


def main(argv=None) -> None:
    import torch

    from .. import load
    from ..viz.overlay import write_bytes_atomic
    from ..viz.trace_plot import plot_rr_curves

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--png", default="assets/tracing_rr_curves.png")
    ap.add_argument("--json", default="assets/tracing_rr_curves.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    m = load(a.model)
    cur = last_token_curves(m, a.n, seed=a.seed, progress=True)
    loc = localisation(m, a.n, seed=a.seed, progress=True)
    curves = {{"attn": "attention output @ last", "mlp": "MLP output @ last", "resid": "residual @ last"}[k]: v
              for k, v in cur["curves"].items()}
    curves["residual @ object patches"] = loc["object"]
    curves["residual @ equal non-object patches"] = loc["control"]
    plot_rr_curves(curves, a.png, title=f"{m.name}: causal tracing, {cur['n']} held-out scenes (image noise 3σ)")
    out = {"model": m.name, "seed": a.seed, "last_token": cur, "localisation": {k: v for k, v in loc.items() if k != "per_scene"}}
    write_bytes_atomic(a.json, json.dumps(out, indent=1).encode())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
