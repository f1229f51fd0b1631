"""Pictures of causal-tracing results: RR heat maps (layers x positions, one panel per
component) and per-layer RR curves (one line per component at one position group)."""
from __future__ import annotations

import io

import numpy as np

from ..core.io import write_bytes

COMPONENT_LABEL = {"resid": "residual (hidden) state", "attn": "attention output", "mlp": "MLP output"}


def _figure_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plot_trace(result, path: str, title: str | None = None) -> str:
    """One heat map per component: RR ``[layers, positions]`` of a :func:`~vlinterp.tracing.trace`
    result, written atomically to ``path`` (never over a file vlinterp did not write) (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rr = np.asarray(result.arrays["rr"])  # [C, L, G]
    comps, layers, pos = result.meta["components"], result.meta["layers"], result.meta["positions"]
    C, L, G = rr.shape
    fig, axes = plt.subplots(1, C, figsize=(1.2 + 0.45 * G * C + 1.2 * C, 0.9 + 0.32 * L + 1.2), squeeze=False)
    lim = max(1.0, float(np.nanmax(np.abs(rr)))) if rr.size else 1.0
    for c, ax in enumerate(axes[0]):
        im = ax.imshow(rr[c], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
        ax.set_title(COMPONENT_LABEL.get(comps[c], comps[c]), fontsize=9)
        ax.set_xticks(range(G))
        ax.set_xticklabels([str(p) for p in pos], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(L))
        ax.set_yticklabels([str(l) for l in layers], fontsize=7)
        ax.set_ylabel("layer" if c == 0 else "")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="recovery rate")
    p_clean, p_corr = float(result.arrays["p_clean"][0]), float(np.mean(result.arrays["p_corrupt"]))
    fig.suptitle(title or f"P({result.meta['target']}): clean {p_clean:.3f}, corrupted {p_corr:.3f}", fontsize=10)
    return write_bytes(path, _figure_bytes(fig), flag="--plot")


def plot_rr_curves(curves: dict[str, np.ndarray], path: str, title: str = "", err: dict[str, np.ndarray] | None = None,
                   xlabel: str = "layer") -> str:
    """Per-layer RR lines: ``curves[label]`` ``[n_layers]`` (e.g. mean RR over scenes of each
    component at the last token); ``err[label]`` optional half-widths (shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.4, 3.4))
    for label, y in curves.items():
        y = np.asarray(y, float)
        x = np.arange(len(y))
        ax.plot(x, y, marker="o", label=label)
        if err and label in err:
            ax.fill_between(x, y - err[label], y + err[label], alpha=0.2)
    n = max((len(y) for y in curves.values()), default=0)
    ax.set_xticks(range(n))
    ax.axhline(0, color="gray", lw=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("recovery rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return write_bytes(path, _figure_bytes(fig), flag="--plot")


__all__ = ["plot_trace", "plot_rr_curves"]
