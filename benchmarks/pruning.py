"""Visual token pruning on shapes-llava: accuracy retention, prefill latency and FLOPs ratios of every
method at several keep ratios, all measured side by side in one run (latency: median of repeats,
configurations interleaved; ``lm`` = language-model prefill, ``total`` adds the vision tower).

    python benchmarks/pruning.py [--n 256] [--seed 41] [--keep 0.1,0.25,0.5,0.75]

Same as ``vlinterp prune bench``; prints the table and the floor check of issue 8 at 25% kept: the
method with the lowest whole-prefill latency among those keeping >= 97% of the accuracy.
"""
import argparse

import torch

import vlinterp as vi
from vlinterp.eval.prune import run_bench, table


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=41)
    p.add_argument("--keep", default="0.1,0.25,0.5,0.75")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--methods", default="random;fastv;visionzip;visionzip[tower_layer=3];info;hybrid", help="';'-separated")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(1)
    m = vi.load("shapes-llava", device=a.device)
    res = run_bench(m, [float(k) for k in a.keep.split(",")], methods=a.methods.split(";"), n=a.n, seed=a.seed, repeats=a.repeats)
    print(table(res))
    at = [r for r in res["rows"] if abs(r["keep"] - 0.25) < 1e-9]
    good = [r for r in at if r["retention"]["all"] >= 0.97]
    for r in sorted(good, key=lambda r: r["latency_ratio"]["total"])[:1]:
        print(f"fastest at 25% kept with retention >= 0.97: {r['method']} retention {r['retention']['all']:.3f}, "
              f"LM prefill {r['latency_ratio']['lm']:.2f}x, total {r['latency_ratio']['total']:.2f}x, "
              f"FLOPs LM {r['flops_ratio']:.2f}x, whole {r['flops_ratio_total']:.2f}x")
    if at and not good:
        print("no method keeps >= 0.97 at 25% kept")


if __name__ == "__main__":
    main()
