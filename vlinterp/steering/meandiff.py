"""Mean-difference steering vectors (VTI-style): the direction from hallucinated to correct
last-token states, added at chosen layers in every forward (each decoding step included).

Fit on a probe set of POPE questions (negatives of the adversarial type, where the designed
prior makes the organism say "yes" to absent partners): collect the residual state at the last
prompt token of layers ``layers``; ``d_l = mean(h_l | answered right) - mean(h_l | hallucinated)``
(optionally the top principal direction of the per-pair differences, as VTI does); apply
``h_l += alpha * |h_l| * d_l / |d_l|`` at the last position (``positions="last"``) or every position.
``alpha < 0`` steers toward hallucination (a sanity check).

``protect``: groups of answer words (e.g. the colour words, the count words) whose answers the steering
must leave alone. The direction loses its component along every within-group difference of those
words' effective readouts (``norm.weight * lm_head.weight[word]``, each group centred), so at the last
layer adding it cannot change which word of a group wins (the final RMSNorm rescales all logits alike);
at earlier layers it only removes the direct path.
"""
from __future__ import annotations

import torch

from ..core.errors import LayerRangeError, PromptError, UnsupportedError
from .common import Steerer, add_direction, load_tensors, save_tensors, select_alpha


class MeanDiff(Steerer):
    """``vectors``: ``{layer: [D]}`` unit directions; ``alpha``: strength (relative to the state's norm)."""

    def __init__(self, vectors: dict[int, torch.Tensor], alpha: float = 0.1, positions: str = "last", meta: dict | None = None):
        if not vectors:
            raise ValueError("MeanDiff needs at least one layer vector")
        if positions not in ("last", "all"):
            raise ValueError(f"positions must be last or all, got {positions!r}")
        self.vectors = {int(l): torch.nn.functional.normalize(v.float(), dim=0) for l, v in vectors.items()}
        self.alpha, self.positions, self.meta = float(alpha), positions, meta or {}

    @classmethod
    def fit(cls, adapter, n: int = 128, split: str = "steer-probe", seed: int = 0, layers=None, alpha: float | str = 0.1,
            pca: bool = False, positions: str = "last", alphas=(0.05, 0.1, 0.15, 0.2, 0.3), max_drop: float = 0.01,
            protect: tuple | list | None = None) -> "MeanDiff":
        """Probe: ``n`` adversarial POPE questions; states of the questions answered right vs
        wrongly (hallucinated "yes" on negatives, "no" on positives). ``alpha="auto"``: the grid
        value of ``alphas`` with the lowest adversarial false-yes rate on a second probe sample
        (``seed + 1``) whose random-POPE, colour and count accuracies each drop by at most
        ``max_drop`` (0 when none qualifies)."""
        from ..data.questions import pope_split

        if adapter.kind != "vlm":
            raise UnsupportedError(f"mean-difference steering needs a LLaVA model, not {adapter.family}")
        L = adapter.num_layers("lm")
        layers = list(range(L // 2, L)) if layers is None else [int(l) for l in layers]
        for l in layers:
            if not 0 <= l < L:
                raise LayerRangeError(f"layer {l} out of range (0..{L - 1})")
        items = pope_split(split, n, seed, "adversarial")
        ids = torch.tensor([adapter.token_id("yes"), adapter.token_id("no")])
        states = {l: [] for l in layers}
        right = []
        with torch.no_grad():
            for i in range(0, len(items), 32):
                ch = items[i:i + 32]
                b = adapter.prepare(images=[s.pil() for s, _ in ch], text=[qa.question for _, qa in ch])
                out = adapter.run(b, capture=[f"blocks.{l}.resid" for l in layers])
                last = torch.tensor([int(b.layout.span("last", r)[0]) for r in range(len(ch))])
                lg = out.logits[torch.arange(len(ch)), last][:, ids]
                pred = ["yes" if a > c else "no" for a, c in lg.tolist()]
                right += [p == qa.answer for p, (_, qa) in zip(pred, ch)]
                for l in layers:
                    states[l].append(out.cache[f"blocks.{l}.resid"][torch.arange(len(ch)), last].float())
        right = torch.tensor(right)
        if right.all() or (~right).all():
            raise PromptError(f"the probe set has {'no wrong' if right.all() else 'no right'} answers; use more items")
        vec = {}
        for l in layers:
            h = torch.cat(states[l])
            d = h[right].mean(0) - h[~right].mean(0)
            if pca:  # top principal direction of (right - wrong) pairings, signed like the mean difference
                diffs = h[right][:, None] - h[~right][None]
                u = torch.linalg.svd(diffs.reshape(-1, h.shape[1]) - 0, full_matrices=False).Vh[0]
                d = u * torch.sign(u @ d)
            vec[l] = d
        if protect:
            Q = readout_basis(adapter, protect)
            vec = {l: d - Q @ (Q.T @ d.to(Q.dtype)) for l, d in vec.items()}
        md = cls(vec, 0.0 if alpha == "auto" else float(alpha), positions,
                 {"n": n, "split": split, "seed": seed, "right": float(right.float().mean()), "pca": pca,
                  "protect": [list(g) for g in protect] if protect else None})
        if alpha == "auto":
            md.select_alpha(adapter, alphas, n, split, seed + 1, max_drop)
        return md

    def select_alpha(self, adapter, alphas, n: int, split: str, seed: int, max_drop: float = 0.01) -> float:
        """Set ``alpha`` from the grid (see :meth:`fit` and :func:`select_alpha`)."""
        return select_alpha(self, adapter, alphas, n, split, seed, max_drop)

    def edits(self, adapter, alpha: float | None = None) -> dict:
        a = self.alpha if alpha is None else float(alpha)
        L = adapter.num_layers("lm")
        for l in self.vectors:
            if not 0 <= l < L:
                raise LayerRangeError(f"layer {l} out of range (0..{L - 1})")
        return {f"blocks.{l}.resid": add_direction(v, a, self.positions) for l, v in self.vectors.items()}

    def save(self, path: str) -> None:
        """``path`` (.safetensors) + ``path`` with ``.json`` (alpha, positions, meta)."""
        save_tensors(path, {str(l): v for l, v in self.vectors.items()},
                     {"alpha": self.alpha, "positions": self.positions, "meta": self.meta})

    @classmethod
    def load(cls, path: str) -> "MeanDiff":
        vec, d = load_tensors(path)
        return cls({int(k): v for k, v in vec.items()}, d["alpha"], d["positions"], d.get("meta"))


def effective_readouts(adapter, words) -> torch.Tensor:
    """``final_norm.weight * lm_head.weight[word]`` ``[len(words), D]`` for single-token ``words``: the
    direction in the last residual state that raises each word's logit."""
    model = adapter.model
    W = model.get_output_embeddings().weight.detach().float()
    lm = getattr(model, "model", model)
    lm = getattr(lm, "language_model", lm)
    g = lm.norm.weight.detach().float() if getattr(lm, "norm", None) is not None else torch.ones(W.shape[1])
    return W[[adapter.token_id(w) for w in words]] * g


def readout_basis(adapter, groups) -> torch.Tensor:
    """Orthonormal ``[D, r]`` basis of the within-group differences of the words' effective readouts
    (:func:`effective_readouts`, centred per group); ``groups``: lists of single-token words."""
    cols = []
    for group in groups:
        if len(group) < 2:
            raise ValueError(f"a protected group needs at least two words, got {list(group)}")
        R = effective_readouts(adapter, group)
        cols.append((R - R.mean(0, keepdim=True)).T)
    U, S, _ = torch.linalg.svd(torch.cat(cols, 1), full_matrices=False)  # centring costs a rank per group
    return U[:, S > S[0] * 1e-5]


__all__ = ["MeanDiff", "effective_readouts", "readout_basis"]
