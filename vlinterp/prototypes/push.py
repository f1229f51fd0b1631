"""Push: move every prototype onto a training patch and remember where it came from.

One registry, :data:`PUSHES`: ``nearest`` (ProtoPNet: each prototype onto its nearest patch of an
image of its own class, at its own scale; :func:`push`) and ``discriminative`` (the class's most
label-separating window, :mod:`.push_discriminative`). Each entry is a class with a dataclass
``Config``; calling it, ``method(head, feats, labels, seed=, progress=)``, pushes in place and
returns the push record.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import ConfigError, DataError
from ..core.registry import Registry
from .head import ProtoHead

PUSHES = Registry("prototype push", {
    "discriminative": "vlinterp.prototypes.push_discriminative:DiscriminativePush",
    "nearest": "vlinterp.prototypes.push:NearestPush",
})


def make_push(spec):
    """A push method from a spec (``"nearest"``, ``"discriminative:n_eval=400"``) or pass one through."""
    if callable(spec) and not isinstance(spec, str):
        return spec
    name, opts = PUSHES.parse(spec)
    return PUSHES.create(name, **opts)


def check_classes(head: ProtoHead, labels: torch.Tensor) -> None:
    """Raise :class:`DataError` naming the prototypes whose class has no image in ``labels`` ``[n, K]``."""
    missing = (labels[:, head.proto_class].sum(0) == 0).nonzero().flatten().tolist()
    if missing:
        raise DataError(f"no training image of the class of prototype(s) {missing}: add images of every class before pushing")


@torch.no_grad()
def push(head: ProtoHead, feats: torch.Tensor, labels: torch.Tensor, chunk: int = 256) -> dict:
    """Replace ``head.prototypes`` in place. ``feats`` ``[n, R, C, D]``, ``labels`` ``[n, K]``.

    Returns ``{"image": [P], "cell": [P, 2], "scale": [P], "d2": [P]}``: the source training image
    index, the cell on the prototype's own (pooled) grid and the distance moved."""
    check_classes(head, labels)
    P = head.n_prototypes
    best = torch.full((P,), float("inf"))
    src_img = torch.full((P,), -1, dtype=torch.long)
    src_cell = torch.zeros(P, 2, dtype=torch.long)
    new = head.prototypes.detach().clone()
    for a in range(0, len(feats), chunk):
        z = head.embed(feats[a:a + chunk])
        lab = labels[a:a + chunk].bool()
        for s in head.scales:
            zs = head.pooled(z, s)
            n, Rs, Cs, d = zs.shape
            flat = zs.reshape(n, Rs * Cs, d)
            for j in (head.proto_scale == s).nonzero().flatten().tolist():
                ok = lab[:, head.proto_class[j]]
                if not ok.any():
                    continue
                d2 = (flat[ok] - head.prototypes[j]).pow(2).sum(-1)  # [n_ok, cells]
                v, i = d2.flatten().min(0)
                if float(v) < float(best[j]):
                    img_local = ok.nonzero().flatten()[int(i) // (Rs * Cs)]
                    cell = int(i) % (Rs * Cs)
                    best[j] = v
                    src_img[j] = a + int(img_local)
                    src_cell[j] = torch.tensor([cell // Cs, cell % Cs])
                    new[j] = flat[img_local, cell]
    head.prototypes.data.copy_(new)
    return {"image": src_img, "cell": src_cell, "scale": head.proto_scale.clone(), "d2": best}


class NearestPush:
    """ProtoPNet's push (:func:`push`); ``chunk``: images embedded at a time."""

    name = "nearest"

    @dataclass
    class Config:
        chunk: int = 256

        def validate(self) -> None:
            if self.chunk < 1:
                raise ConfigError(f"chunk must be >= 1, got {self.chunk}")

    def __init__(self, config=None):
        self.config = config or self.Config()

    def __call__(self, head: ProtoHead, feats: torch.Tensor, labels: torch.Tensor, seed: int = 0, progress: bool = True) -> dict:
        return push(head, feats, labels, self.config.chunk)


__all__ = ["push", "check_classes", "NearestPush", "PUSHES", "make_push"]
