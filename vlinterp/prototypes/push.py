"""Push: move every prototype onto its nearest training patch (of an image of its own class, at its
own scale) and remember where it came from."""
from __future__ import annotations

import torch

from .head import ProtoHead


def check_classes(head: ProtoHead, labels: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the prototypes whose class has no image in ``labels`` ``[n, K]``."""
    missing = (labels[:, head.proto_class].sum(0) == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"no training image of the class of prototype(s) {missing}: add images of every class before pushing")


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


__all__ = ["push", "check_classes"]
