"""One self-contained HTML explorer of a saliency result: everything that needs no server.

Every overlay is precomputed and embedded as a PNG data URI, so ``report.html`` is a single file
that opens offline (its CSS and script, :mod:`vlinterp.viz.static`, are inlined). A *view* is one
selectable map source (a method, or a method at one layer) holding:

* one overlay per target (answer token, class, text, word), with the raw range of each map for
  the colour scale, and optionally ``all``: the answer's map (the mean of the answer rows, what
  ``overlay.png`` shows) or, without answer rows, the mean of the normalised maps. The report opens
  on ``all`` when there is one;
* ``layers``: one small overlay per layer and target, for methods that keep each layer's map
  (raw attention, relevancy: ``arrays["layer_scores"]``);
* ``text``: the prompt's tokens and each target's score on them (``arrays["text_scores"]``):
  which prompt words the answer used.

Clicking a token button swaps the overlay ``<img id="overlay">``, the per-layer strip and the
prompt-token colours; ``<select id="view">`` switches views and keeps the token.

>>> views = [view_from_result("relevancy", res, image, answer_rows=[0, 1])]
>>> write_report("out/report.html", image, views, title="what color is the circle?", info={"answer": "red"})
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from ..core.errors import ArgumentError
from .overlay import colorize, data_uri, overlay

THUMB = 140  # longer side of the per-layer thumbnails, pixels
MAX_LAYER_MAPS = 320  # per view; beyond it the per-layer strip shows the answer's maps only


@dataclass
class View:
    """``name``: label in the selector; ``targets``: one label per button; ``overlays``: one
    data URI per target; ``all``: optional data URI of the answer's (or mean) map and
    ``all_label`` its button; ``ranges``: ``[lo, hi]`` of each target's raw map (``all_range``
    for ``all``); ``layers``: ``[{"label", "overlays": [per target], "all"}]``; ``text``:
    ``{"tokens": [...], "scores": [[per token] per target], "all": [...]}``; ``meta``: shown as JSON."""

    name: str
    targets: list[str]
    overlays: list[str]
    all: str | None = None
    meta: dict = field(default_factory=dict)
    all_label: str = "all"
    ranges: list[list[float]] = field(default_factory=list)
    all_range: list[float] | None = None
    layers: list[dict] = field(default_factory=list)
    text: dict | None = None
    default: object = None

    @property
    def start(self):
        """The token shown first: ``"all"`` when there is an answer/mean map, else ``default`` (or 0)."""
        return "all" if self.all else (self.default if isinstance(self.default, int) and 0 <= self.default < len(self.targets) else 0)

    def to_dict(self) -> dict:
        return {"name": self.name, "targets": self.targets, "overlays": self.overlays, "all": self.all,
                "all_label": self.all_label, "ranges": self.ranges, "all_range": self.all_range,
                "layers": self.layers, "text": self.text, "meta": self.meta, "start": self.start}


def view_from_result(name: str, result, image, alpha: float = 0.5, colormap: str = "jet", with_all: bool = True,
                     answer_rows: list[int] | None = None) -> View:
    """Build a :class:`View` from a Result: one overlay per target (:func:`~vlinterp.metrics.result_map`),
    the answer's map (mean of ``answer_rows``, as :attr:`Explanation.answer_map`) or the mean of
    the normalised maps, and the per-layer and prompt-token views when the Result keeps them."""
    from ..metrics.faithfulness import result_map

    maps = [result_map(result, k) for k in range(len(result.scores))]
    targets = list(result.targets) or [f"target {k}" for k in range(len(maps))]
    meta = {k: v for k, v in result.meta.items() if _jsonable(v)}
    v = view_from_maps(name, targets, maps, image, alpha, colormap, with_all, meta=meta, answer_rows=answer_rows)
    layer_scores = result.arrays.get("layer_scores")
    if layer_scores is not None and result.layout is not None and np.ndim(layer_scores) == 3:
        ids = list(result.meta.get("layer_ids") or range(np.shape(layer_scores)[1]))
        per_token = len(ids) * len(maps) <= MAX_LAYER_MAPS
        for j, l in enumerate(ids):
            lm = [result.layout.to_heatmap(layer_scores[k, j], result.image_index) for k in range(len(maps))]
            v.layers.append(_layer_entry(f"layer {l}", lm, image, alpha, colormap, answer_rows, with_all, per_token))
    ts = result.arrays.get("text_scores")
    tokens = result.meta.get("text_tokens")
    if ts is not None and tokens and np.shape(ts) == (len(maps), len(tokens)):
        ts = np.asarray(ts, np.float64)
        rows = answer_rows if answer_rows else list(range(len(maps)))
        v.text = {"tokens": [str(t) for t in tokens], "scores": _round(ts), "all": _round(ts[rows].mean(0))}
    return v


def view_from_maps(name: str, targets: list[str], maps: list[np.ndarray], image, alpha: float = 0.5,
                   colormap: str = "jet", with_all: bool = True, meta: dict | None = None,
                   answer_rows: list[int] | None = None) -> View:
    """Build a :class:`View` from ``[H, W]`` maps (one per target). ``answer_rows``: the rows of
    the answer; their mean is the ``all`` map (default: the mean of every normalised map)."""
    if len(targets) != len(maps):
        raise ArgumentError(f"{len(targets)} targets for {len(maps)} maps")
    ovs = [data_uri(overlay(image, m, alpha, colormap)) for m in maps]
    ranges = [_range(m) for m in maps]
    allm, label = _all_map(maps, answer_rows, with_all)
    allv = data_uri(overlay(image, allm, alpha, colormap)) if allm is not None else None
    return View(name, [str(t) for t in targets], ovs, allv, dict(meta or {}), label, ranges,
                _range(allm) if allm is not None else None, default=answer_rows[0] if answer_rows else 0)


def _all_map(maps, answer_rows, with_all):
    """The map of the ``all`` button and its label, or ``(None, "all")``."""
    if answer_rows and len(answer_rows) > 1:
        return np.mean([maps[k] for k in answer_rows], 0), f"answer (mean of {len(answer_rows)})"
    if not answer_rows and with_all and len(maps) > 1:
        return np.mean([_norm(m) for m in maps], 0), "all"
    return None, "all"


def _layer_entry(label, maps, image, alpha, colormap, answer_rows, with_all, per_token: bool = True) -> dict:
    """One layer's thumbnails: per target (``None`` each when ``per_token`` is off) and the ``all`` map."""
    small = _thumb_image(image)
    allm, _ = _all_map(maps, answer_rows, with_all)
    if allm is None and not per_token:  # no mean map to fall back on: the answer's (or first) row
        allm = maps[answer_rows[0] if answer_rows else 0]
    return {"label": label, "overlays": [data_uri(overlay(small, m, alpha, colormap)) if per_token else None for m in maps],
            "all": data_uri(overlay(small, allm, alpha, colormap)) if allm is not None else None}


