"""One self-contained HTML explorer: the image, answer tokens as buttons, a method/layer selector.

Every overlay is precomputed and embedded as a PNG data URI, so ``report.html`` is a single
file that opens offline. A *view* is one selectable map source (a method, or a method at one
layer); each view holds one overlay per target (answer token, class, text, word) and
optionally an ``all`` overlay (the mean over targets). Clicking a token button swaps the
overlay ``<img id="overlay">``; the ``<select id="view">`` switches views and keeps the token.

>>> views = [view_from_result("relevancy", res, image)]
>>> write_report("out/report.html", image, views, title="what color is the circle?", info={"answer": "red"})
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

import numpy as np

from .overlay import data_uri, overlay, write_bytes_atomic


@dataclass
class View:
    """``name``: label in the selector; ``targets``: one label per button; ``overlays``: one
    data URI per target; ``all``: optional data URI of the mean map; ``meta``: shown as JSON."""

    name: str
    targets: list[str]
    overlays: list[str]
    all: str | None = None
    meta: dict = field(default_factory=dict)


def view_from_result(name: str, result, image, alpha: float = 0.5, colormap: str = "jet", with_all: bool = True) -> View:
    """Build a :class:`View` from a Result: one overlay per target (:func:`~vlinterp.metrics.result_map`)."""
    from ..metrics.faithfulness import result_map

    maps = [result_map(result, k) for k in range(len(result.scores))]
    return view_from_maps(name, list(result.targets) or [f"target {k}" for k in range(len(maps))], maps, image,
                          alpha, colormap, with_all, meta={k: v for k, v in result.meta.items() if _jsonable(v)})


def view_from_maps(name: str, targets: list[str], maps: list[np.ndarray], image, alpha: float = 0.5,
                   colormap: str = "jet", with_all: bool = True, meta: dict | None = None) -> View:
    """Build a :class:`View` from ``[H, W]`` maps (one per target)."""
    if len(targets) != len(maps):
        raise ValueError(f"{len(targets)} targets for {len(maps)} maps")
    ovs = [data_uri(overlay(image, m, alpha, colormap)) for m in maps]
    allv = data_uri(overlay(image, np.mean([_norm(m) for m in maps], 0), alpha, colormap)) if with_all and len(maps) > 1 else None
    return View(name, [str(t) for t in targets], ovs, allv, dict(meta or {}))


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


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:60em}
h1{font-size:1.3em;margin:0 0 .4em} .info{margin:.2em 0 1em;color:#444} .info b{color:#000}
.controls{display:flex;gap:1em;align-items:center;flex-wrap:wrap;margin-bottom:.8em}
#tokens button{font:inherit;margin:.15em;padding:.25em .7em;border:1px solid #888;border-radius:.4em;background:#f4f4f4;cursor:pointer}
#tokens button[aria-pressed=true]{background:#1f6feb;color:#fff;border-color:#1f6feb}
.imgs{display:flex;gap:1em;flex-wrap:wrap} figure{margin:0} figure img{width:320px;height:auto;image-rendering:auto;border:1px solid #ccc}
figcaption{font-size:.9em;color:#555;text-align:center} pre{background:#f6f6f6;padding:.6em;font-size:.8em;overflow:auto}
"""

_JS = """
(function(){
  var D = JSON.parse(document.getElementById('report-data').textContent);
  var sel = document.getElementById('view'), box = document.getElementById('tokens');
  var img = document.getElementById('overlay'), cap = document.getElementById('caption');
  var meta = document.getElementById('meta');
  var state = {view: 0, token: 0};
  function show(){
    var v = D.views[state.view];
    var n = v.targets.length;
    if (state.token !== 'all' && state.token >= n) state.token = 0;
    if (state.token === 'all' && !v.all) state.token = 0;
    img.src = state.token === 'all' ? v.all : v.overlays[state.token];
    cap.textContent = v.name + ': ' + (state.token === 'all' ? 'all tokens' : v.targets[state.token]);
    var bs = box.querySelectorAll('button');
    for (var i = 0; i < bs.length; i++) bs[i].setAttribute('aria-pressed', String(bs[i].dataset.k === String(state.token)));
    meta.textContent = JSON.stringify(v.meta, null, 1);
    document.body.dataset.view = String(state.view); document.body.dataset.token = String(state.token);
  }
  function buttons(){
    var v = D.views[state.view];
    box.innerHTML = '';
    function add(k, label){
      var b = document.createElement('button'); b.type = 'button'; b.className = 'tok';
      b.dataset.k = String(k); b.textContent = label; b.id = 'tok-' + k;
      b.addEventListener('click', function(){ state.token = (k === 'all') ? 'all' : k; show(); });
      box.appendChild(b);
    }
    for (var k = 0; k < v.targets.length; k++) add(k, v.targets[k]);
    if (v.all) add('all', 'all');
  }
  sel.addEventListener('change', function(){ state.view = sel.selectedIndex; buttons(); show(); });
  buttons(); show();
})();
"""


def report_html(image, views: list[View], title: str = "vlinterp explain", info: dict | None = None) -> str:
    """The report as one HTML string (image, overlays and data embedded)."""
    if not views:
        raise ValueError("a report needs at least one view")
    info = dict(info or {})
    esc = html.escape
    data = {"views": [{"name": v.name, "targets": v.targets, "overlays": v.overlays, "all": v.all, "meta": v.meta} for v in views],
            "info": {k: v for k, v in info.items() if _jsonable(v)}}
    blob = json.dumps(data).replace("</", "<\\/")
    v0 = views[0]
    options = "".join(f'<option value="{i}"{" selected" if i == 0 else ""}>{esc(v.name)}</option>' for i, v in enumerate(views))
    btns = "".join(f'<button type="button" class="tok" id="tok-{k}" data-k="{k}" aria-pressed="{str(k == 0).lower()}">{esc(t)}</button>'
                   for k, t in enumerate(v0.targets))
    rows = "".join(f"<div><b>{esc(str(k))}:</b> {esc(str(v))}</div>" for k, v in info.items() if not isinstance(v, (dict, list)))
    src = data_uri(np.asarray(_load(image)))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<div class="info">{rows}</div>
<div class="controls"><label>Method / layer <select id="view">{options}</select></label>
<div id="tokens" role="group" aria-label="answer tokens">{btns}</div></div>
<div class="imgs">
<figure><img id="image" alt="input image" src="{src}"><figcaption>input</figcaption></figure>
<figure><img id="overlay" alt="saliency overlay" src="{v0.overlays[0]}"><figcaption id="caption">{esc(v0.name)}: {esc(v0.targets[0])}</figcaption></figure>
</div>
<details><summary>method details</summary><pre id="meta"></pre></details>
<script id="report-data" type="application/json">{blob}</script>
<script>{_JS}</script>
</body></html>
"""


def _load(image):
    from ..core.images import load_image

    return load_image(image)


def write_report(path, image, views: list[View], title: str = "vlinterp explain", info: dict | None = None) -> str:
    """Write :func:`report_html` to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, report_html(image, views, title, info).encode("utf-8"))


__all__ = ["View", "view_from_result", "view_from_maps", "report_html", "write_report"]
