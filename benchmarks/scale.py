"""Throughput with 1 and 2 Ray workers on the organism, measured side by side in one run:
the modality audit (items/s) and an SAE activation harvest (samples/s). Each worker holds one model
replica and runs one torch thread; the 1-worker run is the in-process path with one thread. Pool
start-up (Ray, model loading) is timed separately from the work.

    python benchmarks/scale.py [--audit-n 192] [--harvest-n 512]
"""
import argparse
import os
import shutil
import tempfile
import time
from functools import partial

from vlinterp.audit import shapes_items
from vlinterp.audit.run import _raw_worker
from vlinterp.eval.sae_parallel import harvest_parallel
from vlinterp.scale import WorkerPool


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--audit-n", type=int, default=192)
    ap.add_argument("--harvest-n", type=int, default=512)
    a = ap.parse_args()
    items = shapes_items(a.audit_n, 5)
    spec = f"shapes:sae-train:{a.harvest_n}:0:caption"
    rows = []
    for workers in (1, 2):
        t0 = time.perf_counter()
        with WorkerPool("shapes-llava", workers) as pool:
            if workers == 1:
                pool.local_adapter()
            else:
                pool.map(partial(_raw_worker, seed=0, factors=False, inside=False, sigma=0.0), items[:2], shard=1, progress=False)  # warm
            start = time.perf_counter() - t0
            t1 = time.perf_counter()
            pool.map(partial(_raw_worker, seed=5, factors=False, inside=True, sigma=0.0), items, shard=32, progress=False)
            t_audit = time.perf_counter() - t1
            out = tempfile.mkdtemp(prefix="scale-bench-")
            try:
                t2 = time.perf_counter()
                harvest_parallel(pool, "shapes-llava", "blocks.2.resid", spec, os.path.join(out, "store"), batch_size=16, shard_samples=64,
                                 keep="content", progress=False)
                t_harvest = time.perf_counter() - t2
            finally:
                shutil.rmtree(out, ignore_errors=True)
        rows.append((workers, start, len(items) / t_audit, a.harvest_n / t_harvest))
        print(f"workers {workers}: start-up {start:.1f} s, audit {len(items) / t_audit:.1f} items/s, harvest {a.harvest_n / t_harvest:.1f} samples/s", flush=True)
    (_, _, a1, h1), (_, _, a2, h2) = rows
    print(f"2 workers vs 1: audit {a2 / a1:.2f}x, harvest {h2 / h1:.2f}x (2 cores; start-up not included)")


if __name__ == "__main__":
    main()