def _thumb_image(image):
    from ..core.images import load_image

    img = load_image(image)
    if max(img.size) <= THUMB:
        return img
    img = img.copy()
    img.thumbnail((THUMB, THUMB))
    return img


def _range(m) -> list[float]:
    m = np.asarray(m, np.float64)
    return [float(f"{m.min():.4g}"), float(f"{m.max():.4g}")]


def _round(a) -> list:
    return [float(f"{x:.4g}") for x in np.asarray(a, np.float64).ravel()] if np.ndim(a) == 1 else [_round(r) for r in a]


def _norm(m):
    m = np.asarray(m, np.float64)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def static_text(name: str) -> str:
    """A file of :mod:`vlinterp.viz.static` (the shared CSS, the report's script)."""
    return resources.files("vlinterp.viz").joinpath("static", name).read_text(encoding="utf-8")


def colorbar_uri(colormap: str = "jet", width: int = 256, height: int = 12) -> str:
    """A horizontal colour bar (low on the left) as a PNG data URI."""
    ramp = np.linspace(0.0, 1.0, width)[None, :].repeat(height, 0)
    return data_uri(colorize(ramp, colormap, normalize=False))


def _fmt(x: float) -> str:
    return f"{x:.3g}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def report_html(image, views: list[View], title: str = "vlinterp explain", info: dict | None = None,
                colormap: str = "jet") -> str:
    """The report as one HTML string (image, overlays, data, CSS and script embedded)."""
    if not views:
        raise ArgumentError("a report needs at least one view")
    info = dict(info or {})
    esc = html.escape
    data = {"views": [v.to_dict() for v in views], "info": {k: v for k, v in info.items() if _jsonable(v)}}
    blob = json.dumps(data).replace("</", "<\\/")
    v0 = views[0]
    start = v0.start
    options = "".join(f'<option value="{i}"{" selected" if i == 0 else ""}>{esc(v.name)}</option>' for i, v in enumerate(views))
    btns = [f'<button type="button" class="tok" id="tok-{k}" data-k="{k}" aria-pressed="{str(start == k).lower()}">{esc(t)}</button>'
            for k, t in enumerate(v0.targets)]
    if v0.all:
        btns.insert(0, f'<button type="button" class="tok tok-all" id="tok-all" data-k="all" aria-pressed="true">{esc(v0.all_label)}</button>')
    rows = "".join(f"<div><b>{esc(str(k))}</b> {esc(_info_text(v))}</div>" for k, v in info.items() if not isinstance(v, dict))
    src = data_uri(np.asarray(_load(image)))
    rng = v0.all_range if start == "all" else (v0.ranges[start] if v0.ranges else None)
    lo, hi = (_fmt(rng[0]), _fmt(rng[1])) if rng else ("min", "max")
    label = v0.all_label if start == "all" else v0.targets[start]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{static_text("vlinterp.css")}</style></head>
