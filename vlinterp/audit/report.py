"""Pictures and the HTML page of a modality audit: accuracy per rendering, pairwise agreement,
rendering-factor effects, and the inside view (per-layer text/image state cosine, logit lens). With a
second (planted or compared) result the layer plots overlay both."""
from __future__ import annotations

import html
import json
import os

import numpy as np

from ..core.io import write_bytes, write_json
from ..viz.trace_plot import _figure_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(res: dict, path: str) -> str:
    plt = _plt()
    names = res["renderings"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(names), 3.2))
    ax.bar(range(len(names)), [res["accuracy"][n] for n in names], color=["tab:blue" if ":" not in n else "tab:gray" for n in names])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=50, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy per rendering (render-equivalence {res['render_equivalence']:.2f}, n={res['n_items']})", fontsize=9)
    return write_bytes(path, _figure_bytes(fig))


def plot_agreement(res: dict, path: str) -> str:
    plt = _plt()
    names = [n for n in ("text", "image", "rendered", "mixed") if n in res["renderings"]]
    M = np.eye(len(names))
    for key, v in res["pair_agreement"].items():
        a, b = key.split("|")
        i, j = names.index(a), names.index(b)
        M[i, j] = M[j, i] = v
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", color="white" if M[i, j] < 0.6 else "black", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_title("same answer, per pair of renderings", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return write_bytes(path, _figure_bytes(fig))


def plot_factors(res: dict, path: str) -> str:
    plt = _plt()
    fac = res["factors"]
    fig, axes = plt.subplots(1, len(fac), figsize=(3.0 * len(fac), 2.8), squeeze=False)
    for ax, (f, levels) in zip(axes[0], fac.items()):
        xs = list(levels)
        ax.plot(range(len(xs)), [levels[x]["accuracy"] for x in xs], marker="o", label="accuracy")
        ax.plot(range(len(xs)), [levels[x]["agrees_with_text"] for x in xs], marker="s", label="agrees with text")
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, fontsize=7, rotation=20)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"rendered text: {f}", fontsize=9)
        ax.legend(fontsize=7)
    return write_bytes(path, _figure_bytes(fig))


def plot_inside(res: dict, path: str, other: dict | None = None, labels=("audit", "planted")) -> str:
    """Layer divergence (cosine of last-token states, text vs each rendering) and logit lens; with
    ``other`` both results are drawn (solid / dashed)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    colour: dict = {}
    for r, style, lab in ((res, "-", labels[0]), (other, "--", labels[1])):
        if r is None or "inside" not in r:
            continue
        for ax, part in ((a, "layer_cosine"), (b, "logit_lens")):
            for k, v in r["inside"].get(part, {}).items():
                c = colour.setdefault((part, k), f"C{len([x for x in colour if x[0] == part])}")
                ax.plot(range(len(v)), v, style, color=c, marker="o", label=f"{k} ({lab})" if other is not None else k)
    a.set_xlabel("layer")
    a.set_ylabel("cosine, last-token state")
    a.set_title("where the text and image pathways part ways", fontsize=9)
    b.set_xlabel("layer")
    b.set_ylabel("p(answer) by logit lens")
    b.set_title("answer probability read at each layer", fontsize=9)
    for ax in (a, b):
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return write_bytes(path, _figure_bytes(fig))


def write_report(res: dict, out_dir: str, title: str = "vlinterp modality audit", other: dict | None = None) -> str:
    """PNG plots, ``audit.json`` and ``report.html`` in ``out_dir`` (:mod:`vlinterp.core.io`: atomic, never
    over a file vlinterp did not write; the CLI builds the directory aside with
    :func:`~vlinterp.core.io.output_dir`); returns the HTML path."""
    figs = {"accuracy": plot_accuracy(res, os.path.join(out_dir, "accuracy.png")),
            "agreement": plot_agreement(res, os.path.join(out_dir, "agreement.png")),
            "factors": plot_factors(res, os.path.join(out_dir, "factors.png"))}
    if "inside" in res:
        figs["inside"] = plot_inside(res, os.path.join(out_dir, "inside.png"), other)
    write_json(os.path.join(out_dir, "audit.json"), res if other is None else {"audit": res, "compared": other})
    ocr = res["ocr"]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" for k, v in res["accuracy"].items())
    sim = res.get("similarity_vs_consistency")
    summary = [f"items: {res['n_items']}", f"render-equivalence rate: {res['render_equivalence']:.3f}",
               f"OCR control: {ocr['correct_rate']:.3f} read correctly; equivalence on those: "
               f"{'-' if ocr['render_equivalence_on_ocr_correct'] is None else format(ocr['render_equivalence_on_ocr_correct'], '.3f')}"]
    if sim:
        summary.append(f"consistency vs image-text similarity ({html.escape(sim['source'])}): Pearson "
                       f"{'-' if sim.get('pearson') is None else format(sim['pearson'], '.3f')}")
    if other is not None:
        summary.append(f"compared run: render-equivalence {other['render_equivalence']:.3f}, image accuracy "
                       f"{other['accuracy'].get('image', float('nan')):.3f} (vs {res['accuracy'].get('image', float('nan')):.3f})")
    imgs = "".join(f'<h2>{html.escape(k)}</h2><img src="{os.path.basename(v)}" style="max-width:100%">' for k, v in figs.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><ul>{''.join(f'<li>{s}</li>' for s in summary)}</ul>"
            f"<table border=1 cellpadding=3><tr><th>rendering</th><th>accuracy</th></tr>{rows}</table>{imgs}"
            f"<h2>items</h2><pre>{html.escape(json.dumps(res['per_item'][:50], indent=1))}</pre></body></html>")
    path = os.path.join(out_dir, "report.html")
    write_bytes(path, page.encode())
    return path


__all__ = ["write_report", "plot_accuracy", "plot_agreement", "plot_factors", "plot_inside"]
