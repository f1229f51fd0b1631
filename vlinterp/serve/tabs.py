"""The explorer's deeper tabs: causal tracing of the answer and SAE features at a clicked position.

Every call into :mod:`vlinterp.tracing` and :mod:`vlinterp.sae` the server makes is in this file
(``trace``, ``text_positions``, ``load_sae``, ``encode_rows``, ``write_dashboards``,
``ActivationStore.open``, ``items_from_spec``), so a change of their signatures is adapted here.

* :func:`trace_job`: the FCCT grid (attention, MLP and residual outputs restored at every layer and
  the seven position groups) for the answer's first token; the image patches are corrupted with
  noise; ``object-visual`` is the top tenth of the relevancy map's patches and ``text-object`` the
  prompt word the answer used most (or the words given). One component per step, so a cancel waits
  at most one component.
* :func:`sae_job`: the site's activation at a patch (clicked at ``(x, y)`` on the image) or a token
  (a position of the prompt + answer), encoded by the SAE; its strongest features, each with where
  it fires on this image and a link to its dashboard.
"""
from __future__ import annotations

import html
import os
import tempfile
import threading

import numpy as np

from ..core.errors import LoadError, UsageError

COMPONENTS = ("attn", "mlp", "resid")


# ------------------------------------------------------------------------- trace
def trace_job(bench, job, iid: str, q: str, words: str | None = None, samples: int = 3) -> dict:
    """RR ``[component][layer][group]`` of the answer's first token (see the module doc)."""
    from ..tracing import text_positions, trace

    job.step(0, len(COMPONENTS) + 1, "answering, object patches")
    a = bench.answer(iid, q)
    img = bench.image(iid)
    b = bench.m.prepare(images=[img], text=[q])
    rel = bench.result(iid, q, "relevancy")
    rows, cols = rel.layout.grid(rel.image_index)
    s = np.asarray(rel.scores[0], float)[: rows * cols]
    mask = np.zeros(rows * cols, bool)
    mask[np.argsort(-s)[: max(1, int(round(0.1 * len(s))))]] = True
    if words and words.strip():
        pos, object_words = text_positions(bench.m, b, words.strip()), words.strip()
    else:
        ts, tp = rel.arrays.get("text_scores"), rel.meta.get("text_positions")
        k = int(np.argmax(ts[0])) if ts is not None and len(tp or []) else None
        pos = [int(tp[k])] if k is not None else None
        object_words = rel.meta["text_tokens"][k] if k is not None else None
    target, rr, p_corr, res = int(a["ids"][0]), [], [], None
    for i, c in enumerate(COMPONENTS):
        job.step(i + 1, None, f"tracing {c} ({i + 1} of {len(COMPONENTS)})")
        res = trace(bench.m, b, target, components=[c], positions="groups", samples=int(samples), seed=0,
                    object_mask=mask.reshape(rows, cols), object_positions=pos)
        rr.append(np.asarray(res.arrays["rr"])[0])
        p_corr.append(float(np.mean(res.arrays["p_corrupt"])))
    return {"image": iid, "question": q, "target": a["tokens"][0], "components": list(COMPONENTS),
            "layers": list(res.meta["layers"]), "positions": list(res.meta["positions"]),
            "rr": np.round(np.stack(rr), 4).tolist(), "p_clean": round(float(res.arrays["p_clean"][0]), 5),
            "p_corrupt": round(float(np.mean(p_corr)), 5), "samples": int(res.meta["samples"]),
            "object_words": object_words, "object_patches": int(mask.sum()), "corruption": res.meta["corruption"]}


