"""A planted inconsistency for checking the audit: Gaussian noise on the projector output (the image
pathway only), ``sigma`` times each token's own standard deviation, seeded."""
from __future__ import annotations

import torch


def projector_noise(sigma: float = 3.0, seed: int = 0) -> dict:
    """``{"projector": edit}`` for :func:`~vlinterp.audit.run.audit` (or ``adapter.edits``)."""

    def edit(t: torch.Tensor, layout) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(t.shape, generator=g).to(t.device, t.dtype)
        return t + sigma * t.std(-1, keepdim=True) * noise

    return {"projector": edit}


__all__ = ["projector_noise"]
