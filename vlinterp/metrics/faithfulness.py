"""Faithfulness of saliency maps against ground-truth masks and against the model itself.

Every metric takes ``saliency``: a :class:`~vlinterp.core.result.Result` (row ``target`` is
mapped to an ``[H, W]`` heat map at the original image size by its layout) or a raw
``[H, W]`` map (numpy or torch), plus ``mask``: ``[H, W]`` bool ground truth (e.g.
``scene.objects[i].mask`` of the shapes world). All return Python floats.

* :func:`pointing_game`: 1.0 if the map's maximum falls on the object (within ``tolerance``
  pixels), else 0.0. Ties (flat maxima) count the fraction of the tied pixels that hit.
* :func:`energy_pointing_game`: share of the min-max normalised map's energy inside the mask
  (Score-CAM's energy-based pointing game, with the exact mask instead of the box).
* :func:`obj_iou`: IoU of ``map > Otsu threshold`` (``skimage.filters.threshold_otsu``) with the mask.
* :func:`deletion_auc` / :func:`insertion_auc`: Petsiuk et al. (RISE) perturbation curves
  with a BLUR baseline: the most salient pixels are replaced by a Gaussian-blurred copy of
  the image (deletion) or revealed onto the blurred image (insertion), ``steps`` equal
  steps from 0 to 100 %, and the model's score for the target (``score_fn``) is re-run on
  every step, batched. AUC = trapezoid area under score vs fraction (in [0, 1] for
  probabilities). Lower deletion AUC and higher insertion AUC are better.
  ``order="pixel"`` (default) ranks the pixels of the heat map; ``order="patch"`` (Result
  only) ranks whole patches of the model's grid (each patch = its box of image pixels).
  Ties are broken by a seeded random permutation, never by raster order.

``score_fn(images) -> [N]``: ``images`` is a uint8 array ``[N, H, W, 3]``; builders for
LLaVA, ViT and CLIP are :func:`llava_score_fn`, :func:`vit_score_fn`, :func:`clip_score_fn`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..core.errors import ArgumentError, ShapeMismatchError, UnsupportedError
from ..core.result import Result

ScoreFn = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------ inputs
def result_map(res: Result, target: int = 0) -> np.ndarray:
    """``[H, W]`` map of row ``target``: ``arrays["heatmap"][target]`` when the method kept a
    pixel map at the image size (MSEA), else ``res.heatmap(target)`` (patch scores upsampled)."""
    hm = res.arrays.get("heatmap")
    if res.layout is not None and hm is not None and np.ndim(hm) == 3 and len(hm) == len(res.scores):
        if tuple(np.shape(hm)[1:]) == tuple(res.layout.images[res.image_index].size):
            return np.asarray(hm[target], np.float32)
    return res.heatmap(target)


def as_map(saliency, target: int = 0) -> np.ndarray:
    """``[H, W]`` float64 map from a :class:`Result` (row ``target``, see :func:`result_map`) or a raw 2-D map."""
    if isinstance(saliency, Result):
        m = result_map(saliency, target)
    else:
        try:
            import torch

            if isinstance(saliency, torch.Tensor):
                saliency = saliency.detach().float().cpu().numpy()
        except ImportError:  # pragma: no cover
            pass
        m = np.asarray(saliency)
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != 2:
            raise ShapeMismatchError(f"saliency map must be [H, W] (or a Result), got shape {m.shape}")
    m = np.asarray(m, np.float64)
    if not np.all(np.isfinite(m)):
        raise ShapeMismatchError("saliency map contains NaN or Inf")
    return m


def _mask(mask, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask).astype(bool)
    if m.shape != tuple(shape):
        raise ShapeMismatchError(f"mask has shape {m.shape} but the saliency map is {tuple(shape)}; "
                                 "masks must be at the original image size")
    return m


def normalize(m: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant map becomes all zeros."""
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def default_tolerance(saliency, shape: tuple[int, int]) -> float:
    """Pointing-game tolerance in pixels: half a patch side for a :class:`Result` (its first
    tile's box / grid), else 15 px scaled by ``max(H, W) / 224`` (Zhang et al.'s 15 px at 224)."""
    if isinstance(saliency, Result) and saliency.layout is not None:
        t = saliency.layout.images[saliency.image_index].tiles[0]
        (rows, cols), (x0, y0, x1, y1) = t.grid, t.box
        return 0.5 * min((x1 - x0) / cols, (y1 - y0) / rows)
    return 15.0 * max(shape) / 224.0