# --------------------------------------------------------------------------- SAE
class SAEEntry:
    """A loaded SAE: its directory, site, the SAE, and (lazily) what its dashboards need."""

    def __init__(self, path: str, sae, site: str):
        self.path, self.sae, self.site = path, sae, site
        self.meta = dict(getattr(sae, "vlinterp_meta", {}) or {})
        self._dash = None
        self._dir = None
        self._lock = threading.Lock()

    @property
    def store_path(self) -> str | None:
        """The activation store it was trained on, when its ``vlinterp.json`` names one that exists."""
        p = self.meta.get("store")
        if not p:
            return None
        for cand in (p, os.path.join(os.path.dirname(os.path.abspath(self.path)), os.path.basename(p))):
            if os.path.isfile(os.path.join(cand, "manifest.json")):
                return cand
        return None

    def describe(self, i: int) -> dict:
        return {"index": i, "path": self.path, "site": self.site, "d_sae": int(self.sae.cfg.d_sae),
                "dashboards": self.store_path is not None}


def load_saes(adapter, paths) -> list[SAEEntry]:
    """Load each SAE directory; :class:`LoadError` when one records no site or its site is not the model's."""
    from ..sae.attach import load_sae

    out = []
    for p in paths:
        sae = load_sae(p)
        site = (getattr(sae, "vlinterp_meta", {}) or {}).get("site")
        if not site:
            raise LoadError(f"--sae {p!r}: its vlinterp.json records no site (train it with `vlinterp sae train`)")
        if site not in adapter.site_table:
            raise LoadError(f"--sae {p!r}: site {site!r} is not a site of this model")
        out.append(SAEEntry(p, sae, site))
    return out


def _position(layout, where: dict) -> tuple[int, str]:
    """``(position, description)`` from ``{"x", "y"}`` (image pixels: the patch there) or ``{"pos"}``."""
    if "pos" in where:
        p = int(where["pos"])
        if not 0 <= p < layout.shape[1]:
            raise UsageError(f"token position {p} is outside the sequence (0..{layout.shape[1] - 1})")
        return p, f"token at position {p}"
    try:
        x, y = float(where["x"]), float(where["y"])
    except (KeyError, TypeError, ValueError):
        raise UsageError("give the patch as x and y in image pixels, or a token position") from None
    g = layout.images[0]
    best = None
    for ti, tile in enumerate(g.tiles):
        x0, y0, x1, y1 = tile.box
        if x0 <= x < x1 and y0 <= y < y1:
            rows, cols = tile.grid
            area = (x1 - x0) * (y1 - y0) / (rows * cols)
            if best is None or area < best[0]:
                r = min(rows - 1, int((y - y0) / (y1 - y0) * rows))
                c = min(cols - 1, int((x - x0) / (x1 - x0) * cols))
                best = (area, ti, r, c, cols)
    if best is None:
        raise UsageError(f"({x:.0f}, {y:.0f}) is outside the part of the image the model sees")
    _, ti, r, c, cols = best
    pos = layout.image_positions(0, tile=ti)
    return int(pos[r * cols + c]), f"patch row {r}, column {c}" + (f" of tile {ti}" if len(g.tiles) > 1 else "")


