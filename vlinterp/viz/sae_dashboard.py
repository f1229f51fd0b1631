"""Feature dashboards: one self-contained HTML page per SAE feature and an index page.

Each feature page shows its top-activating image patches as crops with the patch outlined, its
top text tokens in context (the token highlighted), a histogram of its activations on image vs
text tokens, and the logit effect of its decoder direction (the tokens ``lm_head(W_dec[k])``
raises and lowers most; LLaVA only). Pages embed their images (base64 PNG), so a page is one file.
Items are the store's :class:`~vlinterp.core.items.Item` (sample ``i`` = ``items[i]``); pages are
written with :mod:`vlinterp.core.io` (into a directory the caller publishes, e.g. with
:func:`~vlinterp.core.io.output_dir`).
"""
from __future__ import annotations

import base64
import html
import io
import os

import numpy as np
import torch

from ..core.layout import IMAGE


def _png(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _patch_box(adapter, item, r: int, c: int, stream: str):
    """The (r, c) patch's box in the item's original image pixels, from the ``stream`` layout."""
    b = adapter.prepare(images=[item.image], text=[item.prompt]) if adapter.kind == "vlm" else adapter.prepare(images=[item.image])
    t = b.layouts[stream].images[0].tiles[0]
    rows, cols = t.grid
    x0, y0, x1, y1 = t.box
    w, h = (x1 - x0) / cols, (y1 - y0) / rows
    return (x0 + c * w, y0 + r * h, x0 + (c + 1) * w, y0 + (r + 1) * h)


def _crop(adapter, item, r: int, c: int, stream: str, pad: float = 1.5):
    from PIL import ImageDraw

    img = item.image.convert("RGB")
    x0, y0, x1, y1 = _patch_box(adapter, item, r, c, stream)
    w, h = x1 - x0, y1 - y0
    box = (max(0, int(x0 - pad * w)), max(0, int(y0 - pad * h)), min(img.width, int(x1 + pad * w)), min(img.height, int(y1 + pad * h)))
    crop = img.crop(box).resize((96, 96 * max(1, box[3] - box[1]) // max(1, box[2] - box[0])), resample=0)
    sx, sy = crop.width / max(1, box[2] - box[0]), crop.height / max(1, box[3] - box[1])
    d = ImageDraw.Draw(crop)
    d.rectangle([(x0 - box[0]) * sx, (y0 - box[1]) * sy, (x1 - box[0]) * sx - 1, (y1 - box[1]) * sy - 1], outline=(255, 255, 255), width=2)
    return crop


def _hist_png(vals_img: np.ndarray, vals_txt: np.ndarray) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 2.0))
    hi = max([1e-6] + [float(v.max()) for v in (vals_img, vals_txt) if len(v)])
    bins = np.linspace(0, hi, 25)
    ax.hist([vals_img, vals_txt], bins=bins, label=["image", "text"], color=["#d62728", "#1f77b4"], log=True)
    ax.legend(fontsize=7)
    ax.set_xlabel("activation (where > 0)", fontsize=7)
    ax.tick_params(labelsize=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_dashboards(adapter, sae, store, items, out_dir: str, features=None, top: int = 12, context: int = 5,
                     F: torch.Tensor | None = None, omega=None, progress: bool = True) -> str:
    """Write ``out_dir/index.html`` and ``out_dir/feature_{k}.html`` for ``features`` (default:
    the 32 most frequently firing). ``items``: the store's dataset items (sample id = index)."""
    from tqdm.auto import tqdm

    from ..core.io import write_bytes
    from ..sae.analysis import encode_rows, logit_effect

    F = encode_rows(sae, store.acts) if F is None else F
    rows = store.rows
    mod = rows["modality"]
    fires = (F > 0).sum(0)
    if features is None:
        features = [int(k) for k in torch.argsort(fires, descending=True)[:32] if fires[k] > 0]
    os.makedirs(out_dir, exist_ok=True)
    stream = adapter.site_table[store.meta["site"]].stream
    tok = getattr(adapter, "tokenizer", None)
    # text context: (sample, position) -> token id
    seq: dict[int, dict[int, int]] = {}
    for s, p, t in zip(rows["sample"].tolist(), rows["position"].tolist(), rows["token"].tolist()):
        if t >= 0:
            seq.setdefault(s, {})[p] = t
    index_rows = []
    for k in tqdm(features, desc="feature dashboards", disable=not progress):
        f = F[:, k]
        img_rows = torch.nonzero((mod == IMAGE) & (f > 0))[:, 0]
        txt_rows = torch.nonzero((mod != IMAGE) & (f > 0))[:, 0]
        share = float(f[mod == IMAGE].sum() / f.sum().clamp_min(1e-12))
        crops = []
        for n in img_rows[torch.argsort(f[img_rows], descending=True)][:top].tolist():
            s = int(rows["sample"][n])
            c = _crop(adapter, items[s], int(rows["row"][n]), int(rows["col"][n]), stream)
            crops.append(f'<figure><img src="{_png(c)}"><figcaption>{float(f[n]):.2f} · #{s}</figcaption></figure>')
        texts = []
        for n in txt_rows[torch.argsort(f[txt_rows], descending=True)][:top].tolist():
            s, p = int(rows["sample"][n]), int(rows["position"][n])
            ctx = seq.get(s, {})
            words = []
            for q in range(p - context, p + context + 1):
                if q in ctx and tok is not None:
                    w = html.escape(tok.convert_ids_to_tokens(ctx[q]))
                    words.append(f"<b>{w}</b>" if q == p else w)
            texts.append(f"<li>{float(f[n]):.2f}: {' '.join(words)}</li>")
        up, down = logit_effect(adapter, sae, k)
        hist = _hist_png(f[img_rows].numpy(), f[txt_rows].numpy())
        om = f"{float(omega[k]):.3f}" if omega is not None else "n/a"
        page = f"""<!doctype html><html><head><meta charset="utf-8"><title>feature {k}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} figure{{display:inline-block;margin:4px;text-align:center;font-size:11px}}
li b{{background:#ffd54f}} .m{{color:#555}}</style></head><body>
<p><a href="index.html">index</a></p><h1>feature {k}</h1>
<p class="m">fires on {int(fires[k])} of {len(f)} tokens · image share of activation mass {share:.2f} · cross-modal weight ω {om}</p>
<img src="{hist}"><h2>top image patches</h2>{''.join(crops) or '<p>none</p>'}
<h2>top text tokens</h2><ol>{''.join(texts) or '<li>none</li>'}</ol>
<h2>logit effect of the decoder direction</h2><p>raises: {html.escape(' '.join(up)) or 'n/a'}<br>lowers: {html.escape(' '.join(down)) or 'n/a'}</p>
</body></html>"""
        write_bytes(os.path.join(out_dir, f"feature_{k}.html"), page.encode())
        index_rows.append(f'<tr><td><a href="feature_{k}.html">{k}</a></td><td>{int(fires[k])}</td><td>{share:.2f}</td><td>{om}</td></tr>')
    meta = store.meta
    index = f"""<!doctype html><html><head><meta charset="utf-8"><title>SAE features</title>
<style>body{{font-family:sans-serif;margin:1.5em}} td,th{{padding:2px 10px;text-align:right}}</style></head><body>
<h1>SAE features: {html.escape(str(meta.get('model')))} @ {html.escape(str(meta.get('site')))}</h1>
<p>d_sae {sae.cfg.d_sae}, {len(store)} tokens from {meta.get('samples_done')} samples</p>
<table><tr><th>feature</th><th>fires</th><th>image share</th><th>ω</th></tr>{''.join(index_rows)}</table></body></html>"""
    return write_bytes(os.path.join(out_dir, "index.html"), index.encode())


__all__ = ["write_dashboards"]
