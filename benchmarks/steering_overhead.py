"""Per-token generation time of each steering method against plain generation, measured side by
side (interleaved repeats) in one run on shapes-llava.

    python benchmarks/steering_overhead.py [--model shapes-llava] [--tokens 32] [--repeats 40] [--methods iri,save] [--device cuda]

Issue 7 asks SAVE and IRI to stay within 1.05x plain; probe steering, grounding, mean-difference and
VCD (a second, noised-image forward per token, with its own KV cache) are reported.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

import vlinterp as vi
from vlinterp.data.shapes import make_split
from vlinterp.eval.steer import fit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--methods", default="iri,meandiff,save,probe,ground,vcd")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = vi.load(a.model, device=a.device)
    opts = {"iri": dict(n=16, n_calib=32, lambdas=(1.0,)), "meandiff": dict(n=128, alpha=0.1), "save": dict(n=128),
            "probe": dict(n=256, n_captions=128, alpha=0.2), "ground": dict(n=256, alpha=3.0, beta=1.0, gate=1.0), "vcd": {}}
    methods = {k: fit(k, m, **opts[k]) for k in a.methods.split(",")}
    b = m.prepare(images=[make_split("bench", 1, 3)[0].pil()], text=["describe the image."])
    T = a.tokens

    def plain():
        return m.generate(b, max_new_tokens=T, min_new_tokens=T).new_tokens.shape[1]

    def run(name):
        with methods[name].applied(m):
            return m.generate(b, max_new_tokens=T, min_new_tokens=T).new_tokens.shape[1]

    def timed(fn):
        t0 = time.perf_counter()
        n = fn()
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / max(n, 1)

    # each method's run is bracketed by two plain runs; its ratio is against their mean, so slow
    # drifts of the machine's speed (the other core's load) cancel within a repeat
    plain_t, times, ratios = [], {k: [] for k in methods}, {k: [] for k in methods}
    for _ in range(a.repeats):
        for k in methods:
            p0 = timed(plain)
            t = timed(lambda: run(k))
            p1 = timed(plain)
            plain_t += [p0, p1]
            times[k].append(t)
            ratios[k].append(t / ((p0 + p1) / 2))
    print(f"plain: {1e3 * statistics.median(plain_t):.2f} ms/token ({a.tokens} tokens, {a.repeats} repeats)")
    for k in methods:
        q = statistics.quantiles(ratios[k], n=4)
        print(f"{k:9s}: {1e3 * statistics.median(times[k]):.2f} ms/token, {statistics.median(ratios[k]):.3f}x plain "
              f"(median of bracketed ratios; quartiles {q[0]:.3f}-{q[2]:.3f})")


if __name__ == "__main__":
    main()
