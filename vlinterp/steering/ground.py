"""Patch-probe grounding: linear probes on the image tokens' states say which objects the image
holds, and their log-odds decide the answer words the model is already about to choose between.

Why: on shapes-llava the decoding state that names an object no longer tells a hallucinated
colour-shape pair from a real one (the model's own yes/no answers accept most of the objects its
captions hallucinate; the shape probe of :class:`ProbeSteer` catches few of them), but the image
tokens still do, patch by patch: a one-vs-rest logistic probe per patch, max over patches, flags
~60% of the hallucinated caption mentions as absent while keeping 99% of the named real objects.

The probe: ``W`` ``[K + 1, D]``, ``b`` ``[K + 1]`` over the ``K`` (colour, shape) pairs of
:data:`pairs` plus background, fitted on patch labels from the shapes world's masks (a patch is
an object when that object covers at least ``cover`` of it). In a forward with images, at
``blocks.{layer}.resid`` every image's patch states ``[P, D]`` give ``d = max_p (W x_p + b)[:K]``
``[K]`` per row (max over the row's images), clipped to ``[-clip, clip]``. Three hooks, one forward:

- ``embed``: which tokens were just read (exact match against the colour and shape words' rows),
  the last colour-shape pair of the prompt;
- ``blocks.{layer}.resid``: ``d`` per row, once per prompt (decoding steps reuse it);
- ``logits``, at the last prompt position and at each decoding step:
  - a prompt naming a pair ``(c, s)``: ``yes += alpha * d[c, s] / 2``, ``no -= alpha * d[c, s] / 2``;
  - the previous token a colour ``c`` and a shape word on top: each shape ``s`` gets
    ``+ beta * d[c, s]`` (which shape; not whether one is named);
  - decoding, a colour word on top: each colour ``c`` gets ``+ beta * max_s d[c, s]`` (which colour).

  The caption rules act only when the probe's log-odds for the word on top are below ``gate`` (by
  default 0: it calls that word absent), so a word it calls present stays as the model chose it and
  the captions keep covering the objects they covered. The top word of a group stays the top word
  overall (the group is shifted by a constant), so the rule chooses within colours or shapes and never
  starts or ends a mention; colour and count questions (a colour or number answer at the prompt) are
  left alone.
"""
from __future__ import annotations

import weakref

import torch

from ..core.errors import LayerRangeError, PromptError, ShapeMismatchError, UnsupportedError
from .common import Steerer, last_index, load_tensors, save_tensors, select_alpha

ALPHAS = (0.5, 1.0, 1.5, 2.0, 3.0)
BETAS = (1.0, 2.0)
GATES = (0.0, 1.0, 2.0)
_POS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # layout -> [(row, positions [P])]


def _image_rows(layout) -> list[tuple[int, torch.Tensor]]:
    if layout not in _POS:
        _POS[layout] = [(g.batch_row, layout.image_positions(i)) for i, g in enumerate(layout.images)]
    return _POS[layout]


