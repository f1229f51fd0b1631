"""Pictures for information-flow analyses: the attention-knockout flow map (drop in P(answer) per
blocked edge and layer window), per-layer curves of several measures side by side, and
data-selection curves (a metric against the share of a pool fine-tuned on, one line per selection
rule)."""
from __future__ import annotations

import numpy as np

from ..core.io import write_bytes
from .trace_plot import _figure_bytes


def plot_knockout_flow(drop: np.ndarray, edges: list[str], windows: list[str], path: str, title: str = "",
                       err: np.ndarray | None = None) -> str:
    """Flow map: ``drop[e, w]`` (relative drop in P(answer), 0..1, of edge ``e`` blocked over layer
    window ``w``) as a heat map with the values printed, plus one line per edge across the
    windows; ``err`` optional standard errors of the same shape (error bars). PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drop = np.asarray(drop, float)
    E, W = drop.shape
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(4.2 + 0.9 * W + 4.2, 1.2 + 0.5 * E + 1.4),
                                 gridspec_kw={"width_ratios": [1.0 + 0.25 * W, 1.4]})
    lim = max(0.05, float(np.nanmax(np.abs(drop)))) if drop.size else 1.0
    im = a0.imshow(drop, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for e in range(E):
        for w in range(W):
            a0.text(w, e, f"{100 * drop[e, w]:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if abs(drop[e, w]) > 0.6 * lim else "black")
    a0.set_xticks(range(W))
    a0.set_xticklabels(windows, fontsize=8)
    a0.set_yticks(range(E))
    a0.set_yticklabels(edges, fontsize=8)
    a0.set_xlabel("blocked layers")
    fig.colorbar(im, ax=a0, shrink=0.8, label="relative drop in P(answer)")
    for e in range(E):
        y = 100 * drop[e]
        a1.plot(range(W), y, marker="o", label=edges[e])
        if err is not None:
            a1.errorbar(range(W), y, yerr=100 * np.asarray(err)[e], fmt="none", capsize=2, color=a1.lines[-1].get_color())
    a1.axhline(0, color="0.6", lw=0.8)
    a1.set_xticks(range(W))
    a1.set_xticklabels(windows, fontsize=8)
    a1.set_xlabel("blocked layers")
    a1.set_ylabel("drop in P(answer) (%)")
    a1.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return write_bytes(path, _figure_bytes(fig), flag="--plot")


def plot_layer_curves(series: dict[str, list[float]], path: str, title: str = "", ylabel: str = "",
                      err: dict[str, list[float]] | None = None) -> str:
    """One line per measure ``series[label]`` ``[L]`` against the layer (e.g. a knockout's drop and a
    tracing recovery rate, both fractions of the answer's probability), ``err[label]`` optional error
    bars. PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, vals in series.items():
        x = np.arange(len(vals))
        ax.plot(x, vals, marker="o", label=label)
        if err and label in err:
            ax.errorbar(x, vals, yerr=err[label], fmt="none", capsize=2, color=ax.lines[-1].get_color())
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xticks(np.arange(max(len(v) for v in series.values())))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return write_bytes(path, _figure_bytes(fig), flag="--plot")


def plot_selection_curves(fractions: list[float], curves: dict[str, list[float]], metrics: list[str], path: str,
                          full: dict[str, float] | None = None, extra: dict[str, dict[str, float]] | None = None,
                          title: str = "", err: dict[str, dict[str, list[float]]] | None = None) -> str:
    """One panel per metric: ``curves[rule][m][i]`` (a dict ``{metric: [value per fraction]}`` per
    selection rule, e.g. ``top``/``random``) against ``fractions``; ``full[metric]`` a horizontal
    line (the whole pool); ``extra[label][metric]`` single reference points drawn as dotted lines
    (the model before fine-tuning, an oracle subset); ``err[rule][m]`` optional error bars of the
    curves (e.g. standard errors over seeds). PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.2), squeeze=False)
    x = [100 * f for f in fractions]
    for ax, m in zip(axes[0], metrics):
        for rule, vals in curves.items():
            ax.plot(x, vals[m], marker="o", label=rule)
            if err and rule in err:
                ax.errorbar(x, vals[m], yerr=err[rule][m], fmt="none", capsize=2, color=ax.lines[-1].get_color())
        if full is not None:
            ax.axhline(full[m], color="k", lw=1.2, label="full pool")
        for k, (label, row) in enumerate((extra or {}).items()):
            ax.axhline(row[m], color=f"C{k + 4}", lw=1, ls=":", label=label)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("% of the pool")
        ax.set_xticks(x)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return write_bytes(path, _figure_bytes(fig), flag="--plot")


def plot_dla(components: np.ndarray, heads: np.ndarray, direct: float, total: float, path: str, title: str = "",
             labels=("attention", "MLP")) -> str:
    """Direct logit attribution: bars of each layer's attention and MLP contribution ``components``
    ``[2, L]`` (and the direct path), and a heat map of the per-head contributions ``heads``
    ``[L, H]`` (skipped when all NaN). PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps = np.asarray(components, float)
    heads = np.asarray(heads, float)
    has_heads = heads.size and not np.all(np.isnan(heads))
    C, L = comps.shape
    fig, axes = plt.subplots(1, 2 if has_heads else 1, figsize=(4 + 0.5 * L + (3 + 0.4 * heads.shape[1] if has_heads else 0), 3.4),
                             squeeze=False)
    ax = axes[0][0]
    w = 0.8 / C
    for c in range(C):
        ax.bar(np.arange(L) + (c - (C - 1) / 2) * w, comps[c], width=w, label=labels[c] if c < len(labels) else str(c))
    ax.bar([L], [direct], width=w, color="0.5", label="direct path")
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xticks(list(range(L)) + [L])
    ax.set_xticklabels([str(l) for l in range(L)] + ["embed"], fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("logit difference written")
    ax.set_title(f"sum = total {total:+.3f}", fontsize=9)
    ax.legend(fontsize=7)
    if has_heads:
        a1 = axes[0][1]
        lim = max(1e-6, float(np.nanmax(np.abs(heads))))
        im = a1.imshow(heads, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
        a1.set_xlabel("head")
        a1.set_ylabel("layer")
        a1.set_xticks(range(heads.shape[1]))
        a1.set_yticks(range(heads.shape[0]))
        a1.set_title("attention heads", fontsize=9)
        fig.colorbar(im, ax=a1, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return write_bytes(path, _figure_bytes(fig), flag="--plot")


__all__ = ["plot_knockout_flow", "plot_selection_curves", "plot_dla"]
