"""Patch-probe grounding: linear probes on the image tokens' states say which objects the image
holds, and their log-odds decide the answer words the model is already about to choose between.

Why: on shapes-llava the decoding state that names an object no longer tells a hallucinated
colour-shape pair from a real one (the model's own yes/no answers accept most of the objects its
captions hallucinate; the shape probe of :class:`ProbeSteer` catches few of them), but the image
tokens still do, patch by patch: a one-vs-rest logistic probe per patch, max over patches, flags
~60% of the hallucinated caption mentions as absent while keeping 99% of the named real objects.

The probe: ``W`` ``[K + 1, D]``, ``b`` ``[K + 1]`` over the ``K`` (colour, shape) pairs (every
colour word of ``config.colours`` with every shape word of ``config.shapes``) plus background, fitted
on patch labels from the probe items' object masks (a patch is an object when that object covers at
least ``cover`` of it; objects carry ``colour`` and ``shape`` attributes). In a forward with images, at
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

Object names instead of colour-shape words (``objects=("dog", "traffic light", ...)``, e.g. COCO's
categories): the probe's ``K`` classes are those names (labels from each object's ``name``), and only
the yes/no rule acts: the prompt's last mention of a name (its token sequence, read from the
embedded rows as above) gets ``yes += alpha * d[k] / 2``, ``no -= alpha * d[k] / 2``. The caption rule
chooses among colour and shape words; names have no such groups, so ``beta`` is 0 there.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, LayerRangeError, ShapeMismatchError
from .base import SteeringMethod, progress_bar
from .common import last_index

ALPHAS = (0.5, 1.0, 1.5, 2.0, 3.0)
BETAS = (1.0, 2.0)
GATES = (0.0, 1.0, 2.0)
_POS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # layout -> [(row, positions [P])]


def _image_rows(layout) -> list[tuple[int, torch.Tensor]]:
    if layout not in _POS:
        _POS[layout] = [(g.batch_row, layout.image_positions(i)) for i, g in enumerate(layout.images)]
    return _POS[layout]


class Grounding(SteeringMethod):
    """``W`` ``[K + 1, D]``, ``b`` ``[K + 1]``: the patch probe (last class: background) over
    :attr:`pairs`, the ``K`` (colour, shape) words of the config. Strengths: ``alpha`` on yes/no
    answers, ``beta`` on caption colour and shape words, ``gate``: a caption word is re-chosen only
    when the probe's log-odds for the word the model is about to say are below it (0: the probe calls
    it absent; ``inf``: always)."""

    name = "ground"
    strengths = ("alpha", "beta", "gate")
    needs = ("scenes",)

    @dataclass
    class Config:
        """``layer``: the LM residual site read (default the middle layer); ``cover``: a patch is an
        object's when it covers that share of it; ``clip``: log-odds bound; ``alpha`` (``"auto"``:
        :func:`.select.least_false_yes` over ``alphas`` on the calibration questions, other groups
        within ``max_drop``); ``beta`` and ``gate`` (``"auto"``: :func:`select_caption_rule` over
        ``betas`` x ``gates`` on the calibration captions; a numeric gate with ``beta="auto"`` fixes the
        gate, a numeric beta with ``gate="auto"`` takes gate 0); ``colours`` / ``shapes``: the words;
        ``prompt``: the text beside each probe image."""

        layer: int | None = None
        cover: float = 0.15
        alpha: float | Literal["auto"] = "auto"
        beta: float | Literal["auto"] = "auto"
        gate: float | Literal["auto"] = "auto"
        clip: float = 8.0
        alphas: tuple[float, ...] = ALPHAS
        betas: tuple[float, ...] = BETAS
        gates: tuple[float, ...] = GATES
        max_drop: float = 0.01
        min_mentions: float = 0.97
        max_cover_drop: float = 0.01
        colours: tuple[str, ...] = ()
        shapes: tuple[str, ...] = ()
        objects: tuple[str, ...] = ()
        prompt: str = "describe the image."

        def validate(self):
            if not 0 < self.cover <= 1:
                raise ConfigError(f"ground: cover must be in (0, 1], got {self.cover}")
            if self.objects:
                if self.colours or self.shapes:
                    raise ConfigError("ground: give object names (objects=) or colour and shape words (colours=, shapes=), not both")
                if self.beta not in ("auto", 0, 0.0):
                    raise ConfigError(f"ground over object names steers yes/no answers only: beta must be 0, got {self.beta}")
                self.beta = 0.0  # no caption rule over names: its strength and gate are unused
                self.gate = 0.0 if self.gate == "auto" else self.gate

    def __init__(self, W: torch.Tensor, b: torch.Tensor, config=None, meta: dict | None = None, **opts):
        super().__init__(config, meta, **opts)
        cfg = self.config
        if not cfg.objects and (not cfg.colours or not cfg.shapes):
            raise ConfigError("grounding needs the world's colour and shape words (config colours=, shapes=) or object names (objects=)")
        if cfg.layer is None:
            raise ConfigError("grounding needs its layer (config.layer)")
        W, b = W.detach().float().cpu(), b.detach().float().cpu().reshape(-1)
        pairs = self.pairs
        if W.ndim != 2 or W.shape[0] != len(pairs) + 1 or b.shape[0] != W.shape[0]:
            raise ShapeMismatchError(f"patch probe W {tuple(W.shape)}, b {tuple(b.shape)} must be [K + 1, D], [K + 1] "
                                     f"for K = {len(pairs)} pairs")
        self.W, self.b = W, b
        self.colours, self.shapes = list(cfg.colours), list(cfg.shapes)
        # [C, S] -> index into the K pairs (object names: none)
        self.grid = None if cfg.objects else torch.arange(len(pairs)).reshape(len(self.colours), len(self.shapes))

    @property
    def pairs(self) -> list[tuple[str, ...]]:
        """The ``K`` classes: (colour, shape) pairs, colour-major, or ``(name,)`` per object name."""
        if self.config.objects:
            return [(o,) for o in self.config.objects]
        return [(c, s) for c in self.config.colours for s in self.config.shapes]

    layer = property(lambda self: self.config.layer)
    alpha = property(lambda self: self.config.alpha)
    beta = property(lambda self: self.config.beta)
    gate = property(lambda self: self.config.gate)
    clip = property(lambda self: self.config.clip)

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

    def _image_scores(self, t: torch.Tensor, layout) -> torch.Tensor:
        """``[B, K]``: max over each row's images of :meth:`scores` (rows without images: ``-inf``)."""
        d = torch.full((t.shape[0], len(self.pairs)), -float("inf"), device=t.device)
        for r, pos in _image_rows(layout):
            d[r] = torch.maximum(d[r], self.scores(t[r, pos.to(t.device)].detach()))
        return d

    def edits(self, adapter) -> dict:
        self.check(adapter)
        a, be = float(self.alpha), float(self.beta)
        L = adapter.num_layers("lm")
        if not 0 <= self.layer < L:
            raise LayerRangeError(f"grounding layer {self.layer} out of range (0..{L - 1})")
        if self.config.objects:
            from .ground_objects import object_edits

            return object_edits(self, adapter)
        col_ids = torch.tensor([adapter.token_id(c) for c in self.colours])
        shp_ids = torch.tensor([adapter.token_id(s) for s in self.shapes])
        words = torch.cat([col_ids, shp_ids])  # colours, then shapes
        yn = torch.tensor([adapter.token_id("yes"), adapter.token_id("no")])
        E = adapter.model.get_input_embeddings()
        with torch.no_grad():  # [C + S, D]: what the embedding module itself gives those words (Gemma 3 scales its rows)
            R = E(words.to(E.weight.device)[None])[0].detach()
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
                d = self._image_scores(t, layout)
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
    def fit(cls, adapter, items, config=None, calib=None, progress: bool = False) -> "Grounding":
        """Patch probe on the images of ``items`` (objects with masks and ``colour`` / ``shape``
        attributes; on the organism 2,048 probe-split scenes). Strengths given as ``"auto"`` are
        chosen on ``calib``: ``alpha`` on its questions (yes/no with ``neg_type``, colour, count),
        ``beta`` / ``gate`` on its caption items (``kind == "caption"``); see :class:`Config`."""
        from .probe import fit_logistic
        from .select import select_least_false_yes

        cfg = cls.make_config(config)
        cls.check_kind(adapter)
        if not cfg.objects and (not cfg.colours or not cfg.shapes):
            raise ConfigError("grounding needs the world's colour and shape words (config colours=, shapes=) or object names (objects=)")
        L = adapter.num_layers("lm")
        layer = L // 2 if cfg.layer is None else int(cfg.layer)
        if not 0 <= layer < L:
            raise LayerRangeError(f"grounding layer {layer} out of range (0..{L - 1})")
        if cfg.objects:  # names: no caption rule (validate set beta 0)
            pairs, key = [(o,) for o in cfg.objects], lambda o: (o.name,)
        else:
            pairs, key = [(c, s) for c in cfg.colours for s in cfg.shapes], None
        X, y = patch_states(adapter, layer, items, pairs, cfg.cover, cfg.prompt, progress, key=key)
        if len(torch.unique(y)) < 2:
            raise DataError("the probe scenes need patches of objects and of background")
        W, b = fit_logistic(X, torch.nn.functional.one_hot(y, len(pairs) + 1).float(), steps=300)
        auto = {k: getattr(cfg, k) == "auto" for k in ("alpha", "beta", "gate")}
        g = cls(W, b, cls.make_config(cfg, layer=layer, **{k: 0.0 for k, v in auto.items() if v}),
                meta={"n": len(items), "layer": layer, "cover": cfg.cover, "patches": len(y)})
        if (auto["alpha"] or auto["beta"]) and not calib:
            raise ConfigError("grounding with 'auto' strengths needs calibration items (calib=...), or give alpha, beta and gate")
        if auto["alpha"]:
            questions = [it for it in calib if it.meta.get("candidates")]
            select_least_false_yes(g, adapter, "alpha", cfg.alphas, questions, cfg.max_drop, progress)
        if auto["beta"]:
            caps = [it for it in calib if it.kind == "caption"]
            if not caps:
                raise ConfigError("grounding with beta='auto' needs caption items in calib (kind 'caption')")
            select_caption_rule(g, adapter, cfg.betas, cfg.gates if auto["gate"] else (g.gate,), caps, cfg.min_mentions,
                                cfg.max_cover_drop, progress)
        return g

    # ------------------------------------------------------------------- io
    def tensors(self) -> dict:
        return {"W": self.W, "b": self.b}

    @classmethod
    def from_saved(cls, tensors, state, config, meta) -> "Grounding":
        return cls(tensors["W"], tensors["b"], config, meta)


