"""Training data shared by the ``shapes-vit`` and ``shapes-clip`` recipes.

Scenes come from :func:`vlinterp.data.shapes.iter_scenes` (split ``"train"``); each is turned
into uint8 pixels ``[3, 128, 128]``, its 24-way multi-hot label vector and dense per-patch
targets (colour and shape distributions over the patch grid, from exact masks).
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..data.shapes import COLOURS, PAIRS, SHAPES, Scene, iter_scenes, patch_coverage

N_COLOUR = len(COLOURS) + 1  # background first
N_SHAPE = len(SHAPES) + 1
N_PAIR = len(PAIRS) + 1
N_DENSE = N_COLOUR + N_SHAPE + N_PAIR


def dense_targets(scene: Scene, grid: tuple[int, int]) -> np.ndarray:
    """``[rows, cols, 7 + 5 + 25]``: fraction of each patch covered by background (index 0
    of each group) and by each colour, shape and colour-shape pair."""
    cov = patch_coverage(scene, grid)
    out = np.zeros((*grid, N_DENSE), np.float32)
    for k, o in enumerate(scene.objects):
        out[..., 1 + COLOURS.index(o.colour)] += cov[k]
        out[..., N_COLOUR + 1 + SHAPES.index(o.shape)] += cov[k]
        out[..., N_COLOUR + N_SHAPE + 1 + PAIRS.index(o.pair)] += cov[k]
    bg = np.clip(1.0 - cov.sum(0), 0.0, 1.0) if len(cov) else np.ones(grid, np.float32)
    out[..., 0] = out[..., N_COLOUR] = out[..., N_COLOUR + N_SHAPE] = bg
    return out


class ScenePool:
    """``n`` training scenes rendered once (pixels, labels, dense targets, the scenes themselves)."""

    def __init__(self, n: int, seed: int, grid: tuple[int, int], keep_scenes: bool = False, log=None):
        t0 = time.time()
        it = iter_scenes("train", seed)
        pix = np.empty((n, 3, 128, 128), np.uint8)
        lab = np.empty((n, len(PAIRS)), np.float32)
        dense = np.empty((n, *grid, N_DENSE), np.float32)
        self.scenes = [] if keep_scenes else None
        for i in range(n):
            s = next(it)
            pix[i] = s.image.transpose(2, 0, 1)
            lab[i] = s.label_vector()
            dense[i] = dense_targets(s, grid)
            if keep_scenes:
                s.image = None  # pixels live in ``pix``; keep objects for captions
                for o in s.objects:
                    o.mask = None
                self.scenes.append(s)
            if log and (i + 1) % 2000 == 0:
                log(f"rendered {i + 1}/{n} scenes ({time.time() - t0:.0f}s)")
        self.pix, self.lab = torch.from_numpy(pix), torch.from_numpy(lab)
        self.dense = torch.from_numpy(dense)
        self.n = n

    def batch(self, idx: torch.Tensor, mean, std, hflip: bool = False):
        """Normalised pixels ``[B, 3, H, W]`` + labels + dense targets for pool indices ``idx``;
        ``hflip`` mirrors a random half of the batch (pixels and dense targets)."""
        x = self.pix[idx].float().div_(255.0)
        x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        dense = self.dense[idx]
        if hflip:
            f = torch.rand(len(idx)) < 0.5
            x[f] = x[f].flip(-1)
            dense[f] = dense[f].flip(2)
        return x, self.lab[idx], dense


def soft_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against soft targets over the last dim; ``weight`` per position (optional)."""
    loss = -(target * F.log_softmax(logits, -1)).sum(-1)
    if weight is None:
        return loss.mean()
    return (loss * weight).sum() / weight.sum().clamp_min(1e-6)


def dense_loss(head: torch.nn.Module, patches: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Per-patch colour, shape and pair soft cross-entropy (``head``: ``D -> N_DENSE``); the
    shape and pair terms are weighted by object coverage so background does not drown them."""
    out = head(patches)  # [B, P, N_DENSE]
    t = dense.flatten(1, 2)
    w = 0.25 + 3.0 * (1.0 - t[..., 0])
    a, b = N_COLOUR, N_COLOUR + N_SHAPE
    return (soft_ce(out[..., :a], t[..., :a]) + soft_ce(out[..., a:b], t[..., a:b], weight=w)
            + soft_ce(out[..., b:], t[..., b:], weight=w))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over columns with both classes present of the ROC AUC (Mann-Whitney, ties averaged)."""
    out = []
    for j in range(labels.shape[1]):
        y = labels[:, j] > 0.5
        n1, n0 = int(y.sum()), int((~y).sum())
        if n1 == 0 or n0 == 0:
            continue
        pos, neg = scores[y, j][:, None], scores[~y, j][None, :]
        out.append(float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (n1 * n0)))
    return float(np.mean(out)) if out else float("nan")
