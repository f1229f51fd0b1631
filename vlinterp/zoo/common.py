"""Shared pieces of organism recipes: output directories, model cards, schedules.

``atomic_dir`` and ``write_json_atomic`` are the recipes' names for :func:`vlinterp.core.io.output_dir`
and :func:`vlinterp.core.io.write_json`: an output directory is built aside and published, files
vlinterp did not write are never replaced or deleted.
"""
from __future__ import annotations

import math
import os
import sys
import time

import torch

from ..core.io import output_dir as atomic_dir  # noqa: F401  (the recipes' name)
from ..core.io import write_json


def write_json_atomic(path: str, obj) -> None:
    """:func:`vlinterp.core.io.write_json` (indent 2, as cards always had)."""
    write_json(path, obj, indent=2)


def write_card(out_dir: str, name: str, seed: int, command: str, train_seconds: float, metrics: dict, floors: dict, extra: dict | None = None) -> dict:
    """``card.json``: the organism's measured metrics beside its floors, and how to reproduce it."""
    card = {
        "name": name,
        "seed": seed,
        "command": command,
        "train_seconds": round(train_seconds, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "metrics": metrics,
        "floors": floors,
        "floors_met": {k: check_floor(metrics.get(k), *v) for k, v in floors.items()},
    }
    card.update(extra or {})
    write_json_atomic(os.path.join(out_dir, "card.json"), card)
    return card


def check_floor(value, op: str, bound: float) -> bool:
    if value is None:
        return False
    return value >= bound if op == ">=" else value <= bound


def train_threads(default: int = 2) -> int:
    """Torch threads for training: ``VLINTERP_THREADS`` if set, else ``default``. On a shared
    machine one thread per process avoids OpenMP oversubscription (measured here: 1.5 s/step
    with 1 thread against 10-15 s/step with 2 while other trainings ran)."""
    return int(os.environ.get("VLINTERP_THREADS", default))


def cosine_lr(step: int, total: int, base: float, warmup: int = 100, final: float = 0.05) -> float:
    """Linear warmup then cosine decay to ``final * base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t)))


def schedule(step: int, total: int, clock: Clock, base: float, warmup: int, final: float = 0.05) -> float:
    """Linear warmup (steps, at most a tenth of them), then cosine to ``final * base`` over whichever
    runs out first: steps or minutes."""
    warmup = min(warmup, max(1, total // 10))
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    if clock.budget is not None:
        frac = max(frac, clock.elapsed() / clock.budget)
    return base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def run_setup(name: str, defaults: dict, overrides: dict, steps: int | None, minutes: float | None, progress: bool):
    """Common start of a recipe's ``train``: ``(hparams, total steps, clock, log)``; sets the
    training threads (``VLINTERP_THREADS``)."""
    hp = {**defaults, **overrides}
    total = int(steps if steps is not None else hp["steps"])
    torch.set_num_threads(train_threads())
    clock = Clock(minutes)
    log = (lambda s: print(f"[{name} {clock.elapsed():6.0f}s] {s}", flush=True)) if progress else (lambda s: None)
    return hp, total, clock, log


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def train_command(name: str, out_dir: str, seed: int, minutes: float | None = None, steps: int | None = None) -> str:
    """The exact command that reproduces a training run: the real command line when this process is
    ``vlinterp zoo train ...``, else the equivalent ``vlinterp zoo train`` call."""
    args = sys.argv[1:]
    if args[:2] == ["zoo", "train"] and os.path.basename(sys.argv[0]) in ("vlinterp", "__main__.py", "cli.py"):
        return " ".join(["vlinterp"] + args)
    return f"vlinterp zoo train {name} --out {out_dir} --seed {seed}" + (f" --steps {steps}" if steps else "") + (f" --minutes {minutes:g}" if minutes else "")


class Clock:
    """Wall-clock budget: ``clock.left() > 0`` while time remains."""

    def __init__(self, minutes: float | None):
        self.t0 = time.time()
        self.budget = None if minutes is None else minutes * 60

    def elapsed(self) -> float:
        return time.time() - self.t0

    def left(self) -> float:
        return float("inf") if self.budget is None else self.budget - self.elapsed()