def sae_job(bench, job, iid: str, q: str, index: int, where: dict, top: int = 8) -> dict:
    """The strongest SAE features at the clicked patch or token (see the module doc)."""
    import torch

    from ..viz.overlay import data_uri, overlay

    if not bench.saes:
        raise UsageError("no SAE is loaded: start the server with --sae DIR")
    if not 0 <= int(index) < len(bench.saes):
        raise UsageError(f"SAE {index} does not exist (0..{len(bench.saes) - 1})")
    e = bench.saes[int(index)]
    job.step(0, 3, "answering")
    t = bench.targets(iid, q)
    stream = bench.m.site_table[e.site].stream
    if "pos" in where and stream != t.stream:
        raise UsageError(f"SAE {e.path!r} reads {e.site} (the {stream} stream, image patches only): click a patch of the image")
    layout = t.batch.layouts[stream]
    pos, desc = _position(layout, where)
    job.step(1, 3, f"activations at {e.site}")
    with torch.no_grad():
        acts = bench.m.run(t.batch, capture=[e.site]).cache[e.site][0].float().cpu()  # [T, D]
        if acts.shape[-1] != int(e.sae.cfg.d_in):
            raise UsageError(f"SAE {e.path!r} reads width {int(e.sae.cfg.d_in)}, the site has {acts.shape[-1]}")
        f = e.sae.encode(acts[pos][None].to(e.sae.W_dec.dtype))[0].float()
        patches = layout.image_positions(0)
        Fp = e.sae.encode(acts[patches].to(e.sae.W_dec.dtype)).float()   # [P, d_sae]
    job.step(2, 3, "feature maps")
    k = min(int(top), int((f > 0).sum()))
    feats = []
    if k:
        vals, idx = torch.topk(f, k)
        img = bench.image(iid)
        for v, j in zip(vals.tolist(), idx.tolist()):
            hm = layout.to_heatmap(Fp[:, j].numpy(), 0)
            feats.append({"feature": int(j), "activation": round(float(v), 4), "image_max": round(float(Fp[:, j].max()), 4),
                          "map": data_uri(overlay(img, hm, bench.alpha, bench.colormap)),
                          "dashboard": f"/sae/{int(index)}/feature/{int(j)}" if e.store_path else None})
    tokens = {s["pos"]: s["text"] for s in bench.sequence(t)}
    if pos in tokens:
        desc = f'token "{tokens[pos]}" (position {pos})'
    return {"image": iid, "question": q, "sae": int(index), "site": e.site, "where": desc, "position": pos,
            "active": int((f > 0).sum()), "features": feats,
            "note": None if e.store_path else "no dashboards: this SAE's vlinterp.json names no activation store that exists here"}


def dashboard(bench, index: int, feature: int) -> str:
    """The HTML dashboard of one feature (:func:`vlinterp.viz.sae_dashboard.write_dashboards`), built
    on first request from the SAE's activation store and kept for the server's lifetime."""
    from ..sae.analysis import encode_rows
    from ..eval.sae_data import items_from_spec
    from ..sae.store import ActivationStore
    from ..viz.sae_dashboard import write_dashboards

    if not 0 <= int(index) < len(bench.saes):
        raise UsageError(f"SAE {index} does not exist")
    e = bench.saes[int(index)]
    feature = int(feature)
    if not 0 <= feature < int(e.sae.cfg.d_sae):
        raise UsageError(f"feature {feature} out of range (0..{int(e.sae.cfg.d_sae) - 1})")
    if e.store_path is None:
        raise UsageError(f"SAE {e.path!r}: no activation store recorded, so no dashboards")
    with e._lock:
        if e._dash is None:
            store = ActivationStore.open(e.store_path)
            spec = store.meta.get("dataset")
            if not spec:
                raise LoadError(f"{e.store_path} does not record its dataset, so its images cannot be shown")
            e._dash = (store, items_from_spec(spec), encode_rows(e.sae, store.acts))
            e._dir = tempfile.mkdtemp(prefix="vlinterp-serve-sae-")
        path = os.path.join(e._dir, f"feature_{feature}.html")
        if not os.path.exists(path):
            store, items, F = e._dash
            write_dashboards(bench.m, e.sae, store, items, e._dir, [feature], F=F, progress=False)
    with open(path, encoding="utf-8") as fh:
        page = fh.read()
    back = f'<p><a href="/">back to the explorer</a> · SAE {html.escape(e.path)} @ {html.escape(e.site)}</p>'
    return page.replace('<p><a href="index.html">index</a></p>', back)


def cleanup(bench) -> None:
    """Remove the dashboards' temporary folders."""
    import shutil

    for e in bench.saes:
        if e._dir:
            shutil.rmtree(e._dir, ignore_errors=True)


__all__ = ["trace_job", "sae_job", "dashboard", "load_saes", "SAEEntry", "cleanup", "COMPONENTS"]
