"""Shard work over Ray workers, each holding one model replica.

``with WorkerPool("shapes-llava", workers=2) as pool: out = pool.map(fn, items, shard=32)`` splits
``items`` into contiguous shards of ``shard`` items, runs ``fn(adapter, shard_items, first_index)``
on the workers (each loads the model once, by name or path, with ``vlinterp.load``), and returns the
per-item results concatenated in item order, exactly as one process calling ``fn`` shard by shard
would. ``fn`` must be a module-level function (it is shipped to the workers by reference).

``workers <= 1`` runs in this process without Ray (torch's thread setting untouched; workers run
``threads`` each, 1 by default: on the organisms the numbers agree bit for bit either way). ``address`` connects to an existing cluster
(``ray://host:port`` or ``auto``); otherwise a local Ray instance with ``workers`` CPUs is started and
shut down on exit. A failed shard raises :class:`WorkerError` naming the first item id of the shard.
Progress (tqdm) counts finished items across all workers.
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm

from ..core.errors import VlinterpError


class WorkerError(VlinterpError, RuntimeError):
    """A worker failed on a shard; the message names the shard's items."""


def _require_ray():
    try:
        import ray
    except ImportError:
        raise VlinterpError("--workers needs Ray: pip install 'vlinterp[scale]' (ray, accelerate)") from None
    return ray


def _make_actor(ray):
    @ray.remote(num_cpus=1)
    class ShardWorker:
        def __init__(self, model: str, threads: int, env: dict, load_options: dict):
            os.environ.update(env)
            import torch

            torch.set_num_threads(threads)
            import vlinterp as vi

            self.adapter = vi.load(model, **load_options)

        def run(self, fn, items, start: int):
            return fn(self.adapter, items, start)

    return ShardWorker


class WorkerPool:
    def __init__(self, model: str, workers: int = 1, address: str | None = None, threads: int = 1,
                 load_options: dict | None = None):
        """``load_options``: keyword arguments of ``vlinterp.load`` (``dtype``, ``device``) for every replica."""
        self.model, self.workers, self.address, self.threads = model, int(workers), address, int(threads)
        self.load_options = dict(load_options or {})
        self._ray = None
        self._actors = []
        self._started = False
        self._local = None

    def __enter__(self) -> "WorkerPool":
        if self.workers <= 1:
            return self
        ray = _require_ray()
        self._ray = ray
        if not ray.is_initialized():
            kw = {"address": self.address} if self.address else {"num_cpus": self.workers, "include_dashboard": False}
            ray.init(log_to_driver=False, **kw)
            self._started = True
        env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "TRANSFORMERS_", "VLINTERP_", "OMP_"))}
        Actor = _make_actor(ray)
        self._actors = [Actor.remote(self.model, self.threads, env, self.load_options) for _ in range(self.workers)]
        return self

    def __exit__(self, *exc):
        if self._ray is not None:
            for a in self._actors:
                self._ray.kill(a)
            self._actors = []
            if self._started:
                self._ray.shutdown()
        return False

    def local_adapter(self):
        if self._local is None:
            import vlinterp as vi

            self._local = vi.load(self.model, **self.load_options)
        return self._local

    def map(self, fn, items: list, shard: int = 32, desc: str = "items", ids=None, progress: bool = True, on_done=None) -> list:
        """Per-item results of ``fn(adapter, items[a:b], a) -> list`` over contiguous shards, in order.
        ``on_done(results)`` is called here, in the driver, as each shard finishes (any order)."""
        shards = [(a, items[a:a + shard]) for a in range(0, len(items), shard)]
        bar = tqdm(total=len(items), desc=desc, disable=not progress)
        out: list = [None] * len(shards)
        if not self._actors:
            ad = self.local_adapter()
            for k, (a, chunk) in enumerate(shards):
                out[k] = fn(ad, chunk, a)
                if on_done is not None:
                    on_done(out[k])
                bar.update(len(chunk))
        else:
            ray = self._ray
            pending = {}
            queue = list(enumerate(shards))
            free = list(self._actors)
            while queue or pending:
                while queue and free:
                    k, (a, chunk) = queue.pop(0)
                    actor = free.pop(0)
                    pending[actor.run.remote(fn, chunk, a)] = (k, actor, a, len(chunk))
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                k, actor, a, n = pending.pop(ref)
                try:
                    out[k] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - surfaced with the shard's item ids
                    first = ids[a] if ids is not None else a
                    raise WorkerError(f"worker failed on items {first}.. ({n} items from index {a}): {e}") from e
                if on_done is not None:
                    on_done(out[k])
                free.append(actor)
                bar.update(n)
        bar.close()
        merged = []
        for k, (a, chunk) in enumerate(shards):
            if len(out[k]) != len(chunk):
                raise WorkerError(f"shard at index {a} returned {len(out[k])} results for {len(chunk)} items")
            merged += out[k]
        return merged


__all__ = ["WorkerPool", "WorkerError"]