def _dilate(mask: np.ndarray, r: float) -> np.ndarray:
    if r <= 0:
        return mask
    import cv2

    k = int(np.floor(r))
    if k < 1:
        return mask
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    disk = ((yy**2 + xx**2) <= r * r).astype(np.uint8)
    return cv2.dilate(mask.astype(np.uint8), disk) > 0


# ---------------------------------------------------------- mask metrics
def pointing_game(saliency, mask, target: int = 0, tolerance: float | None = None) -> float:
    """1.0 if the maximum of the map lies on ``mask`` dilated by ``tolerance`` pixels
    (default: :func:`default_tolerance`), else 0.0; with tied maxima the fraction that hit."""
    m = as_map(saliency, target)
    gt = _mask(mask, m.shape)
    if not gt.any():
        raise ShapeMismatchError("pointing game needs a non-empty mask")
    tol = default_tolerance(saliency, m.shape) if tolerance is None else float(tolerance)
    hi = m.max()
    top = m >= hi - 1e-7 * max(abs(hi), 1.0)
    return float((top & _dilate(gt, tol)).sum() / top.sum())


def energy_pointing_game(saliency, mask, target: int = 0) -> float:
    """Share of the min-max normalised map's total inside ``mask`` (0 for a constant map)."""
    m = normalize(as_map(saliency, target))
    gt = _mask(mask, m.shape)
    tot = m.sum()
    return float(m[gt].sum() / tot) if tot > 0 else 0.0


def otsu_mask(saliency, target: int = 0) -> np.ndarray:
    """``[H, W]`` bool: map (min-max normalised) above its Otsu threshold; empty for a constant map."""
    from skimage.filters import threshold_otsu

    m = normalize(as_map(saliency, target))
    if m.max() <= 0:
        return np.zeros(m.shape, bool)
    return m > threshold_otsu(m)


def obj_iou(saliency, mask, target: int = 0) -> float:
    """IoU between the Otsu-thresholded map and ``mask``."""
    pred = otsu_mask(saliency, target)
    gt = _mask(mask, pred.shape)
    union = (pred | gt).sum()
    return float((pred & gt).sum() / union) if union else 0.0


# ------------------------------------------------------- perturbation curves
def _image_array(image) -> np.ndarray:
    from ..core.images import load_image

    return np.asarray(load_image(image), np.uint8).copy()


BLUR_FRACTION = 0.2