<body class="report">
<header><h1>{esc(title)}</h1><div class="facts">{rows}</div></header>
<section class="controls">
<label>Method / layer <select id="view">{options}</select></label>
<div id="tokens" role="group" aria-label="answer tokens">{''.join(btns)}</div>
</section>
<section class="imgs">
<figure><img id="image" alt="input image" src="{src}"><figcaption>input</figcaption></figure>
<figure><img id="overlay" alt="saliency overlay" src="{v0.all if start == 'all' else v0.overlays[start]}">
<figcaption id="caption">{esc(v0.name)}: {esc(label)}</figcaption>
<div class="scale"><span id="cb-lo">{lo}</span><img id="colorbar" alt="colour scale, low to high" src="{colorbar_uri(colormap)}"><span id="cb-hi">{hi}</span></div>
<div class="scale-note">colours: each map from its own minimum to its maximum</div></figure>
</section>
<section id="prompt-box" class="panel" hidden><h2>Prompt words the answer used</h2>
<p class="note">Each prompt token shaded by its score for the selected answer token (darker: used more; the
token's weight on itself is left out). Hover for the value.</p><div id="prompt-tokens"></div></section>
<section id="layers-box" class="panel" hidden><h2>Per layer</h2>
<p class="note">The same method's map from each layer alone, for the selected token.</p><div id="layers" class="strip"></div></section>
<details><summary>method details</summary><pre id="meta"></pre></details>
<script id="report-data" type="application/json">{blob}</script>
<script>{static_text("report.js")}</script>
</body></html>
"""


def _info_text(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def _load(image):
    from ..core.images import load_image

    return load_image(image)


def write_report(path, image, views: list[View], title: str = "vlinterp explain", info: dict | None = None,
                 colormap: str = "jet") -> str:
    """Write :func:`report_html` to ``path`` atomically (:func:`vlinterp.core.io.write_bytes`); returns ``path``."""
    from ..core.io import write_bytes

    return write_bytes(path, report_html(image, views, title, info, colormap).encode("utf-8"))


__all__ = ["View", "view_from_result", "view_from_maps", "report_html", "write_report", "colorbar_uri", "static_text"]
