"""SAE pipeline throughput, measured side by side in one run.

1. Harvest: rows/s of ``ActivationStore.harvest`` (in memory, and to disk shards) against a plain
   loop (a forward hook on the site's module appending every non-padding token's activation to a
   list), same model, items and batch size.
2. Training: tokens/s of ``train_sae`` (balanced batches, NaN guard, checkpoints) against SAELens's
   own ``SAETrainer.fit`` on a plain iterator of random row batches, same SAE and step count.

    python benchmarks/sae_throughput.py [--model shapes-llava] [--site blocks.2.resid] [--n 256]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

import vlinterp as vi
from vlinterp.core.layout import PAD
from vlinterp.eval.sae_data import shapes_items
from vlinterp.sae import ActivationStore
from vlinterp.sae.store import _prepare
from vlinterp.sae.train import make_sae, train_sae


def plain_harvest(m, site, items, batch_size):
    module = m._session.module(site)
    rows, cur = [], {}

    def hook(mod, args, out):
        t = out[0] if isinstance(out, tuple) else out
        rows.append(t.detach()[cur["mask"]].clone())

    h = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for i in range(0, len(items), batch_size):
                b = _prepare(m, items[i:i + batch_size])
                cur["mask"] = torch.as_tensor(b.layout.modality != PAD)
                m.model(**b.inputs)
    finally:
        h.remove()
    return torch.cat(rows)


def main() -> None:
    from sae_lens import LoggingConfig, SAETrainer
    from sae_lens.config import SAETrainerConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--site", default="blocks.2.resid")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = vi.load(a.model)
    items = shapes_items("bench", a.n, 0, "mixed")
    t_plain, t_mem, t_disk = [], [], []
    for _ in range(a.repeats):  # interleaved
        t0 = time.perf_counter(); ref = plain_harvest(m, a.site, items, a.batch_size); t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); st = ActivationStore.harvest(m, a.site, items, batch_size=a.batch_size, progress=False); t_mem.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter(); ActivationStore.harvest(m, a.site, items, out_dir=d, batch_size=a.batch_size, shard_samples=64, progress=False); t_disk.append(time.perf_counter() - t0)
    n = len(ref)
    assert n == len(st), (n, len(st))
    p, mm, dd = min(t_plain), min(t_mem), min(t_disk)
    print(f"harvest {n} rows: plain hook loop {n / p:.0f} rows/s, store in memory {n / mm:.0f} rows/s ({p / mm:.2f}x), "
          f"store to disk shards {n / dd:.0f} rows/s ({p / dd:.2f}x)")

    B = 256
    t_ours, t_ref = [], []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        train_sae(st, d_sae=512, k=32, steps=a.steps, batch_size=B, image_fraction=0.5, progress=False)
        t_ours.append(time.perf_counter() - t0)
        sae = make_sae("topk", st.d, 512, 32, rescale_acts_by_decoder_norm=False)
        g = torch.Generator().manual_seed(0)

        def batches():
            while True:
                yield st.acts[torch.randint(len(st), (B,), generator=g)]

        cfg = SAETrainerConfig(total_training_samples=a.steps * B, train_batch_size_samples=B, lr=3e-4, lr_end=3e-4,
                               logger=LoggingConfig(log_to_wandb=False))
        t0 = time.perf_counter()
        SAETrainer(cfg, sae, batches()).fit()
        t_ref.append(time.perf_counter() - t0)
    o, r = min(t_ours), min(t_ref)
    print(f"training {a.steps * B} tokens: SAELens fit on a plain iterator {a.steps * B / r:.0f} tok/s, "
          f"vlinterp train_sae {a.steps * B / o:.0f} tok/s ({r / o:.2f}x)")


if __name__ == "__main__":
    main()
