"""The "this looks like that" figure of a prototype model's explanation
(:func:`vlinterp.prototypes.explain.explanation`): per row, the image, the prototype's map on it and
the training patch it was pushed onto."""
from __future__ import annotations

import io

from ..core.io import write_bytes
from .overlay import overlay


def figure_bytes(image, ex: dict) -> bytes:
    """PNG bytes of the figure for ``image`` (PIL) and its explanation ``ex``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ex["rows"]
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.2, 2.1 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows):
        ax_row[0].imshow(image)
        ax_row[0].set_title(f"{r['class']} (p={r['prob']:.2f})", fontsize=8)
        ax_row[1].imshow(overlay(image, r["map"]))
        ax_row[1].set_title(f"prototype {r['prototype']} ({r['prototype_class']}, scale {r['scale']}) here", fontsize=8)
        if r["source"] is not None:
            ax_row[2].imshow(r["source"])
        ax_row[2].set_title(f"looks like this training patch\nsim {r['similarity']:.2f} x w = {r['contribution']:.2f}", fontsize=8)
        for a in ax_row:
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle("this looks like that", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def figure(pm, image, path: str, top_classes: int = 2, per_class: int = 3) -> str:
    """Explain ``image`` (path, PIL or array) with ``pm`` and write the figure to ``path`` (PNG,
    atomically, never over a file vlinterp did not write); returns ``path``."""
    from ..core.images import load_image
    from ..prototypes.explain import explanation

    img = load_image(image)
    return write_bytes(path, figure_bytes(img, explanation(pm, img, top_classes, per_class)), flag="--out")


__all__ = ["figure", "figure_bytes"]
