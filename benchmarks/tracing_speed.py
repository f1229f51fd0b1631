"""Causal-tracing speed: batched ``trace`` vs the naive loop ``trace_naive`` (one forward per cell).

Prints the median time of each over a few repeats and the speed-up, on shapes-llava (the seven
FCCT groups, resid/mlp/attn, 3 noise samples), tiny LLaVA and tiny ViT (every token); also how far
the two agree (max |diff| of P_patch and of RR). Goal on shapes-llava: >= 5x, RR diff <= 1e-5.

    python benchmarks/tracing_speed.py [--repeats 3] [--batch-size 32] [--device cuda]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from PIL import Image

import vlinterp as vi
from vlinterp.tracing import trace, trace_naive


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--models", default="tiny:llava,tiny:vit,shapes-llava",
                    help="tiny models trace every token; organisms trace the seven FCCT groups on a shapes scene")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(1)
    img = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))
    for name in a.models.split(","):
        m = vi.load(name, device=a.device)
        organism = not name.startswith("tiny:")
        im = Image.open(os.path.join(os.path.dirname(__file__), "..", "assets", "example_scene.png")) if organism else img
        b = m.prepare(images=[im], text=["is there a yellow circle?"]) if m.kind == "vlm" else m.prepare(images=[im])
        target = "yes" if m.kind == "vlm" else 0
        kw = dict(components=("resid", "mlp", "attn"), positions="groups" if organism else "tokens", samples=3)
        tf, tn = [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter(); fast = trace(m, b, target, batch_size=a.batch_size, **kw); tf.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); slow = trace_naive(m, b, target, **kw); tn.append(time.perf_counter() - t0)
        diff = float(np.abs(fast.arrays["p_patch"] - slow.arrays["p_patch"]).max())
        rr_diff = float(np.abs(fast.arrays["rr"] - slow.arrays["rr"]).max())
        f, n = statistics.median(tf), statistics.median(tn)
        print(f"{name}: cells={fast.arrays['rr'].size} batched={f:.3f}s naive={n:.3f}s speedup={n / f:.1f}x "
              f"max|P diff|={diff:.2e} max|RR diff|={rr_diff:.2e}")


if __name__ == "__main__":
    main()
