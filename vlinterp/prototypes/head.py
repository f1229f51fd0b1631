"""The prototype head: ProtoPNet's "this looks like that" layer over frozen patch features, at
several pooled grid scales.

Patch features ``[n, R, C, D]`` pass through add-on layers (two linear maps, ReLU, sigmoid) to
``z`` ``[n, R, C, d]``; at scale ``s`` the grid is average-pooled over sliding ``s x s`` windows
(stride 1: ``[R - s + 1, C - s + 1]`` cells, cell ``(r, c)`` covers base rows ``r..r+s-1``). Each
prototype ``p_j`` lives at one scale and belongs to one class; its similarity map is
``log((d^2 + 1) / (d^2 + eps))`` with ``d^2 = ||z_cell - p_j||^2``, max-pooled over cells.
With ``focal=True`` (default) the evidence is the focal similarity ``max - mean`` over cells
(ProtoPool): a prototype that matches everywhere (background) gives no evidence, so prototypes
settle on the parts that are rare within an image. The last layer maps the ``P`` evidences to
class logits (sparse: own class +1, others -0.5 at
start; off-class weights pushed to zero, and per-class scale groups made sparse, in training).
:meth:`ProtoHead.keep` removes prototypes (ProtoPNet's pruning step), remembering which of the
original ones are left (``kept``) so a saved head rebuilds to the same shape.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProtoHead(nn.Module):
    def __init__(self, in_dim: int, n_classes: int, per_class: int = 1, scales=(1, 2), dim: int = 64, eps: float = 1e-4, seed: int = 0,
                 focal: bool = True):
        super().__init__()
        self.focal = bool(focal)
        g = torch.Generator().manual_seed(seed)
        self.in_dim, self.n_classes, self.per_class, self.scales, self.dim, self.eps = int(in_dim), int(n_classes), int(per_class), tuple(int(s) for s in scales), int(dim), float(eps)
        self.addon = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.Sigmoid())
        P = n_classes * per_class * len(self.scales)
        self.prototypes = nn.Parameter(torch.rand(P, dim, generator=g))
        cls = torch.arange(n_classes).repeat_interleave(per_class).repeat(len(self.scales))
        scl = torch.tensor(self.scales).repeat_interleave(n_classes * per_class)
        self.register_buffer("proto_class", cls)
        self.register_buffer("proto_scale", scl)
        self.last = nn.Linear(P, n_classes, bias=False)
        self.register_buffer("class_mask", F.one_hot(cls, n_classes).T.float())  # [K, P]
        with torch.no_grad():
            self.last.weight.copy_(self.class_mask - 0.5 * (1 - self.class_mask))
        self.kept: list[int] | None = None  # original indices of the prototypes left after keep()

    @torch.no_grad()
    def keep(self, idx) -> None:
        """Keep only prototypes ``idx`` (indices into the current ones, in order), everywhere:
        prototype vectors, class and scale buffers, last-layer columns."""
        idx = torch.as_tensor(list(idx), dtype=torch.long)
        if not len(idx):
            from ..core.errors import ConfigError

            raise ConfigError("a prototype head needs at least one prototype")
        orig = torch.arange(self.n_prototypes) if self.kept is None else torch.as_tensor(self.kept)
        self.kept = orig[idx].tolist()
        self.prototypes = nn.Parameter(self.prototypes.data[idx].clone())
        self.proto_class = self.proto_class[idx].clone()
        self.proto_scale = self.proto_scale[idx].clone()
        self.class_mask = self.class_mask[:, idx].clone()
        last = nn.Linear(len(idx), self.n_classes, bias=False)
        last.weight.copy_(self.last.weight[:, idx])
        self.last = last

    @property
    def n_prototypes(self) -> int:
        return self.prototypes.shape[0]

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """``[n, R, C, D]`` -> ``z`` ``[n, R, C, d]``."""
        if feats.shape[-1] != self.in_dim:
            from ..core.errors import ShapeMismatchError

            raise ShapeMismatchError(f"features have width {feats.shape[-1]}, the head expects {self.in_dim}")
        return self.addon(feats)

    def pooled(self, z: torch.Tensor, scale: int) -> torch.Tensor:
        """``z`` ``[n, R, C, d]`` averaged over sliding ``scale x scale`` windows -> ``[n, R-s+1, C-s+1, d]``."""
        if scale == 1:
            return z
        return F.avg_pool2d(z.permute(0, 3, 1, 2), scale, 1).permute(0, 2, 3, 1)

    def forward(self, feats: torch.Tensor) -> dict:
        """``logits`` ``[n, K]``, ``sim`` ``[n, P]`` (max over cells), ``score`` ``[n, P]`` (the evidence:
        focal or max similarity), ``min_d2`` ``[n, P]``,
        ``maps`` ``[n, P, R, C]`` similarity on the base grid (a base cell gets the best window
        covering it), ``argmax`` ``[n, P, 2]`` the best cell at each prototype's own scale."""
        z = self.embed(feats)
        n, R, C, _ = z.shape
        P = self.n_prototypes
        sim = z.new_empty(n, P)
        mean = z.new_empty(n, P)
        min_d2 = z.new_empty(n, P)
        maps = z.new_empty(n, P, R, C)
        arg = torch.empty(n, P, 2, dtype=torch.long, device=z.device)
        for s in self.scales:
            sel = (self.proto_scale == s).nonzero().flatten()
            zs = self.pooled(z, s)
            Rs, Cs = zs.shape[1:3]
            flat = zs.reshape(n, Rs * Cs, -1)
            p = self.prototypes[sel]
            d2 = (flat.pow(2).sum(-1)[:, None, :] - 2 * torch.einsum("ncd,pd->npc", flat, p) + p.pow(2).sum(-1)[None, :, None]).clamp(min=0)
            sm = torch.log((d2 + 1) / (d2 + self.eps))  # [n, Ps, Rs*Cs]
            best = sm.argmax(-1)
            sim[:, sel] = sm.gather(-1, best[..., None])[..., 0]
            mean[:, sel] = sm.mean(-1)
            min_d2[:, sel] = d2.gather(-1, best[..., None])[..., 0]
            arg[:, sel, 0], arg[:, sel, 1] = best // Cs, best % Cs
            grid = sm.reshape(n, -1, Rs, Cs)
            maps[:, sel] = F.max_pool2d(F.pad(grid, (s - 1, s - 1, s - 1, s - 1), value=float("-inf")), s, 1) if s > 1 else grid
        score = sim - mean if self.focal else sim
        return {"logits": self.last(score), "sim": sim, "score": score, "min_d2": min_d2, "maps": maps, "argmax": arg}

    def config(self) -> dict:
        return {"in_dim": self.in_dim, "n_classes": self.n_classes, "per_class": self.per_class, "scales": list(self.scales),
                "dim": self.dim, "eps": self.eps, "focal": self.focal, "kept": self.kept}

    @classmethod
    def from_config(cls, cfg: dict) -> "ProtoHead":
        """An untrained head of the saved shape (pruned as recorded in ``kept``)."""
        cfg = dict(cfg)
        kept = cfg.pop("kept", None)
        head = cls(**cfg)
        if kept is not None:
            head.keep(kept)
        return head


__all__ = ["ProtoHead"]
