"""Data-parallel SAE training on Ray Train (``TorchTrainer``, gloo on CPU, NCCL on GPUs).

Every worker builds the same SAE and SAELens trainer (same seed), reads the store, and at step
``i`` takes its share ``indices(i)[rank::world]`` of the batch the single-process run would draw.
After each backward pass the gradients are all-reduced (averaged) by per-parameter hooks, so every
worker's optimiser sees the full batch's mean-loss gradient and the replicas stay equal. The
trainer's dead-feature statistics are synced too (a feature fired if it fired on any worker;
firing counts summed), so the dead-feature mask that the auxiliary losses use is the
single-process one. The result equals the single-process run up to float summation order
(architectures whose forward couples rows of the batch, ``batchtopk`` and ``matryoshka``, pick
their batch threshold per worker: equal in expectation). Rank 0 writes the same checkpoints as the
single-process run, so either kind of run resumes the other.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import torch

from ..core.errors import NaNError


def first_non_finite_row(acts: torch.Tensor, chunk: int = 65536) -> int | None:
    """Index of the first row of ``acts`` ``[N, D]`` holding a NaN or inf (read in chunks of rows), or None."""
    for a in range(0, acts.shape[0], chunk):
        ok = torch.isfinite(acts[a:a + chunk].float()).all(-1)
        if not bool(ok.all()):
            return a + int((~ok).nonzero()[0, 0])
    return None


def _all_finite(ok: bool) -> bool:
    """True when ``ok`` holds on every worker (so all of them raise together, none waits)."""
    import torch.distributed as dist

    t = torch.tensor([1 if ok else 0], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _average_grads(params, world: int) -> list:
    import torch.distributed as dist

    def hook(p):
        dist.all_reduce(p.grad)
        p.grad.div_(world)

    return [p.register_post_accumulate_grad_hook(hook) for p in params if p.requires_grad]


def _worker_loop(config: dict) -> None:
    import ray
    import ray.train
    import torch.distributed as dist
    from tqdm.auto import tqdm

    from ..sae.train import save_checkpoint, setup

    torch.set_num_threads(int(config.pop("threads")))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    store = ray.get(config.pop("store_ref"))
    steps, every, stop_after = config.pop("steps"), config.pop("checkpoint_every"), config.pop("stop_after")
    progress = config.pop("progress") and rank == 0
    sae, trainer, batches, meta, start = setup(store, steps=steps, **config)
    meta["workers"] = world
    handles = _average_grads(sae.parameters(), world)
    B = batches.B
    bar = tqdm(total=steps, initial=start, desc=f"SAE ({world} workers)", disable=not progress)
    done = 0
    try:
        for i in range(start, steps):
            if stop_after is not None and done >= stop_after:
                break
            x = store.acts[batches.indices(i)[rank::world]].float()
            if not _all_finite(bool(torch.isfinite(x).all())):
                raise NaNError(f"non-finite activations in SAE batch {i}; the last good checkpoint is kept")
            trainer.maybe_reset_sparsity()
            freq0 = trainer.act_freq_scores.clone()
            out = trainer.step(x)
            if not _all_finite(bool(torch.isfinite(out.loss))):
                raise NaNError(f"non-finite SAE loss at step {i}; the last good checkpoint is kept")
            # one batch of B rows seen, as in the single-process run
            trainer.n_training_samples += B - x.shape[0]
            dist.all_reduce(trainer.n_forward_passes_since_fired, op=dist.ReduceOp.MIN)
            delta = trainer.act_freq_scores - freq0
            dist.all_reduce(delta)
            trainer.act_freq_scores = freq0 + delta
            trainer.n_training_steps += 1
            bar.update(1)
            done += 1
            last = i + 1 == steps or (stop_after is not None and done >= stop_after)  # the result is read back from it
            if rank == 0 and ((i + 1) % every == 0 or last):
                save_checkpoint(trainer, config["checkpoint_dir"], i + 1, meta)
        dist.barrier()  # rank 0's last checkpoint is on disk before anyone returns
    finally:
        bar.close()
        for h in handles:
            h.remove()


def train_data_parallel(store, arch: str = "topk", d_sae: int = 1024, k: int = 16, steps: int = 1500, batch_size: int = 256,
                        lr: float = 3e-4, image_fraction: float | None = 0.5, seed: int = 0, checkpoint_dir: str | None = None,
                        checkpoint_every: int = 500, resume: bool = False, progress: bool = True, l1: float = 5.0,
                        stop_after: int | None = None, workers: int = 2, address: str | None = None, threads: int = 1):
    """Run :func:`~vlinterp.sae.train.train_sae` on ``workers`` Ray Train workers and return the
    (inference) SAE of the last checkpoint (a temporary checkpoint directory when none is given)."""
    from ..core.errors import ConfigError
    from ..sae.train import train_sae
    from .pool import WorkerError, _require_ray

    ray = _require_ray()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if batch_size % workers:
        raise ConfigError(f"batch_size {batch_size} must be a multiple of workers ({workers}) for equal shares")
    bad = first_non_finite_row(store.acts)
    if bad is not None:  # before any worker starts (a Ray Train launch costs tens of seconds)
        raise NaNError(f"non-finite activations in store row {bad}; nothing was trained (re-harvest or drop the row)")
    own = checkpoint_dir is None
    ckpt = checkpoint_dir or tempfile.mkdtemp(prefix="vlinterp-sae-dp-")
    started = False
    if not ray.is_initialized():
        kw = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(log_to_driver=progress, **kw)
        started = True
    try:
        config = {"store_ref": ray.put(store), "arch": arch, "d_sae": d_sae, "k": k, "steps": steps, "batch_size": batch_size,
                  "lr": lr, "image_fraction": image_fraction, "seed": seed, "checkpoint_dir": os.path.abspath(ckpt),
                  "checkpoint_every": checkpoint_every, "resume": resume, "l1": l1, "stop_after": stop_after,
                  "progress": progress, "threads": threads}
        runs = tempfile.mkdtemp(prefix="vlinterp-raytrain-")
        trainer = TorchTrainer(_worker_loop, train_loop_config=config,
                               scaling_config=ScalingConfig(num_workers=workers, use_gpu=torch.cuda.is_available()),
                               run_config=RunConfig(name="sae", storage_path=runs))
        try:
            trainer.fit()
        except Exception as e:  # noqa: BLE001 - the worker's own error, named
            msg = str(e)
            if "NaNError" in msg or "non-finite" in msg:
                raise NaNError(_first_line_with(msg, "non-finite")) from e
            raise WorkerError(f"data-parallel SAE training failed: {msg[-2000:]}") from e
        finally:
            shutil.rmtree(runs, ignore_errors=True)
    finally:
        if started:
            ray.shutdown()
    # the trained weights: the newest checkpoint, loaded (no steps run) and finished as in one process
    sae = train_sae(store, arch, d_sae, k, steps, batch_size, lr, image_fraction, seed, ckpt, checkpoint_every,
                    resume=True, progress=False, l1=l1, stop_after=0)
    sae.vlinterp_meta["workers"] = workers
    if own:
        shutil.rmtree(ckpt, ignore_errors=True)
    return sae


def _first_line_with(msg: str, word: str) -> str:
    for line in msg.splitlines():
        if word in line:
            return line.split("NaNError:")[-1].strip()
    return msg[-500:]


__all__ = ["train_data_parallel"]
