"""Capture overhead: (forward capturing every ``blocks.*.resid``) / (plain forward).

Runs both interleaved in one process (A B A B ...), prints the median time of each and the
median of the per-pair ratios, for the tiny LLaVA and ViT models and every shipped organism.
Goal: ratio <= 1.10.

    python benchmarks/capture_overhead.py [--repeats 30] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

import vlinterp as vi  # noqa: E402
from vlinterp.adapters.describe import sample_inputs  # noqa: E402


def _time(fn, device="cpu") -> float:
    t0 = time.perf_counter()
    fn()
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench(name: str, repeats: int, batch: int, device: str = "cpu") -> dict:
    m = vi.load(name, device=device)
    inp = sample_inputs(m.kind)
    inp = {k: v * batch for k, v in inp.items()}
    b = m.prepare(**inp)
    pattern = "blocks.*.resid" if m.sites("**") and any(s.startswith("blocks.") for s in m.sites()) else "vision.blocks.*.resid"
    n_sites = len(m.sites(pattern))
    plain = lambda: m.run(b)  # noqa: E731
    capt = lambda: m.run(b, capture=pattern)  # noqa: E731
    for _ in range(3):
        plain(), capt()
    tp, tc, ratios = [], [], []
    for _ in range(repeats):
        a, c = _time(plain, device), _time(capt, device)
        tp.append(a)
        tc.append(c)
        ratios.append(c / a)
    return {
        "model": name, "device": device, "sites": pattern, "n_sites": n_sites, "batch": batch,
        "plain_ms": 1e3 * statistics.median(tp), "capture_ms": 1e3 * statistics.median(tc),
        "ratio_median": statistics.median(ratios),
        "ratio_of_medians": statistics.median(tc) / statistics.median(tp),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--models", default="")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    from vlinterp import zoo

    names = a.models.split(",") if a.models else ["tiny:llava", "tiny:vit"] + [n for n in zoo.names() if zoo.available(n) and n != "shapes-diffusion"]
    rows = []
    print(f"{'model':<16} {'sites':<26} {'plain ms':>9} {'capture ms':>11} {'pair ratio':>11} {'ratio of medians':>17}")
    for n in names:
        r = bench(n, a.repeats, a.batch, a.device)
        rows.append(r)
        print(f"{r['model']:<16} {r['sites'] + ' x' + str(r['n_sites']):<26} {r['plain_ms']:9.2f} {r['capture_ms']:11.2f} {r['ratio_median']:11.3f} {r['ratio_of_medians']:17.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
