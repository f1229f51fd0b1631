"""How well a per-item score separates two classes (hallucinated vs grounded answers, matched vs
mismatched data): AUROC and AUPRC, positives = label ``True``, higher score = more positive.

* :func:`auroc`: probability that a random positive scores above a random negative (ties count
  half; the Mann-Whitney U statistic over ``n_pos * n_neg``).
* :func:`auprc`: average precision (the step-wise area under the precision-recall curve, as
  scikit-learn's ``average_precision_score``; tied scores enter together). A random score reads
  the positive rate.
* :func:`roc_curve`: ``(false positive rates, true positive rates)`` at every distinct threshold.

All return NaN when a class is missing (nothing to separate) and refuse NaN scores.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import ShapeMismatchError


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels).astype(bool).reshape(-1)
    if s.shape != y.shape:
        raise ShapeMismatchError(f"{s.size} scores for {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise ShapeMismatchError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    return s, y


def _ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s`` with ties given their mean rank."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), np.float64)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` ``[N]`` for boolean ``labels`` ``[N]``."""
    s, y = _check(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    r = _ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auprc(scores, labels) -> float:
    """Average precision of ``scores`` for boolean ``labels``: ``sum_k (R_k - R_{k-1}) P_k`` over the
    distinct thresholds, highest first."""
    s, y = _check(scores, labels)
    n_pos = int(y.sum())
    if not n_pos or n_pos == len(y):
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]  # end of each tied group
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` ``[K + 1]`` from ``(0, 0)`` over the ``K`` distinct thresholds, highest first."""
    s, y = _check(scores, labels)
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1] if len(s) else np.zeros(0, int)
    tp = np.cumsum(y_sorted)[last] if len(s) else np.zeros(0)
    fp = (last + 1) - tp
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def separation(scores, labels) -> dict[str, float]:
    """``{"auroc", "auprc", "n", "positives"}`` of one score."""
    s, y = _check(scores, labels)
    return {"auroc": auroc(s, y), "auprc": auprc(s, y), "n": int(len(y)), "positives": int(y.sum())}


__all__ = ["auroc", "auprc", "roc_curve", "separation"]