def caption_rule(base: dict, grid: dict, min_mentions: float, max_cover_drop: float) -> tuple[float, float] | None:
    """The ``(beta, gate)`` of ``grid`` (``{(beta, gate): CHAIR numbers}``, in order) with the lowest
    CHAIR_S, then the highest coverage, among those naming at least ``min_mentions`` x the base's
    objects and covering within ``max_cover_drop`` of it, if it beats the base; else ``None``."""
    best = ((base["chair_s"], -base["coverage"]), None)
    for key, r in grid.items():
        ok = r["mentions"] >= min_mentions * base["mentions"] and r["coverage"] >= base["coverage"] - max_cover_drop
        if ok and (r["chair_s"], -r["coverage"]) < best[0]:
            best = ((r["chair_s"], -r["coverage"]), key)
    return best[1]


def select_caption_rule(g: Grounding, adapter, betas, gates, items, min_mentions: float = 0.97,
                        max_cover_drop: float = 0.01, progress: bool = False) -> tuple[float, float]:
    """Set ``g``'s ``beta`` and ``gate`` to the pair of ``betas`` x ``gates`` that :func:`caption_rule`
    picks on free captions of the caption ``items`` (CHAIR against their objects' colour-shape pairs;
    beta 0, gate unchanged, when none is better than off); the numbers go to ``g.meta``. A higher gate
    cleans more captions but re-chooses words the probe is unsure of, so the captions come to repeat
    the objects it is surest of: coverage is the price it is held to."""
    from ..metrics.answers import answer
    from ..metrics.chair import chair

    truths = [{(o.attrs.get("colour"), o.attrs.get("shape")) for o in it.objects} for it in items]

    def score(method, bar):
        with method.applied(adapter) if method is not None else contextlib.nullcontext():
            caps = answer(adapter, items, progress=bar)
        return chair(caps, truths, nouns=g.shapes, attributes=g.colours)

    bar = progress_bar(progress, (len(betas) * len(gates) + 1) * len(items), "fitting ground: choosing beta and gate")
    try:
        base = score(None, bar)
        grid, keys = {}, {}
        for gate in gates:
            for be in betas:
                name = f"gate {gate:g}, beta {be:g}"
                grid[name] = score(g.replace(alpha=0.0, beta=float(be), gate=float(gate)), bar)
                keys[name] = (float(be), float(gate))
    finally:
        bar.close()
    pick = caption_rule(base, grid, min_mentions, max_cover_drop)
    beta, gate = keys[pick] if pick is not None else (0.0, g.gate)
    g.config = g.make_config(g.config, beta=beta, gate=gate)
    g.meta.update({"caption_grid": grid, "caption_base": base, "caption_calib": len(items)})
    return beta, gate


