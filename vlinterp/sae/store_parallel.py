"""Harvest an activation store over Ray workers: each worker computes whole store shards (sample
ranges ``[k*S, (k+1)*S)``) and writes them straight into the store directory (temp file + rename);
the driver lists each finished shard in the manifest (rewritten atomically) as it completes. A shard
whose worker dies is not listed, so a rerun on the same directory removes its leftovers and redoes
it: the finished store holds exactly the rows of an uninterrupted single-process harvest (same
shards, same batches inside each shard).

Workers rebuild the items from the dataset spec (``shapes:...`` / ``jsonl:...``), so no images
travel over the wire.
"""
from __future__ import annotations

import json
import os
from functools import partial

import torch

from ..core.errors import LoadError
from ..zoo.common import write_json_atomic
from .store import MANIFEST, ActivationStore, _cat, _prepare, _save_shard, items_from_spec, rows_from_batch

_ITEMS: dict[str, list] = {}


def _items(spec: str) -> list:
    if spec not in _ITEMS:
        _ITEMS[spec] = items_from_spec(spec)
    return _ITEMS[spec]


def harvest_shard(adapter, spec: str, site: str, k: int, out_dir: str, shard_samples: int, batch_size: int, keep: str,
                  dtype=torch.float32) -> dict:
    """Compute store shard ``k`` and write ``shard_{k:05d}.safetensors``; returns its manifest entry."""
    items = _items(spec)
    a, z = k * shard_samples, min((k + 1) * shard_samples, len(items))
    parts = []
    with torch.no_grad():
        for i in range(a, z, batch_size):
            chunk = list(range(i, min(i + batch_size, z)))
            r = rows_from_batch(adapter, _prepare(adapter, [items[j] for j in chunk]), site, chunk, keep, dtype)
            if not torch.isfinite(r["acts"]).all():
                from ..core.errors import NaNError

                raise NaNError(f"non-finite activations at {site} for samples {chunk[0]}..{chunk[-1]}")
            parts.append(r)
    rows = _cat(parts)
    name = f"shard_{k:05d}.safetensors"
    _save_shard(os.path.join(out_dir, name), rows)
    return {"file": name, "rows": int(rows["acts"].shape[0]), "samples": [a, z - 1], "d": int(rows["acts"].shape[1]),
            "family": adapter.family}


def _worker(adapter, ks, start, **kw):
    return [harvest_shard(adapter, k=k, **kw) for k in ks]


def harvest_parallel(pool, model_name: str, site: str, spec: str, out_dir: str, batch_size: int = 16, shard_samples: int = 256,
                     keep: str = "all", progress: bool = True) -> ActivationStore:
    """Harvest ``site`` over the dataset ``spec`` into ``out_dir`` with the workers of ``pool``
    (a :class:`~vlinterp.scale.WorkerPool` on ``model_name``); resumable like
    :meth:`ActivationStore.harvest`, and with the same shards."""
    n = len(_items(spec))
    meta = {"site": site, "model": model_name, "keep": keep, "n_items": n, "dtype": "float32", "shards": [], "samples_done": 0,
            "dataset": spec}
    os.makedirs(out_dir, exist_ok=True)
    mpath = os.path.join(out_dir, MANIFEST)
    if os.path.exists(mpath):
        with open(mpath) as f:
            old = json.load(f)
        for key in ("site", "keep", "n_items", "dtype"):
            if old.get(key) != meta[key]:
                raise LoadError(f"{out_dir} holds a harvest with {key}={old.get(key)!r}, not {meta[key]!r}; use another directory")
        meta = old
    listed = {s["file"] for s in meta["shards"]}
    for f in os.listdir(out_dir):  # leftovers of a killed worker or run
        if (f.startswith("shard_") and f not in listed) or f.startswith(".tmp-"):
            os.remove(os.path.join(out_dir, f))
    n_shards = -(-n // shard_samples)
    todo = [k for k in range(n_shards) if f"shard_{k:05d}.safetensors" not in listed]

    def done(results):
        for entry in results:
            meta["d"], meta["family"] = entry.pop("d"), entry.pop("family")
            meta["shards"].append(entry)
            meta["shards"].sort(key=lambda s: s["samples"][0])
        covered, nxt = sorted(s["samples"] for s in meta["shards"]), 0
        for a, z in covered:  # samples_done = the contiguous prefix that is finished
            if a != nxt:
                break
            nxt = z + 1
        meta["samples_done"] = nxt
        write_json_atomic(mpath, meta)

    work = partial(_worker, spec=spec, site=site, out_dir=os.path.abspath(out_dir), shard_samples=shard_samples, batch_size=batch_size, keep=keep)
    pool.map(work, todo, shard=1, desc=f"harvest {site} (store shards)", ids=[f"shard {k}" for k in todo], progress=progress, on_done=done)
    meta["complete"] = True
    write_json_atomic(mpath, meta)
    return ActivationStore.open(out_dir)


__all__ = ["harvest_parallel", "harvest_shard"]
