"""Pictures and the HTML page of a modality audit: accuracy per rendering, pairwise agreement,
rendering-factor effects, and the inside view (per-layer text/image state cosine, logit lens). With a
second (planted or compared) result the layer plots overlay both."""
from __future__ import annotations

import html
import os

import numpy as np

from ..viz.trace_plot import _figure_bytes


def _write(path: str, data: bytes) -> str:
    """Write a plot atomically, recorded in its folder's manifest (:func:`vlinterp.core.io.write_bytes`)."""
    from ..core.io import write_bytes

    return write_bytes(path, data)


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
    return _write(path, _figure_bytes(fig))


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
    return _write(path, _figure_bytes(fig))


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
    return _write(path, _figure_bytes(fig))


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
    return _write(path, _figure_bytes(fig))


def _pct(v) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}%"


def _thumb(img, side: int = 96) -> str | None:
    """A small PNG data URI of an item's image (``None`` without one)."""
    if img is None:
        return None
    from ..core.images import load_image
    from ..viz.overlay import data_uri

    im = load_image(img).copy()
    im.thumbnail((side, side))
    return data_uri(np.asarray(im))


def _items_table(res: dict, items, limit: int) -> str:
    """One row per item: its image, question, expected answer, each base rendering's answer (right
    or wrong) and whether the renderings agree."""
    from .render import BASE
    from .run import _correct

    esc = html.escape
    per = res["per_item"][:limit]
    names = [n for n in BASE if n in res["renderings"]]
    imgs = {}
    if items is not None:
        imgs = {it.id: it.image for it in items}
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = []
    for k, r in enumerate(per):
        t = _thumb(imgs.get(r["id"]))
        pic = f'<img src="{t}" alt="item {esc(str(r["id"]))}">' if t else '<span class="muted">text only</span>'
        cells = []
        for n in names:
            a = r["answers"].get(n)
            if a is None:
                cells.append('<td class="muted">-</td>')
            else:
                ok = _correct(a, r["answer"])
                cells.append(f'<td class="{"ok" if ok else "bad"}" title="{"right" if ok else "wrong"}">{esc(str(a))}</td>')
        agree = '<span class="pill ok">agree</span>' if r["consistent"] else '<span class="pill bad">differ</span>'
        ocr = "" if "ocr" not in r else ("read" if r["ocr"] else '<span class="bad">not read</span>')
        rows.append(f'<tr class="item {"consistent" if r["consistent"] else "inconsistent"}"><td class="num">{k}</td><td>{pic}</td>'
                    f'<td>{esc(str(r["id"]))}</td><td>{esc(str(r.get("question", "")))}</td><td><b>{esc(str(r["answer"]))}</b></td>'
                    f'{"".join(cells)}<td>{agree}</td><td>{ocr}</td></tr>')
    more = (f'<p class="note">{len(res["per_item"]) - limit} more items are in audit.json.</p>'
            if len(res["per_item"]) > limit else "")
    return (f'<table class="t items"><tr><th>#</th><th>image</th><th>id</th><th>question</th><th>expected</th>{head}'
            f'<th>renderings</th><th>rendered text</th></tr>{"".join(rows)}</table>{more}')


def write_report(res: dict, out_dir: str, title: str = "vlinterp modality audit", other: dict | None = None,
                 items=None, max_items: int = 200) -> str:
    """PNG plots, ``audit.json`` and ``report.html`` (atomic writes, :mod:`vlinterp.core.io`) in
    ``out_dir``; ``items``: the audited items, whose images the items table shows (first
    ``max_items``). Returns the HTML path."""
    from ..core.io import write_bytes, write_json
    from ..viz.report import static_text

    os.makedirs(out_dir, exist_ok=True)
    figs = {"accuracy per rendering": plot_accuracy(res, os.path.join(out_dir, "accuracy.png")),
            "agreement between renderings": plot_agreement(res, os.path.join(out_dir, "agreement.png")),
            "rendered-text factors": plot_factors(res, os.path.join(out_dir, "factors.png"))}
    if "inside" in res:
        figs["inside the model"] = plot_inside(res, os.path.join(out_dir, "inside.png"), other)
    write_json(os.path.join(out_dir, "audit.json"), res if other is None else {"audit": res, "compared": other})
    esc = html.escape
    ocr = res["ocr"]
    sim = res.get("similarity_vs_consistency")
    summary = [("items", str(res["n_items"])), ("render-equivalence rate", f"{res['render_equivalence']:.3f}"),
               ("OCR control: rendered text read", f"{ocr['correct_rate']:.3f}"),
               ("render-equivalence on items read", "-" if ocr["render_equivalence_on_ocr_correct"] is None
                else f"{ocr['render_equivalence_on_ocr_correct']:.3f}")]
    if sim:
        summary.append((f"consistency vs image-text similarity ({sim['source']}), Pearson",
                        "-" if sim.get("pearson") is None else f"{sim['pearson']:.3f}"))
    if other is not None:
        summary.append(("compared run: render-equivalence", f"{other['render_equivalence']:.3f}"))
    cards = "".join(f"<tr><th>{esc(k)}</th><td class='num'>{esc(v)}</td></tr>" for k, v in summary)
    cmp_head = "<th>compared run</th>" if other is not None else ""
    acc_rows = "".join(f"<tr><td>{esc(k)}</td><td class='num'>{_pct(v)}</td>"
                       + (f"<td class='num'>{_pct(other['accuracy'].get(k))}</td>" if other is not None else "") + "</tr>"
                       for k, v in res["accuracy"].items())
    pair_rows = "".join(f"<tr><td>{esc(k.replace('|', ' and '))}</td><td class='num'>{_pct(v)}</td></tr>"
                        for k, v in res["pair_agreement"].items())
    imgs = "".join(f'<figure class="plot"><img src="{os.path.basename(v)}" alt="{esc(k)}"><figcaption>{esc(k)}</figcaption></figure>'
                   for k, v in figs.items())
    n_bad = sum(not r["consistent"] for r in res["per_item"])
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{static_text("vlinterp.css")}
figure.plot img{{width:auto;max-width:100%}} .cols{{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}}</style></head>
<body class="report audit"><h1>{esc(title)}</h1>
<p class="note">The same content asked as text, as an image, as text drawn into an image (rendered) and mixed; a consistent
model gives one answer to all of them.</p>
<div class="cols"><div><h2>Summary</h2><table class="t">{cards}</table></div>
<div><h2>Accuracy per rendering</h2><table class="t"><tr><th>rendering</th><th>accuracy</th>{cmp_head}</tr>{acc_rows}</table></div>
<div><h2>Same answer, per pair</h2><table class="t"><tr><th>renderings</th><th>agreement</th></tr>{pair_rows}</table></div></div>
<h2>Plots</h2><div class="cols">{imgs}</div>
<h2>Items</h2><p class="note">{n_bad} of {len(res['per_item'])} items get different answers from different renderings.
Answers in green match the expected answer, in red they do not.</p>
{_items_table(res, items, max_items)}
</body></html>"""
    path = os.path.join(out_dir, "report.html")
    write_bytes(path, page.encode())
    return path


__all__ = ["write_report", "plot_accuracy", "plot_agreement", "plot_factors", "plot_inside"]
