"""A model larger than its memory budget, dispatched by accelerate (``device_map="auto"``,
``max_memory``): forward time with captures vs the same model held whole, measured side by side
(interleaved repeats) in one run, and the check that the captures agree.

Without a GPU the budget is the CPU's and the layers past it live on disk (streamed in on each
forward); with ``--gpu-budget MB`` on a GPU machine the split is GPU + CPU.

    python benchmarks/offload.py [--model shapes-llava] [--budget-frac 0.5] [--gpu-budget MB] [--repeats 10]
"""
import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

import vlinterp as vi
from vlinterp.data.shapes import make_split


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--budget-frac", type=float, default=0.5, help="CPU budget as a fraction of the weights (no --gpu-budget)")
    ap.add_argument("--gpu-budget", type=float, help="MB of GPU memory for the weights; the rest on CPU")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    whole = vi.load(a.model, device="cuda" if a.gpu_budget and torch.cuda.is_available() else None)
    size = sum(p.numel() * p.element_size() for p in whole.model.parameters())
    if a.gpu_budget:
        mem = {0: int(a.gpu_budget * 2**20), "cpu": 4 * size}
    else:
        mem = {"cpu": int(size * a.budget_frac)}
    off = vi.load(a.model, device_map="auto", max_memory=mem, offload_folder=tempfile.mkdtemp(prefix="offload-"))
    placed = {}
    for mod, dev in off.model.hf_device_map.items():
        placed[str(dev)] = placed.get(str(dev), 0) + 1
    print(f"{a.model}: weights {size / 2**20:.1f} MB, budget {mem}; modules placed {placed}")
    scenes = make_split("test", a.batch, 3)
    b = whole.prepare(images=[s.pil() for s in scenes], text=["describe the image."] * a.batch)
    r1, r2 = whole.run(b, capture="blocks.*.resid"), off.run(b, capture="blocks.*.resid")
    diff = max(float((r1.cache[k].float().cpu() - r2.cache[k].float().cpu()).abs().max()) for k in r1.cache)
    print(f"max |capture difference| {diff:.2e}, logits {float((r1.logits.float().cpu() - r2.logits.float().cpu()).abs().max()):.2e}")
    tw, to = [], []
    for _ in range(a.repeats):
        for m, acc in ((whole, tw), (off, to)):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            m.run(b, capture="blocks.*.resid")
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            acc.append(time.perf_counter() - t0)
    mw, mo = statistics.median(tw), statistics.median(to)
    print(f"forward with captures, batch {a.batch}: whole {mw * 1e3:.1f} ms, dispatched {mo * 1e3:.1f} ms, ratio {mo / mw:.2f}x "
          f"(median of {a.repeats} interleaved repeats; spread {np.std(to) / mo:.0%})")


if __name__ == "__main__":
    main()
