"""Per-token generation time of each steering method against plain generation, measured side by
side (interleaved repeats) in one run on shapes-llava.

    python benchmarks/steering_overhead.py [--model shapes-llava] [--tokens 16] [--repeats 30]

Issue 7 asks SAVE and IRI to stay within 1.05x plain; VCD (two forwards per token, no KV cache in
our greedy loop) is reported.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

import vlinterp as vi
from vlinterp.data.shapes import make_split
from vlinterp.steering import IRI, SAVE, VCD, MeanDiff


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = vi.load(a.model)
    methods = {"iri": IRI.fit(m, n=16, n_eval=32, lambdas=(1.0,)), "meandiff": MeanDiff.fit(m, n=128, alpha=0.1),
               "save": SAVE.fit(m, n=128), "vcd": VCD()}
    b = m.prepare(images=[make_split("bench", 1, 3)[0].pil()], text=["describe the image."])
    T = a.tokens

    def plain():
        return m.generate(b, max_new_tokens=T, min_new_tokens=T).new_tokens.shape[1]

    def run(name):
        meth = methods[name]
        if name == "vcd":  # our VCD loop has no min-length option: per token = time / T (an underestimate if it stops early)
            meth.generate(m, b, max_new_tokens=T)
            return T
        with meth.applied(m):
            return m.generate(b, max_new_tokens=T, min_new_tokens=T).new_tokens.shape[1]

    times = {k: [] for k in ["plain", *methods]}
    for _ in range(a.repeats):
        for k in times:
            t0 = time.perf_counter()
            n = plain() if k == "plain" else run(k)
            times[k].append((time.perf_counter() - t0) / max(n, 1))
    p = statistics.median(times["plain"])
    print(f"plain: {1e3 * p:.2f} ms/token")
    for k in methods:
        t = statistics.median(times[k])
        print(f"{k:9s}: {1e3 * t:.2f} ms/token, {t / p:.3f}x plain")


if __name__ == "__main__":
    main()