def blur(image: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Gaussian-blurred copy (OpenCV, reflect borders). ``sigma`` defaults to
    ``BLUR_FRACTION * max(H, W)`` (25.6 px at 128): a blur must remove the evidence, and the
    shapes world's 16-40 px objects keep their colour (and a ViT organism its score) under the
    5-8 px blurs used for ImageNet; with this one the present-label score drops ~6x."""
    import cv2

    sigma = BLUR_FRACTION * max(image.shape[:2]) if sigma is None else float(sigma)
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _patch_rank_map(saliency: Result, target: int, shape: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` map where every pixel holds the score of the patch covering it (first tile)."""
    layout = saliency.layout
    if layout is None:
        raise UnsupportedError("order='patch' needs a Result with a layout")
    grid = layout.patch_scores(saliency.scores[target], saliency.image_index)[0].astype(np.float64)
    t = layout.images[saliency.image_index].tiles[0]
    (rows, cols), (x0, y0, x1, y1) = t.grid, t.box
    H, W = shape
    ys = np.clip(((np.arange(H) + 0.5 - y0) / ((y1 - y0) / rows)).astype(int), 0, rows - 1)
    xs = np.clip(((np.arange(W) + 0.5 - x0) / ((x1 - x0) / cols)).astype(int), 0, cols - 1)
    return grid[ys[:, None], xs[None, :]]


def pixel_order(saliency, target: int = 0, order: str = "pixel", seed: int = 0,
                shape: tuple[int, int] | None = None) -> np.ndarray:
    """Flat pixel indices, most salient first (ties in seeded random order)."""
    if order == "patch":
        if not isinstance(saliency, Result):
            raise UnsupportedError("order='patch' needs a Result (a raw map has no patch grid)")
        m = _patch_rank_map(saliency, target, shape or saliency.layout.images[saliency.image_index].size)
    elif order == "pixel":
        m = as_map(saliency, target)
    else:
        raise ArgumentError(f"order must be 'pixel' or 'patch', got {order!r}")
    if shape is not None and m.shape != tuple(shape):
        raise ShapeMismatchError(f"saliency map is {m.shape} but the image is {tuple(shape)}")
    perm = np.random.default_rng(seed).permutation(m.size)
    ranked = np.argsort(-m.reshape(-1)[perm], kind="stable")
    return perm[ranked]


def perturbation_images(image, saliency, kind: str = "deletion", target: int = 0, steps: int = 16,
                        order: str = "pixel", blur_sigma: float | None = None, seed: int = 0):
    """``(fractions [steps+1], images [steps+1, H, W, 3] uint8)`` of a deletion/insertion curve."""
    if kind not in ("deletion", "insertion"):
        raise ArgumentError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    if not 1 <= int(steps) <= 1000:
        raise ArgumentError(f"steps must be in 1..1000, got {steps}")
    img = _image_array(image)
    H, W = img.shape[:2]
    base = blur(img, blur_sigma)
    idx = pixel_order(saliency, target, order, seed, (H, W))
    fracs = np.linspace(0.0, 1.0, int(steps) + 1)
    src, dst = (base, img) if kind == "insertion" else (img, base)
    flat_src, flat_dst = src.reshape(-1, 3), dst.reshape(-1, 3)
    out = np.empty((len(fracs), H, W, 3), np.uint8)
    for k, f in enumerate(fracs):
        cur = flat_src.copy()
        n = int(round(f * H * W))
        cur[idx[:n]] = flat_dst[idx[:n]]
        out[k] = cur.reshape(H, W, 3)
    return fracs, out


def _batched(score_fn: ScoreFn, images: np.ndarray, batch_size: int) -> np.ndarray:
    parts = []
    for i in range(0, len(images), max(1, int(batch_size))):
        s = np.asarray(score_fn(images[i : i + batch_size]), np.float64).reshape(-1)
        if s.size != len(images[i : i + batch_size]):
            raise ShapeMismatchError(f"score_fn returned {s.size} scores for {len(images[i : i + batch_size])} images")
        parts.append(s)
    return np.concatenate(parts)


def auc(fractions, scores) -> float:
    """Trapezoid area under ``scores`` over ``fractions`` (normalised by the fraction range)."""
    x, y = np.asarray(fractions, np.float64), np.asarray(scores, np.float64)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0 / (x[-1] - x[0]))


def perturbation_curve(image, saliency, score_fn: ScoreFn, kind: str = "deletion", target: int = 0,
                       steps: int = 16, order: str = "pixel", blur_sigma: float | None = None,
                       batch_size: int = 17, seed: int = 0) -> dict:
    """``{"fractions", "scores", "auc"}`` of one deletion or insertion curve."""
    fr, imgs = perturbation_images(image, saliency, kind, target, steps, order, blur_sigma, seed)
    sc = _batched(score_fn, imgs, batch_size)
    return {"fractions": fr, "scores": sc, "auc": auc(fr, sc)}


def deletion_auc(image, saliency, score_fn: ScoreFn, target: int = 0, steps: int = 16, **kw) -> float:
    """AUC of the score as the most salient pixels are blurred away (lower = more faithful)."""
    return perturbation_curve(image, saliency, score_fn, "deletion", target, steps, **kw)["auc"]


def insertion_auc(image, saliency, score_fn: ScoreFn, target: int = 0, steps: int = 16, **kw) -> float:
    """AUC of the score as the most salient pixels are revealed on the blurred image (higher = better)."""
    return perturbation_curve(image, saliency, score_fn, "insertion", target, steps, **kw)["auc"]


def evaluate(saliency, mask, target: int = 0, image=None, score_fn: ScoreFn | None = None,
             steps: int = 16, **kw) -> dict[str, float]:
    """All metrics of one map: pointing game, energy pointing game, Obj-IoU and, with
    ``image`` and ``score_fn``, deletion and insertion AUC (else NaN)."""
    out = {
        "pointing_game": pointing_game(saliency, mask, target),
        "energy_pointing_game": energy_pointing_game(saliency, mask, target),
        "obj_iou": obj_iou(saliency, mask, target),
        "deletion_auc": float("nan"),
        "insertion_auc": float("nan"),
    }
    if image is not None and score_fn is not None:
        out["deletion_auc"] = deletion_auc(image, saliency, score_fn, target, steps, **kw)
        out["insertion_auc"] = insertion_auc(image, saliency, score_fn, target, steps, **kw)
    return out


