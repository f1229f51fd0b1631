"""Pictures of hallucination detection: per task, the ROC curve of every detector on the held-out
claims (left) and the per-layer AUROC of the logit-lens detectors (right)."""
from __future__ import annotations

import numpy as np

from ..core.io import write_bytes
from .trace_plot import _figure_bytes


def plot_detection(res: dict, path: str, title: str = "") -> str:
    """One row per task of :func:`vlinterp.eval.detect.run` (``res["tasks"]``), written atomically
    to ``path`` (PNG; never over a file vlinterp did not write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..metrics.detection import roc_curve

    tasks = list(res["tasks"].items())
    fig, axes = plt.subplots(len(tasks), 2, figsize=(9.0, 3.6 * len(tasks)), squeeze=False)
    for (kind, t), (a, b) in zip(tasks, axes):
        y = np.array([it["hallucinated"] for it in t["items"]], bool)
        for name, r in t["detectors"].items():
            s = np.array([it["scores"][name] for it in t["items"]], np.float64)
            fpr, tpr = roc_curve(s, y)
            a.plot(fpr, tpr, label=f"{name} ({r['auroc']:.3f})")
            if r.get("layer_auroc"):
                b.plot(range(len(r["layer_auroc"])), r["layer_auroc"], marker="o", label=name)
        a.plot([0, 1], [0, 1], color="gray", lw=0.8, ls=":")
        a.set_xlabel("false positive rate (grounded claims flagged)")
        a.set_ylabel("true positive rate (hallucinations flagged)")
        a.set_title(f"{kind}: {t['claims']} claims, {t['hallucinated']} hallucinated", fontsize=9)
        a.legend(fontsize=7, loc="lower right")
        b.axhline(0.5, color="gray", lw=0.8, ls=":")
        b.set_xlabel("layer read by the logit lens")
        b.set_ylabel("AUROC (held-out claims)")
        b.set_ylim(0, 1)
        if b.lines[1:]:
            b.legend(fontsize=7)
        for ax in (a, b):
            ax.grid(alpha=0.3)
    fig.suptitle(title or f"{res['model']}: hallucination detection on {res['dataset']}", fontsize=10)
    return write_bytes(path, _figure_bytes(fig), flag="--out")


__all__ = ["plot_detection"]
