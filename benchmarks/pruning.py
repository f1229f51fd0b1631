"""Visual token pruning on shapes-llava: accuracy retention, prefill latency and FLOPs ratios of every
method at several keep ratios, all measured side by side in one run (latency: median of repeats,
configurations interleaved; ``lm`` = language-model prefill, ``total`` adds the vision tower).

    python benchmarks/pruning.py [--n 256] [--seed 41] [--keep 0.1,0.25,0.5,0.75]

Same as ``vlinterp prune bench``; prints the table and the floor check of issue 8 (best method at
25% kept: retention >= 0.97 with LM prefill <= 0.6x unpruned).
"""
import argparse

import torch

import vlinterp as vi
from vlinterp.pruning.bench import run_bench, table


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=41)
    p.add_argument("--keep", default="0.1,0.25,0.5,0.75")
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(1)
    m = vi.load("shapes-llava")
    res = run_bench(m, [float(k) for k in a.keep.split(",")], n=a.n, seed=a.seed, repeats=a.repeats)
    print(table(res))
    at = [r for r in res["rows"] if abs(r["keep"] - 0.25) < 1e-9]
    if at:
        best = max(at, key=lambda r: r["retention"]["all"])
        print(f"best at 25% kept: {best['method']} retention {best['retention']['all']:.3f}, "
              f"LM prefill {best['latency_ratio']['lm']:.2f}x, total {best['latency_ratio']['total']:.2f}x, FLOPs {best['flops_ratio']:.2f}x")


if __name__ == "__main__":
    main()
