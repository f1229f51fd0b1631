"""Pictures of pruning results: accuracy retention vs keep ratio (one line per method) and the
per-layer information curve of visual tokens with the estimated horizon."""
from __future__ import annotations

import numpy as np

from ..core.io import write_bytes
from .trace_plot import _figure_bytes


def plot_retention(res: dict, path: str, title: str = "") -> str:
    """Retention (% of unpruned accuracy, all kinds pooled) vs keep ratio from
    :func:`vlinterp.eval.prune.run_bench`, written atomically to ``path`` (PNG; never over a file vlinterp did not write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    methods = list(dict.fromkeys(r["method"] for r in res["rows"]))
    for m in methods:
        rows = sorted((r for r in res["rows"] if r["method"] == m), key=lambda r: r["keep"])
        ax.plot([r["keep"] for r in rows], [100 * r["retention"]["all"] for r in rows], marker="o", label=m)
    ax.axhline(100, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("fraction of visual tokens kept")
    ax.set_ylabel("accuracy retained (% of unpruned)")
    ax.set_title(title or f"{res['model']}: pruning, n={res['n_items']} held-out questions", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return write_bytes(path, _figure_bytes(fig), flag="--plot")


def plot_information(summary: dict, path: str, title: str = "") -> str:
    """Mean per-token information by layer (left) and each proxy's rank agreement with it
    (right) from :func:`vlinterp.pruning.information.summarise`, horizon marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = np.asarray(summary["curve"])
    L = len(curve)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.2))
    a.plot(range(L), curve, marker="o")
    a.axhline(summary["frac"] * curve.max(), color="gray", ls=":", lw=0.8, label=f"{summary['frac']:g} x peak")
    h = summary["horizon"]
    if h < L:
        a.axvline(h, color="red", ls="--", lw=1, label=f"horizon: layer {h}")
    else:
        a.set_title(f"no horizon inside the {L} layers", fontsize=8)
    a.set_xlabel("layer the token is removed from")
    a.set_ylabel("mean information (TV distance)")
    a.legend(fontsize=7)
    for k, v in summary["spearman"].items():
        b.plot(range(L), v, marker="o", label=k)
    b.set_xlabel("layer the proxy ranks for")
    b.set_ylabel("Spearman with exact information")
    b.legend(fontsize=7)
    for ax in (a, b):
        ax.set_xticks(range(L))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    return write_bytes(path, _figure_bytes(fig), flag="--plot")


__all__ = ["plot_retention", "plot_information"]
