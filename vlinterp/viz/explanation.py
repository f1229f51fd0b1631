"""An :class:`~vlinterp.saliency.explanation.Explanation` written as a directory:

* ``overlay.png``: the answer's map over the image, as a figure (:func:`~vlinterp.viz.figure.figure`:
  a title, the answer, the overlay and a colour bar);
* ``tokens/NN_<label>.png``: the same figure for each row (answer token, class, text, word);
* ``result.json``: :meth:`Explanation.to_json` plus ``files``;
* ``report.html``: one self-contained file (:mod:`vlinterp.viz.report`): rows as buttons, opening
  on the answer's map, a colour scale, the prompt words the answer used, per-layer maps of
  attention-based methods and a method/layer selector over the views.

The directory is built aside and published by :func:`vlinterp.core.io.output_dir`: it must be new,
empty or an earlier vlinterp output; files the user put there survive; on error it is as it was.

>>> write_explanation(ex, "out/", alpha=0.5, colormap="jet", heatmap="out/heat.npy")
"""
from __future__ import annotations

import io
import json
import os
import re

import numpy as np

from ..core.errors import ConfigError
from .figure import figure
from .overlay import COLORMAPS, png_bytes
from .report import report_html, view_from_result


def _safe(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_")
    return s[:40] or "tok"


def _put(root: str, rel: str, data: bytes) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def check_style(alpha: float, colormap: str) -> None:
    """:class:`ConfigError` unless ``alpha`` is in [0, 1] and ``colormap`` is known."""
    if colormap not in COLORMAPS:
        raise ConfigError(f"unknown colormap {colormap!r}; known: {', '.join(COLORMAPS)}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")


def write_explanation(ex, out_dir, alpha: float = 0.5, colormap: str = "jet", heatmap=None, progress: bool | None = False,
                      title: str | None = None) -> dict:
    """Write ``ex`` into ``out_dir`` (see the module doc); ``heatmap``: also save the answer's
    ``[H, W]`` float32 map aligned to the input image as ``.npy`` there (inside ``out_dir``: part
    of the output; elsewhere: a file vlinterp may write). Returns the ``result.json`` dict."""
    from tqdm.auto import tqdm

    from ..core.io import check_output_file, output_dir, write_bytes

    check_style(alpha, colormap)
    root = os.path.abspath(os.fspath(out_dir))
    inside = None
    if heatmap is not None:
        dest = os.path.abspath(os.fspath(heatmap))
        if dest.startswith(root + os.sep):
            inside = os.path.relpath(dest, root)
        else:
            check_output_file(dest, "heatmap")
    bar = dict(disable=None if progress is None else not progress, leave=False)
    res, image = ex.result, ex.image
    prompt = ex.info.get("prompt")
    heading = f"{ex.method}: {prompt}" if prompt else f"{ex.method}: {ex.model}"
    probs = ex.probs
    with output_dir(out_dir) as tmp:
        n = len(ex.answer_rows)
        what = f'answer "{ex.answer}"' + (f" (mean of {n} token maps)" if n > 1 else "")
        _put(tmp, "overlay.png", png_bytes(figure(image, ex.answer_map, heading, what, alpha, colormap)))
        token_files = []
        for k, lab in enumerate(tqdm(res.targets, desc="overlays", unit="map", **bar)):
            name = f"tokens/{k:02d}_{_safe(lab)}.png"
            p = f", p = {probs[k]:.3f}" if probs and k < len(probs) else ""
            _put(tmp, name, png_bytes(figure(image, ex.token_map(k), heading, f'{_kind_word(ex)} {k}: "{lab}"{p}', alpha, colormap)))
            token_files.append(name)
        views = [view_from_result(label, r, image, alpha, colormap, answer_rows=ex.answer_rows)
                 for label, r in tqdm(ex.views, desc="report", unit="view", **bar)]
        out = {**ex.to_json(), "files": {"overlay": "overlay.png", "tokens": token_files, "report": "report.html", "result": "result.json"}}
        info = {"model": ex.model, "method": ex.method}
        if prompt:
            info["prompt"] = prompt
        info["answer"] = ex.answer
        if probs and ex.kind == "vlm":
            info["token probabilities"] = ", ".join(f"{t} {p:.3f}" for t, p in zip(ex.tokens, probs))
        page = report_html(image, views, title=title or f"vlinterp explain: {prompt or ex.answer}", info=info, colormap=colormap)
        _put(tmp, "report.html", page.encode("utf-8"))
        _put(tmp, "result.json", json.dumps(out, indent=1).encode())
        if heatmap is not None:
            buf = io.BytesIO()
            np.save(buf, ex.aligned_answer_map())
            if inside is not None:
                _put(tmp, inside, buf.getvalue())
    if heatmap is not None and inside is None:
        write_bytes(dest, buf.getvalue(), "heatmap")
    return out


def _kind_word(ex) -> str:
    return {"vlm": "token", "vit": "class", "clip": "text", "diffusion": "word"}.get(ex.kind, "target")


__all__ = ["write_explanation", "check_style"]
