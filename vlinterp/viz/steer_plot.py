"""Before/after pictures of steering: scenes with the question, the unsteered answer and the
steered one (PNG, written atomically)."""
from __future__ import annotations

import io

from .overlay import write_bytes_atomic


def before_after(rows, path: str, title: str = "", judge=None, wrap: int = 0) -> str:
    """``rows``: ``[(PIL image, question, truth, unsteered answer, steered answer)]``. Answers are
    green when ``judge(answer, truth)`` (default: equal to ``truth``), else red; ``wrap`` > 0 wraps
    long answers (captions) at that many characters."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judge = judge or (lambda a, t: a == t)
    fmt = (lambda a: "\n".join(textwrap.wrap(a, wrap))) if wrap else (lambda a: a)
    n = len(rows)
    extra = 0.9 if wrap else 0.0
    fig, axes = plt.subplots(1, n, figsize=((3.0 if wrap else 2.5) * n, 3.3 + extra), squeeze=False)
    for ax, (img, q, truth, a0, a1) in zip(axes[0], rows):
        ax.imshow(img)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(q, fontsize=8)
        c0 = "tab:green" if judge(a0, truth) else "tab:red"
        c1 = "tab:green" if judge(a1, truth) else "tab:red"
        ax.text(0.0, -0.04, f"unsteered: {fmt(a0)}", color=c0, fontsize=8 if wrap else 9, transform=ax.transAxes, va="top")
        ax.text(0.0, -0.45 if wrap else -0.2, f"steered: {fmt(a1)}", color=c1, fontsize=8 if wrap else 9, transform=ax.transAxes, va="top")
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


__all__ = ["before_after"]