class Grounding(Steerer):
    """``W`` ``[K + 1, D]``, ``b`` ``[K + 1]``: the patch probe (last class: background); ``pairs``:
    the ``K`` (colour, shape) words; ``layer``: the LM residual site it reads; ``alpha``: strength on
    yes/no answers; ``beta``: on caption colour and shape words; ``clip``: log-odds bound; ``gate``: a
    caption word is re-chosen only when the probe's log-odds for the word the model is about to say
    are below it (0: the probe calls it absent; ``inf``: always)."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor, pairs, layer: int, alpha: float = 0.3, beta: float = 1.0,
                 clip: float = 8.0, meta: dict | None = None, gate: float = 0.0):
        W, b = W.detach().float().cpu(), b.detach().float().cpu().reshape(-1)
        pairs = [tuple(p) for p in pairs]
        if W.ndim != 2 or W.shape[0] != len(pairs) + 1 or b.shape[0] != W.shape[0]:
            raise ShapeMismatchError(f"patch probe W {tuple(W.shape)}, b {tuple(b.shape)} must be [K + 1, D], [K + 1] "
                                     f"for K = {len(pairs)} pairs")
        self.W, self.b, self.pairs = W, b, pairs
        self.layer, self.alpha, self.beta, self.clip = int(layer), float(alpha), float(beta), float(clip)
        self.gate = float(gate)
        self.colours = sorted({c for c, _ in pairs}, key=[c for c, _ in pairs].index)
        self.shapes = sorted({s for _, s in pairs}, key=[s for _, s in pairs].index)
        idx = {p: k for k, p in enumerate(pairs)}
        # [C, S] -> index into the K pairs (-1: no such pair)
        self.grid = torch.tensor([[idx.get((c, s), -1) for s in self.shapes] for c in self.colours])
        self.meta = meta or {}

    # ---------------------------------------------------------------- scores
    def scores(self, states: torch.Tensor) -> torch.Tensor:
        """Presence log-odds ``[K]`` from one image's patch states ``[P, D]`` (max over patches)."""
        if states.shape[-1] != self.W.shape[1]:
            raise ShapeMismatchError(f"patch probe width {self.W.shape[1]} does not match the state width {states.shape[-1]}")
        z = torch.addmm(self.b.to(states.device), states.float(), self.W.T.to(states.device))
        return z[:, :-1].max(0).values

    def _cs(self, d: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` -> ``[B, C, S]`` clipped log-odds (a missing pair: ``-clip``)."""
        g = self.grid.to(d.device)
        out = d.clamp(-self.clip, self.clip)[:, g.clamp_min(0)]
        return out.masked_fill(g < 0, -self.clip)

    def edits(self, adapter, alpha: float | None = None, beta: float | None = None) -> dict:
        a = self.alpha if alpha is None else float(alpha)
        be = self.beta if beta is None else float(beta)
        if adapter.kind != "vlm":
            raise UnsupportedError(f"grounding needs a LLaVA model, not {adapter.family}")
        L = adapter.num_layers("lm")
        if not 0 <= self.layer < L:
            raise LayerRangeError(f"grounding layer {self.layer} out of range (0..{L - 1})")
        col_ids = torch.tensor([adapter.token_id(c) for c in self.colours])
        shp_ids = torch.tensor([adapter.token_id(s) for s in self.shapes])
        words = torch.cat([col_ids, shp_ids])  # colours, then shapes
        yn = torch.tensor([adapter.token_id("yes"), adapter.token_id("no")])
        E = adapter.model.get_input_embeddings().weight
        R = E[words.to(E.device)].detach()  # [C + S, D]: the rows those words embed as
        code = torch.arange(1, len(words) + 1)  # word k -> k + 1 (0: no word)
        nC, nS = len(col_ids), len(shp_ids)
        st: dict = {}

        def word(x: torch.Tensor) -> torch.Tensor:
            """``[...]``: index into ``words`` of the token embedded as ``x`` ``[..., D]`` (-1: other)."""
            hit = (x[..., None, :] == R.to(x.device, x.dtype)).all(-1)  # [..., C + S]
            return (hit * code.to(x.device)).sum(-1) - 1  # at most one hit (distinct rows)

        def on_embed(t, layout):
            if t.shape[1] == 1:  # decoding: the token just read; matched only when a word is on top
                st["x"], st["prompt"], st["pair"] = t[:, 0], False, None
                return t
            k = word(t)  # [B, T]
            c, s = k.masked_fill(k >= nC, -1), torch.where(k >= nC, k - nC, -1)
            rows = torch.arange(t.shape[0], device=t.device)
            st["x"], st["prompt"], st["d"] = t[rows, last_index(t, layout).to(t.device)], True, None
            pair = torch.full((t.shape[0],), -1, dtype=torch.long, device=t.device)
            for r in range(t.shape[0]):  # the prompt's last "<colour> <shape>"
                j = torch.nonzero((c[r, :-1] >= 0) & (s[r, 1:] >= 0)).flatten()
                if len(j):
                    pair[r] = c[r, j[-1]] * nS + s[r, j[-1] + 1]
            st["pair"] = pair if bool((pair >= 0).any()) else None
            return t

        def on_resid(t, layout):
            if t.shape[1] > 1 and layout is not None and layout.num_images and layout.shape[1] == t.shape[1]:
                d = torch.full((t.shape[0], len(self.pairs)), -float("inf"), device=t.device)
                for r, pos in _image_rows(layout):
                    d[r] = torch.maximum(d[r], self.scores(t[r, pos.to(t.device)].detach()))
                d = self._cs(torch.where(torch.isinf(d), torch.full_like(d, -self.clip), d))  # [B, C, S]
                st["d"], st["dmax"] = d, d.max(-1).values  # [B, C, S], [B, C]
            return t

        def choose_within(z: torch.Tensor, ids: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor, top: torch.Tensor) -> None:
            """Add ``bias`` ``[n, len(ids)]`` to ``z[rows][:, ids]``, shifted so the group's top stays,
            on the rows whose top word (``top`` ``[n]``, one of ``ids``) the probe calls absent (bias < 0);
            a word it calls present is left as the model chose it."""
            if not len(rows):
                return
            own = bias.gather(1, (ids[None, :] == top[:, None]).to(torch.int64).argmax(-1, keepdim=True))[:, 0]
            keep = own < abs(be) * self.gate  # the top word's log-odds below the gate
            rows, bias = rows[keep], bias[keep]
            if not len(rows):
                return
            g = z[rows][:, ids]
            new = g + bias
            z[rows[:, None], ids[None, :]] = new - new.max(-1, keepdim=True).values + g.max(-1, keepdim=True).values

        def on_logits(t, layout):
            d = st.get("d")
            if d is None or "x" not in st:
                return t
            pair = st["pair"] if a else None
            B = t.shape[0]
            rows = torch.arange(B, device=t.device)
            idx = None if t.shape[1] == 1 else last_index(t, layout).to(t.device)
            zl = t[:, 0] if idx is None else t[rows, idx]  # [B, V]
            top = zl.argmax(-1)
            on_word = (top >= 0) if pair is not None else torch.isin(top, words.to(t.device))
            if pair is None and not (be and bool(on_word.any())):  # most decoding steps end here
                return t
            z = zl.float().clone()
            ci, si, yi = col_ids.to(t.device), shp_ids.to(t.device), yn.to(t.device)
            if pair is not None:
                r = torch.nonzero(pair >= 0).flatten()
                v = d[r].flatten(1)[torch.arange(len(r), device=t.device), pair[r]]
                z[r, yi[0]] += a * v / 2
                z[r, yi[1]] -= a * v / 2
            if be:
                k = word(st["x"])
                prev = k.masked_fill(k >= nC, -1)  # [B]: the colour just read (-1: none)
                r = torch.nonzero((prev >= 0) & torch.isin(top, si)).flatten()
                choose_within(z, si, be * d[r, prev[r]], r, top[r])
                if not st["prompt"]:
                    r = torch.nonzero((prev < 0) & torch.isin(top, ci)).flatten()
                    choose_within(z, ci, be * st["dmax"][r], r, top[r])
            t = t.clone()
            if idx is None:
                t[:, 0] = z.to(t.dtype)
            else:
                t[rows, idx] = z.to(t.dtype)
            return t

        return {"embed": on_embed, f"blocks.{self.layer}.resid": on_resid, "logits": on_logits}

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, adapter, n: int = 2048, split: str = "steer-probe", seed: int = 0, layer: int | None = None,
            cover: float = 0.15, alpha: float | str = "auto", beta: float | str = "auto", alphas=ALPHAS, betas=BETAS,
            n_select: int = 512, n_captions: int = 256, max_drop: float = 0.01, gate: float | str = "auto", gates=GATES,
            progress: bool = False) -> "Grounding":
        """Patch probe on ``n`` scenes of ``split``/``seed``; ``layer``: default the middle LM layer.
        ``alpha="auto"``: as :class:`ProbeSteer` (:func:`select_alpha` on ``split``/``seed + 1``);
        ``beta="auto"``: :func:`select_caption_rule` on ``n_captions`` captions of ``split``/``seed + 1``
        chooses ``beta`` and, with ``gate="auto"``, the gate (``gate`` a number: that gate, beta alone)."""
        from ..data.shapes import COLOURS, SHAPES
        from .probe import fit_logistic

        if adapter.kind != "vlm":
            raise UnsupportedError(f"grounding needs a LLaVA model, not {adapter.family}")
        L = adapter.num_layers("lm")
        layer = L // 2 if layer is None else int(layer)
        if not 0 <= layer < L:
            raise LayerRangeError(f"grounding layer {layer} out of range (0..{L - 1})")
        pairs = [(c, s) for c in COLOURS for s in SHAPES]
        X, y = patch_states(adapter, layer, n, split, seed, pairs, cover, progress)
        if len(torch.unique(y)) < 2:
            raise PromptError("the probe scenes need patches of objects and of background")
        W, b = fit_logistic(X, torch.nn.functional.one_hot(y, len(pairs) + 1).float(), steps=300)
        g = cls(W, b, pairs, layer, 0.0 if alpha == "auto" else float(alpha), 0.0 if beta == "auto" else float(beta),
                meta={"n": n, "split": split, "seed": seed, "layer": layer, "cover": cover, "patches": len(y)},
                gate=0.0 if gate == "auto" else float(gate))
        if alpha == "auto":
            select_alpha(g, adapter, alphas, n_select, split, seed + 1, max_drop)
        if beta == "auto":
            select_caption_rule(g, adapter, betas, gates if gate == "auto" else (g.gate,), n_captions, split, seed + 1)
        return g

    # ------------------------------------------------------------------- io
    def save(self, path: str) -> None:
        """``path`` (.safetensors: ``W``, ``b``) + ``path`` with ``.json`` (pairs, layer, strengths, meta)."""
        save_tensors(path, {"W": self.W, "b": self.b}, {"pairs": self.pairs, "layer": self.layer, "alpha": self.alpha,
                                                         "beta": self.beta, "clip": self.clip, "gate": self.gate,
                                                         "meta": self.meta})

    @classmethod
    def load(cls, path: str) -> "Grounding":
        t, d = load_tensors(path)
        return cls(t["W"], t["b"], d["pairs"], d["layer"], d["alpha"], d["beta"], d["clip"], d.get("meta"), d.get("gate", 0.0))


def select_caption_rule(g: Grounding, adapter, betas, gates, n: int, split: str, seed: int, min_mentions: float = 0.97,
                        max_cover_drop: float = 0.01) -> tuple[float, float]:
    """Set ``g.beta`` and ``g.gate`` to the pair of ``betas`` x ``gates`` with the lowest CHAIR_S (then
    the highest coverage) on free captions of ``n`` scenes of ``split``/``seed``, among those naming
    at least ``min_mentions`` x the unsteered captions' objects and covering the images' objects
    within ``max_cover_drop`` of them (beta 0 when none is better than off); the numbers go to
    ``g.meta``. A higher gate cleans more captions but re-chooses words the probe is unsure of, so
    the captions come to repeat the objects it is surest of: coverage is the price it is held to."""
    from ..commands.steer import captions
    from ..data.shapes import make_split
    from ..metrics.chair import chair

    scenes = make_split(split, n, seed)
    images = [s.pil() for s in scenes]
    base = chair(captions(None, adapter, images), scenes)
    grid, best = {}, ((base["chair_s"], -base["coverage"]), 0.0, g.gate)
    keep_gate = g.gate
    for gate in gates:
        g.gate = float(gate)
        for be in betas:
            with g.applied(adapter, 0.0, be):
                r = chair(captions(None, adapter, images), scenes)
            grid[f"gate {gate:g}, beta {be:g}"] = r
            ok = r["mentions"] >= min_mentions * base["mentions"] and r["coverage"] >= base["coverage"] - max_cover_drop
            if ok and (r["chair_s"], -r["coverage"]) < best[0]:
                best = ((r["chair_s"], -r["coverage"]), float(be), float(gate))
    g.beta, g.gate = best[1], best[2] if best[1] else keep_gate
    g.meta.update({"caption_grid": grid, "caption_base": base, "caption_split": [split, seed]})
    return g.beta, g.gate


def patch_states(adapter, layer: int, n: int, split: str, seed: int, pairs, cover: float = 0.15, progress: bool = False):
    """Image-token states ``[N, D]`` at ``blocks.{layer}.resid`` of ``n`` scenes and their labels
    ``[N]`` (index into ``pairs``; ``len(pairs)``: background, i.e. no object covers ``cover`` of it)."""
    import numpy as np
    from tqdm.auto import tqdm

    from ..data.shapes import make_split, patch_coverage

    scenes = make_split(split, n, seed)
    site = f"blocks.{layer}.resid"
    index = {tuple(p): k for k, p in enumerate(pairs)}
    X, y = [], []
    with torch.no_grad():
        for i in tqdm(range(0, len(scenes), 32), desc="grounding: patches", disable=not progress):
            ch = scenes[i:i + 32]
            bt = adapter.prepare(images=[s.pil() for s in ch], text=["describe the image."] * len(ch))
            out = adapter.run(bt, capture=[site])
            for k, s in enumerate(ch):
                X.append(out.cache[site][bt.layout.image_row(k), bt.layout.image_positions(k)].float().cpu())
                cov = patch_coverage(s, bt.layout.grid(k)).reshape(len(s.objects), -1)
                lab = np.where(cov.max(0) >= cover, [index[(s.objects[j].colour, s.objects[j].shape)] for j in cov.argmax(0)],
                               len(pairs))
                y.append(torch.as_tensor(lab, dtype=torch.long))
    return torch.cat(X), torch.cat(y)


__all__ = ["Grounding", "patch_states", "select_caption_rule"]
