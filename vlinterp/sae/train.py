"""Train SAELens SAEs from an :class:`~vlinterp.sae.store.ActivationStore`.

SAELens does the modelling (the architectures of :data:`~vlinterp.sae.archs.SAE_ARCHS`:
``TopKTrainingSAE``, ``BatchTopKTrainingSAE``, ``StandardTrainingSAE`` (ReLU + L1),
``JumpReLUTrainingSAE``, ``MatryoshkaBatchTopKTrainingSAE``) and the optimisation
(``SAETrainer.step``). :func:`train_sae` returns the *inference* SAE, the same class and weights
as its saved copy (a ``batchtopk`` SAE becomes the JumpReLU SAE with the learned threshold, as
SAELens saves it), with the metadata SAELens attaches it by. vlinterp adds what SAELens lacks for
multimodal data:

- **modality-balanced batches**: each batch takes ``round(image_fraction * B)`` image-token rows
  and the rest from text tokens (``image_fraction=None``: uniform over rows);
- **deterministic data order**: batch ``i`` depends only on ``(seed, i)``, so a resumed run sees
  the batches an uninterrupted one would;
- **checkpoints every N steps**, each a SAELens checkpoint directory (``cfg.json``,
  ``sae_weights.safetensors``, trainer state) written to a temp dir and renamed; ``resume=True``
  continues from the newest one, giving the same weights as an uninterrupted run;
- **NaN guard**: a non-finite batch raises :class:`~vlinterp.core.errors.NaNError` before the
  step, a non-finite loss right after it; the last good checkpoint stays in place.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.errors import ConfigError, NaNError, ShapeMismatchError
from .archs import SAE_ARCHS, arch_config

ARCHS = SAE_ARCHS  # the name earlier releases exported


def make_sae(arch: str, d_in: int, d_sae: int, k: int = 16, l1: float = 5.0, seed: int = 0, **extra):
    """A fresh SAELens training SAE of architecture ``arch`` (see :data:`SAE_ARCHS`; ``k`` / ``l1`` go
    to the architectures that take them, ``extra`` to SAELens's config)."""
    return SAE_ARCHS.create(SAE_ARCHS.check(arch), **vars(arch_config(arch, d_sae, k, l1))).build(d_in, seed, **extra)


class BalancedBatches:
    """Batch ``i`` (any order, reproducible): row indices drawn with a generator seeded by
    ``(seed, i)``; ``image_fraction`` of them image tokens when given."""

    def __init__(self, store, batch_size: int, image_fraction: float | None = None, seed: int = 0):
        self.store, self.B, self.seed = store, int(batch_size), int(seed)
        self.frac = image_fraction
        if image_fraction is not None:
            if not 0.0 <= image_fraction <= 1.0:
                raise ConfigError(f"image_fraction must be in [0, 1], got {image_fraction}")
            self.img, self.txt = store.where("image"), store.where("text")
            if (image_fraction > 0 and not len(self.img)) or (image_fraction < 1 and not len(self.txt)):
                raise ShapeMismatchError("the store lacks the image or text tokens that image_fraction asks for")

    def indices(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(i))
        if self.frac is None:
            return torch.randint(len(self.store), (self.B,), generator=g)
        n_img = int(round(self.frac * self.B))
        a = self.img[torch.randint(len(self.img), (n_img,), generator=g)] if n_img else torch.zeros(0, dtype=torch.long)
        b = self.txt[torch.randint(len(self.txt), (self.B - n_img,), generator=g)] if self.B - n_img else torch.zeros(0, dtype=torch.long)
        return torch.cat([a, b])

    def __call__(self, i: int) -> torch.Tensor:
        return self.store.acts[self.indices(i)].float()


def _checkpoints(d: str) -> list[tuple[int, str]]:
    if not os.path.isdir(d):
        return []
    out = []
    for name in os.listdir(d):
        m = re.fullmatch(r"step_(\d+)", name)
        if m and os.path.isfile(os.path.join(d, name, "cfg.json")):
            out.append((int(m.group(1)), os.path.join(d, name)))
    return sorted(out)


def setup(store, arch: str = "topk", d_sae: int = 1024, k: int = 16, steps: int = 1500, batch_size: int = 256,
          lr: float = 3e-4, image_fraction: float | None = 0.5, seed: int = 0, checkpoint_dir: str | None = None,
          resume: bool = False, l1: float = 5.0, data=None):
    """``(sae, trainer, batches, meta, start)``: a fresh SAE and SAELens trainer (or the newest
    checkpoint's, with ``resume``), the batch source and the first step to run."""
    from sae_lens import LoggingConfig, SAETrainer
    from sae_lens.config import SAETrainerConfig

    batches = data or BalancedBatches(store, batch_size, image_fraction, seed)
    sae = make_sae(arch, store.d, d_sae, k, l1, seed)
    tcfg = SAETrainerConfig(total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=lr,
                            lr_end=lr, lr_scheduler_name="constant", lr_decay_steps=steps // 5,
                            lr_warm_up_steps=min(100, steps // 10), logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(tcfg, sae, data_provider=iter(()))
    # SAELens's "expected average only in" scaling (mean norm -> sqrt(d)), estimated on the store
    # without drawing from the batch sequence, folded into the weights at the end
    sample = store.acts[:: max(1, len(store) // 10000)].float()
    trainer.activation_scaler.scaling_factor = float(store.d ** 0.5 / sample.norm(dim=-1).mean().clamp_min(1e-12))
    start = 0
    if resume and checkpoint_dir:
        ck = _checkpoints(checkpoint_dir)
        if ck:
            start, path = ck[-1]
            sae.load_weights_from_checkpoint(path)
            trainer.load_trainer_state(path)
    meta = {"arch": arch, "d_in": store.d, "d_sae": d_sae, "k": k, "steps": steps, "batch_size": batch_size, "lr": lr,
            "image_fraction": image_fraction, "seed": seed, "site": store.meta.get("site"), "model": store.meta.get("model"),
            "tokens": store.meta.get("tokens", store.meta.get("keep"))}
    return sae, trainer, batches, meta, start


def train_sae(store, arch: str = "topk", d_sae: int = 1024, k: int = 16, steps: int = 1500, batch_size: int = 256,
              lr: float = 3e-4, image_fraction: float | None = 0.5, seed: int = 0, checkpoint_dir: str | None = None,
              checkpoint_every: int = 500, resume: bool = False, progress: bool = True, l1: float = 5.0,
              stop_after: int | None = None, data=None):
    """Train an SAE on ``store`` rows and return the inference SAE (SAELens; ``.encode`` /
    ``.decode``; the same class and weights as :func:`~vlinterp.sae.attach.save_sae` writes).
    Schedule: linear warm-up (10% up to 100 steps), constant ``lr``, linear decay to 0 over the
    last 20% (SAELens's scheduler). ``stop_after``: stop after that many steps of this call (to
    test resuming); ``data``: replace the batch source (``fn(i) -> [B, D]``). Data-parallel training
    on Ray Train is :func:`vlinterp.scale.sae_train.train_data_parallel` (same checkpoints, so either
    kind of run resumes the other)."""
    sae, trainer, batches, meta, start = setup(store, arch, d_sae, k, steps, batch_size, lr, image_fraction, seed,
                                               checkpoint_dir, resume, l1, data)
    bar = tqdm(total=steps, initial=start, desc=f"SAE training ({arch})", disable=not progress)
    done = 0
    for i in range(start, steps):
        if stop_after is not None and done >= stop_after:
            break
        x = batches(i)
        if not torch.isfinite(x).all():
            raise NaNError(f"non-finite activations in SAE batch {i}; the last good checkpoint is kept")
        trainer.maybe_reset_sparsity()
        out = _guarded_step(trainer, x, i)
        trainer.n_training_steps += 1
        bar.update(1)
        if progress and i % 100 == 0:
            bar.set_postfix(mse=f"{float(out.losses.get('mse_loss', out.loss).detach()):.4f}")
        if checkpoint_dir and ((i + 1) % checkpoint_every == 0 or i + 1 == steps):
            save_checkpoint(trainer, checkpoint_dir, i + 1, meta)
        done += 1
    bar.close()
    return finish(sae, trainer, meta)


def finish(sae, trainer, meta: dict):
    """Fold the activation scaling into the weights; the inference SAE (:func:`inference_sae`) in eval
    mode with ``.vlinterp_meta`` and SAELens's metadata (hook and model names)."""
    from .attach import set_metadata

    sae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
    sae.eval()
    sae.vlinterp_meta = meta
    set_metadata(sae, meta.get("site"), meta.get("model"))
    return inference_sae(sae)


def inference_sae(sae):
    """The inference SAE of a SAELens training SAE: exactly what ``save_inference_model`` writes and
    ``SAE.load_from_disk`` reads back (class, weights, thresholds, metadata); an inference SAE is
    returned as is. ``.vlinterp_meta`` is kept."""
    import tempfile

    from sae_lens import SAE

    if not hasattr(sae, "save_inference_model"):
        return sae
    with tempfile.TemporaryDirectory(prefix="vlinterp-sae-") as d:
        sae.save_inference_model(d)
        out = SAE.load_from_disk(d, device=str(sae.W_dec.device))
    out.vlinterp_meta = dict(getattr(sae, "vlinterp_meta", {}))
    return out.eval()


def _guarded_step(trainer, x, i):
    """``trainer.step``; a non-finite loss raises :class:`NaNError` (the in-memory SAE is then
    spoiled and dropped with the exception; the checkpoints on disk are the last good ones)."""
    out = trainer.step(x)
    if not torch.isfinite(out.loss):
        raise NaNError(f"non-finite SAE loss at step {i}; the last good checkpoint is kept")
    return out


def save_checkpoint(trainer, checkpoint_dir: str, step: int, meta: dict) -> str:
    """``checkpoint_dir/step_{step:07d}``: SAELens weights + cfg + trainer state, one output directory
    published at once (:func:`vlinterp.core.io.output_dir`)."""
    from ..core.io import output_dir, write_json

    final = os.path.join(checkpoint_dir, f"step_{step:07d}")
    with output_dir(final, "checkpoint") as tmp:
        trainer.sae.save_model(tmp)
        trainer.save_trainer_state(Path(tmp))
        write_json(os.path.join(tmp, "vlinterp.json"), {**meta, "step": step})
    return final


__all__ = ["train_sae", "make_sae", "inference_sae", "BalancedBatches", "save_checkpoint", "SAE_ARCHS", "ARCHS"]