def patch_states(adapter, layer: int, items, pairs, cover: float = 0.15, prompt: str = "describe the image.",
                 progress: bool = False, key=None):
    """Image-token states ``[N, D]`` at ``blocks.{layer}.resid`` of the items' images (with ``prompt``,
    32 per forward) and their labels ``[N]`` (index into ``pairs``; ``len(pairs)``: background, i.e. no
    object covers ``cover`` of the patch). Each patch is judged in its own tile's grid and crop box
    (:func:`~vlinterp.metrics.coverage.position_coverage`), so tiled and packed layouts label right.
    ``key(object) -> class`` (a key of ``pairs``): default its ``(colour, shape)`` attributes."""
    from ..metrics.coverage import position_coverage

    named = key is not None
    key = key or (lambda o: (o.attrs["colour"], o.attrs["shape"]))

    index = {tuple(p): k for k, p in enumerate(pairs)}
    site = f"blocks.{layer}.resid"
    X, y = [], []
    bar = progress_bar(progress, len(items), "fitting ground: probe states")
    with torch.no_grad():
        for i in range(0, len(items), 32):
            ch = items[i:i + 32]
            bt = adapter.prepare(images=[it.image for it in ch], text=[prompt] * len(ch))
            out = adapter.run(bt, capture=[site])
            for k, it in enumerate(ch):
                X.append(out.cache[site][bt.layout.image_row(k), bt.layout.image_positions(k)].float().cpu())
                try:
                    lab_of = [index[key(o)] for o in it.objects]
                    masks = np.stack([o.box_mask(it.size) for o in it.objects]) if it.objects else \
                        np.zeros((0, *it.size), bool)
                except KeyError as e:
                    what = "objects named among its object names" if named else "objects with colour and shape attributes among its words"
                    raise DataError(f"item {it.id or i + k}: grounding needs {what} ({e})") from None
                cov = position_coverage(bt.layout, masks, k)  # [n_obj, P], each position in its own tile
                if not len(lab_of):
                    lab = np.full(cov.shape[1], len(pairs))
                else:
                    lab = np.where(cov.max(0) >= cover, [lab_of[j] for j in cov.argmax(0)], len(pairs))
                y.append(torch.as_tensor(lab, dtype=torch.long))
            bar.update(len(ch))
    bar.close()
    if not X:
        raise DataError("grounding needs probe images; the probe items have none")
    return torch.cat(X), torch.cat(y)


__all__ = ["Grounding", "patch_states", "select_caption_rule", "caption_rule", "ALPHAS", "BETAS", "GATES"]
