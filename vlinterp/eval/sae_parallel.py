"""Harvest an activation store over Ray workers: each worker computes whole store shards (sample
ranges ``[k*S, (k+1)*S)``) and writes each to a temp file in the store directory; the driver moves
it into place (recorded as vlinterp's, :mod:`vlinterp.core.io`) and lists it in the manifest
(rewritten atomically) as it completes. A shard whose worker dies is never moved into place nor
listed, so a rerun on the same directory removes its temp file and redoes it: the finished store
holds exactly the rows of an uninterrupted single-process harvest (same shards, same batches
inside each shard).

Workers rebuild the items from the dataset spec (:func:`~vlinterp.eval.sae_data.items_from_spec`),
so no images travel over the wire.
"""
from __future__ import annotations

import os
import uuid
from functools import partial

import torch

from ..core.io import atomic_path, write_json
from ..sae.store import MANIFEST, ActivationStore, _cat, _prepare, _tokens, resume_manifest, rows_from_batch
from .sae_data import items_from_spec

_ITEMS: dict[str, list] = {}


def _items(spec: str) -> list:
    if spec not in _ITEMS:
        _ITEMS[spec] = items_from_spec(spec)
    return _ITEMS[spec]


def harvest_shard(adapter, spec: str, site: str, k: int, out_dir: str, shard_samples: int, batch_size: int, tokens: str,
                  dtype=torch.float32) -> dict:
    """Compute store shard ``k`` into a temp file in ``out_dir``; returns its manifest entry (with
    ``tmp``: the file the driver moves to ``shard_{k:05d}.safetensors``)."""
    from safetensors.torch import save_file

    items = _items(spec)
    a, z = k * shard_samples, min((k + 1) * shard_samples, len(items))
    parts = []
    with torch.no_grad():
        for i in range(a, z, batch_size):
            chunk = list(range(i, min(i + batch_size, z)))
            r = rows_from_batch(adapter, _prepare(adapter, [items[j] for j in chunk]), site, chunk, tokens, dtype)
            if not torch.isfinite(r["acts"]).all():
                from ..core.errors import NaNError

                raise NaNError(f"non-finite activations at {site} for samples {chunk[0]}..{chunk[-1]}")
            parts.append(r)
    rows = _cat(parts)
    name = f"shard_{k:05d}.safetensors"
    tmp = os.path.join(out_dir, f".tmp-{name}-{uuid.uuid4().hex[:8]}")
    save_file({key: v.contiguous() for key, v in rows.items()}, tmp)
    return {"file": name, "rows": int(rows["acts"].shape[0]), "samples": [a, z - 1], "d": int(rows["acts"].shape[1]),
            "family": adapter.family, "tmp": tmp}


def _worker(adapter, ks, start, **kw):
    return [harvest_shard(adapter, k=k, **kw) for k in ks]


def harvest_parallel(pool, model_name: str, site: str, spec: str, out_dir: str, batch_size: int = 16, shard_samples: int = 256,
                     tokens: str | None = None, progress: bool = True, keep: str | None = None) -> ActivationStore:
    """Harvest ``site`` over the dataset ``spec`` into ``out_dir`` with the workers of ``pool``
    (a :class:`~vlinterp.scale.WorkerPool` on ``model_name``); resumable like
    :meth:`~vlinterp.sae.store.ActivationStore.harvest`, and with the same shards."""
    tokens = _tokens(tokens, keep)
    n = len(_items(spec))
    meta = {"site": site, "model": model_name, "tokens": tokens, "n_items": n, "dtype": "float32", "shards": [], "samples_done": 0,
            "dataset": spec}
    meta, _ = resume_manifest(out_dir, meta, ("site", "tokens", "n_items", "dtype"))
    mpath = os.path.join(out_dir, MANIFEST)
    listed = {s["file"] for s in meta["shards"]}
    n_shards = -(-n // shard_samples)
    todo = [k for k in range(n_shards) if f"shard_{k:05d}.safetensors" not in listed]

    def done(results):
        for entry in results:
            tmp = entry.pop("tmp")
            with atomic_path(os.path.join(out_dir, entry["file"])) as dest:
                os.replace(tmp, dest)
            meta["d"], meta["family"] = entry.pop("d"), entry.pop("family")
            meta["shards"].append(entry)
            meta["shards"].sort(key=lambda s: s["samples"][0])
        covered, nxt = sorted(s["samples"] for s in meta["shards"]), 0
        for a, z in covered:  # samples_done = the contiguous prefix that is finished
            if a != nxt:
                break
            nxt = z + 1
        meta["samples_done"] = nxt
        write_json(mpath, meta)

    work = partial(_worker, spec=spec, site=site, out_dir=os.path.abspath(out_dir), shard_samples=shard_samples, batch_size=batch_size,
                   tokens=tokens)
    pool.map(work, todo, shard=1, desc=f"harvest {site} (store shards)", ids=[f"shard {k}" for k in todo], progress=progress, on_done=done)
    meta["complete"] = True
    write_json(mpath, meta)
    return ActivationStore.open(out_dir)


__all__ = ["harvest_parallel", "harvest_shard"]