# ------------------------------------------------------------ score_fn builders
def llava_score_fn(adapter, prompt: str, token, prefix: str | None = None, batch_size: int = 8) -> ScoreFn:
    """Probability of answer token ``token`` (id or single-token word) at the ``last`` position
    of ``prompt`` about each image; ``prefix``: answer text teacher-forced before it (then the
    token is scored at the end of the prefix)."""
    import torch

    tid = adapter.token_id(token) if isinstance(token, str) else int(token)

    def fn(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            chunk = list(images[i : i + batch_size])
            b = adapter.prepare(images=chunk, text=[prompt] * len(chunk), answer=prefix)
            logits = adapter.run(b).logits
            if prefix:
                pos = [int(b.layout.span("answer", r)[-1]) for r in range(len(chunk))]
            else:
                pos = [int(b.layout.span("last", r)[-1]) for r in range(len(chunk))]
            rows = logits[torch.arange(len(chunk)), torch.as_tensor(pos)]
            out.append(torch.softmax(rows.float(), -1)[:, tid].cpu().numpy())
        return np.concatenate(out)

    return fn


def vit_score_fn(adapter, target, activation: str = "softmax", batch_size: int = 32) -> ScoreFn:
    """Probability of class ``target`` (index or name): ``softmax`` over classes, or ``sigmoid``
    of its logit (multi-label models such as ``shapes-vit``). A model whose scores are not class
    logits (DINOv2 without a classifier: ``score_kind`` ``feature_norm`` / ``prototypes``) gives
    the score itself."""
    import torch

    if activation not in ("softmax", "sigmoid"):
        raise ArgumentError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    k = class_index(adapter, target)

    def fn(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            logits = adapter.run(adapter.prepare(images=list(images[i : i + batch_size]))).logits.float()
            if getattr(adapter, "score_kind", "classifier") != "classifier":
                p = logits[:, k]
            else:
                p = torch.sigmoid(logits[:, k]) if activation == "sigmoid" else torch.softmax(logits, -1)[:, k]
            out.append(p.cpu().numpy())
        return np.concatenate(out)

    return fn


def class_index(adapter, target) -> int:
    """Class index of ``target`` (int, digit string or one of ``adapter.class_names()``)."""
    from ..core.errors import PromptError

    names = adapter.class_names()
    if isinstance(target, str) and not target.isdigit():
        if target not in names:
            import difflib

            near = difflib.get_close_matches(target, names, n=3)
            raise PromptError(f"unknown class {target!r}" + (f"; nearest: {', '.join(near)}" if near else f"; classes look like: {', '.join(names[:5])}"))
        return names.index(target)
    k = int(target)
    if not 0 <= k < len(names):
        raise PromptError(f"class index {k} out of range: the model has {len(names)} classes")
    return k


def clip_score_fn(adapter, text: str, candidates: list[str] | None = None, batch_size: int = 32) -> ScoreFn:
    """CLIP score of ``text`` for each image: with ``candidates`` (other texts) the softmax
    probability of ``text`` among ``[text] + candidates`` (logit-scaled similarities), else the
    cosine similarity of image and text embeddings (in [-1, 1]). SigLIP (``sigmoid_scores``): the
    sigmoid probability that image and ``text`` match, with or without candidates."""
    import torch

    texts = [text] + [c for c in (candidates or []) if c != text]

    def fn(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            b = adapter.prepare(images=list(images[i : i + batch_size]), text=texts)
            o = adapter.run(b)
            if getattr(adapter, "sigmoid_scores", False):
                out.append(torch.sigmoid(o.logits.float()[:, 0]).cpu().numpy())
            elif len(texts) > 1:
                out.append(torch.softmax(o.logits.float(), -1)[:, 0].cpu().numpy())
            else:
                img, txt = o.raw["image_embeds"], o.raw["text_embeds"]
                out.append((img.float() @ txt.float().T)[:, 0].cpu().numpy())
        return np.concatenate(out)

    return fn


def score_fn_for(adapter, **kw) -> ScoreFn:
    """The family's builder: LLaVA ``prompt=, token=``; ViT ``target=``; CLIP ``text=``."""
    fam = getattr(adapter, "kind", None)
    if fam == "vlm":
        return llava_score_fn(adapter, **kw)
    if fam == "vit":
        return vit_score_fn(adapter, **kw)
    if fam == "clip":
        return clip_score_fn(adapter, **kw)
    raise UnsupportedError(f"no deletion/insertion score for {fam} models (diffusion has no class score)")
