"""IRI on shapes-llava: fit on calibration scenes, then POPE on held-out scenes (fresh seed),
unsteered vs steered, and the per-token generation time of both measured side by side.

    python benchmarks/iri_pope.py [--model shapes-llava] [--n 512] [--seed 11] [--json out.json]

Acceptance (issue 5): adversarial accuracy +3 points or more, random accuracy -1 point or less,
generation time per token <= 1.05x plain.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import vlinterp as vi
from vlinterp.data.questions import pope_split
from vlinterp.eval.pope import pope
from vlinterp.eval.steer import fit
from vlinterp.steering.base import config_dict


def per_token_seconds(m, batch, new_tokens: int, ctx=None) -> float:
    import contextlib

    with ctx or contextlib.nullcontext():
        t0 = time.perf_counter()
        g = m.generate(batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        dt = time.perf_counter() - t0
    return dt / g.new_tokens.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--n", type=int, default=512, help="held-out POPE questions per negative type")
    ap.add_argument("--seed", type=int, default=11, help="held-out seed (the calibration split is separate)")
    ap.add_argument("--calib", type=int, default=32, help="calibration scenes traced")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = vi.load(a.model)
    t0 = time.time()
    iri = fit("iri", m, n=a.calib, progress=True)
    print(f"fitted in {time.time() - t0:.0f}s: sources {iri.sources}, targets {iri.targets}, lambda {iri.lam}")
    print("calibration grid:", json.dumps(iri.meta["calibration"]["grid"]))
    rows = {}
    for neg in ("random", "popular", "adversarial"):
        base = pope(m, neg, "test", a.n, a.seed)
        with iri.applied(m):
            steer = pope(m, neg, "test", a.n, a.seed)
        rows[neg] = {"unsteered": base, "iri": steer}
        print(f"POPE {neg:11s}: accuracy {base['accuracy']:.4f} -> {steer['accuracy']:.4f} "
              f"({100 * (steer['accuracy'] - base['accuracy']):+.1f} pt), false-yes {base['false_yes']:.3f} -> {steer['false_yes']:.3f}")
    s, qa = pope_split("test", 1, a.seed, "random")[0]
    b = m.prepare(images=[s.pil()], text=[qa.question])
    plain, steered = [], []
    for _ in range(a.repeats):  # interleaved, so both see the same machine load
        plain.append(per_token_seconds(m, b, 8))
        steered.append(per_token_seconds(m, b, 8, iri.applied(m)))
    ratio = statistics.median(steered) / statistics.median(plain)
    print(f"generation per token: plain {1e3 * statistics.median(plain):.2f} ms, IRI {1e3 * statistics.median(steered):.2f} ms, ratio {ratio:.3f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"iri": {**iri.state(), "config": config_dict(iri.config), "meta": iri.meta}, "pope": rows,
                       "time_ratio": ratio}, f, indent=1)


if __name__ == "__main__":
    main()
