"""Probe steering (ITI family, input-dependent): linear probes read what the residual stream knows
about object presence, and their log-odds are written back onto the readout of the answer words.

Why: on shapes-llava a logistic probe on the last layer's state at the question's last token tells
true "yes" from hallucinated "yes" (absent prior partner) with AUROC ~0.99, while the model's own
yes/no margin does it at ~0.89 (README). Adding a constant vector (mean-difference, SAVE) moves
every answer alike and trades one true yes per false yes; scaling the added vector by the probe's
log-odds moves hallucinations toward "no" and true objects toward "yes".

A head holds ``W`` ``[K, D]``, ``b`` ``[K]`` (probe), ``R`` ``[K, D]`` (unit write directions) and
optionally a gate ``G`` ``[1, D]``, ``g`` ``[1]`` (a probe for "this state is where the head applies").
At site ``blocks.{layer}.resid``, at the last prompt position and at each decoding step, the state
``h`` ``[B, D]`` becomes ``h + alpha * |h| * sum_heads sigmoid(G h + g) * (W h + b) @ R`` (gate 1 when absent).

Heads fitted by :meth:`ProbeSteer.fit` on probe items (on the organism: the shapes world's probe split,
never the evaluation scenes):

- ``question``: ``K = 1``; label "the asked object is present" on POPE questions (adversarial and random);
  ``R`` = the effective readout of ``yes`` minus ``no``. With a caption head, its gate is a probe for
  "the last token of a yes/no question" against every caption state (without it, its log-odds on caption
  states, where it means nothing, shortened the captions: 2.57 -> 1.75 objects named).
- ``caption``: ``K = 4`` (one per shape); on the model's own greedy captions, at each state that is
  about to name a shape after a colour word, label "an object of that colour and shape ``s`` is in
  the image"; ``R_s`` = the shapes' effective readouts, centred. Its gate is a probe for "the next
  token is a shape named after a colour word" on every caption state, so it acts only there.

Each ``R`` loses its component along the within-group readout differences of the other answer groups
(colour words, count words, the other head's words; :func:`readout_basis`), so at the last layer
the question head cannot change which colour, count or shape word wins, and the caption head cannot
change yes vs no, colour or count answers.
"""
from __future__ import annotations

import torch

from dataclasses import dataclass
from typing import Literal

from ..core.errors import ConfigError, DataError, LayerRangeError, NaNError, ShapeMismatchError
from .base import SteeringMethod, progress_bar
from .common import last_index
from .meandiff import effective_readouts, readout_basis

ALPHAS = (0.05, 0.1, 0.15, 0.2, 0.3)


def fit_logistic(X: torch.Tensor, Y: torch.Tensor, l2: float = 1e-4, steps: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression, one output per column of ``Y`` ``[N, K]`` (0/1) on
    ``X`` ``[N, D]``; returns ``W`` ``[K, D]``, ``b`` ``[K]`` in the units of ``X``."""
    if not torch.isfinite(X).all():
        raise NaNError(f"probe states hold {int((~torch.isfinite(X)).any(1).sum())} rows with NaN or inf")
    X, Y = X.detach().cpu().double(), Y.detach().cpu().double()  # a small convex fit: on the CPU, the same on any device
    mu, sd = X.mean(0), X.std(0).clamp_min(1e-6)
    Z = (X - mu) / sd
    W = torch.zeros(Y.shape[1], X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(Y.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Z @ W.T + b, Y) + l2 * (W ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    W, b = W.detach() / sd, b.detach() - (W.detach() / sd) @ mu
    return W.float(), b.float()


def _protect(R: torch.Tensor, adapter, groups) -> torch.Tensor:
    groups = [g for g in groups if len(g) >= 2]
    if groups:
        Q = readout_basis(adapter, groups)
        R = R - (R @ Q) @ Q.T
    return torch.nn.functional.normalize(R, dim=-1)


class ProbeSteer(SteeringMethod):
    """``heads``: ``{name: (W [K, D], b [K], R [K, D])}`` or ``(W, b, R, G [1, D], g [1])`` with a gate;
    ``config.layer``: the residual site; ``config.alpha``: strength."""

    name = "probe"
    strengths = ("alpha",)
    needs = ("presence",)

    @dataclass
    class Config:
        """``layer``: default the last (where the readout protection is exact); ``alpha``: strength
        (``"auto"``: :func:`.select.least_false_yes` over ``alphas`` on the calibration items, each other
        group's accuracy within ``max_drop``); ``colours`` / ``shapes`` / ``numbers``: the world's answer
        words (the caption head writes onto the shape words after a colour word; every write direction
        loses the other groups' readout differences); ``caption_tokens``: greedy caption length."""

        layer: int | None = None
        alpha: float | Literal["auto"] = "auto"
        alphas: tuple[float, ...] = ALPHAS
        max_drop: float = 0.01
        colours: tuple[str, ...] = ()
        shapes: tuple[str, ...] = ()
        numbers: tuple[str, ...] = ()
        caption_tokens: int = 24

    def __init__(self, heads: dict, config=None, meta: dict | None = None, **opts):
        super().__init__(config, meta, **opts)
        if not heads:
            raise ConfigError("ProbeSteer needs at least one head")
        if self.config.layer is None:
            raise ConfigError("ProbeSteer needs its layer (config.layer)")
        self.heads = {}
        for name, head in heads.items():
            if len(head) not in (3, 5):
                raise ConfigError(f"head {name!r}: (W, b, R) or (W, b, R, G, g), got {len(head)} tensors")
            head = tuple(h.detach().float().cpu() for h in head)  # kept on the CPU; edits() places copies
            W, b, R = head[0], head[1].reshape(-1), head[2]
            if W.ndim != 2 or W.shape != R.shape or b.shape[0] != W.shape[0]:
                raise ShapeMismatchError(f"head {name!r}: W {tuple(W.shape)}, b {tuple(b.shape)}, R {tuple(R.shape)} "
                                         "must be [K, D], [K], [K, D]")
            if len(head) == 5:
                G, g = head[3].float().reshape(1, -1), head[4].float().reshape(1)
                if G.shape[1] != W.shape[1]:
                    raise ShapeMismatchError(f"head {name!r}: gate width {G.shape[1]} != probe width {W.shape[1]}")
            else:  # no gate: a zero probe with a huge bias, sigmoid 1
                G, g = torch.zeros(1, W.shape[1]), torch.full((1,), 60.0)
            self.heads[name] = (W, b, R, G, g)
        dims = {h[0].shape[1] for h in self.heads.values()}
        if len(dims) != 1:
            raise ShapeMismatchError(f"ProbeSteer heads disagree on the state width: {sorted(dims)}")
        self.dim = dims.pop()
        # two matmuls per step: probes and gates stacked [sum K + H, D]; write directions [sum K, D]
        hs = list(self.heads.values())
        self._k = [h[0].shape[0] for h in hs]
        self._P = torch.cat([h[0] for h in hs] + [h[3] for h in hs])
        self._p = torch.cat([h[1] for h in hs] + [h[4] for h in hs])
        self._R = torch.cat([h[2] for h in hs])
        self._rep = torch.repeat_interleave(torch.arange(len(hs)), torch.tensor(self._k))  # gate index per probe row

    @property
    def layer(self) -> int:
        return self.config.layer

    @property
    def alpha(self):
        return self.config.alpha

    def edits(self, adapter) -> dict:
        self.check(adapter)
        a = float(self.config.alpha)
        L = adapter.num_layers("lm")
        if not 0 <= self.layer < L:
            raise LayerRangeError(f"probe layer {self.layer} out of range (0..{L - 1})")
        K = sum(self._k)
        placed: dict = {}  # device -> (Pt, p, R, rep), moved once, not at every decoding step

        def on(device):
            if device not in placed:
                placed[device] = tuple(v.to(device) for v in (self._P.T.contiguous(), self._p, self._R, self._rep))
            return placed[device]

        def delta(x):  # [B, D] float -> the added [B, D]
            Pt, p, R, rep = on(x.device)
            z = torch.addmm(p, x, Pt)
            z = z[:, :K] * torch.sigmoid(z[:, K:])[:, rep]
            return a * torch.linalg.vector_norm(x, dim=-1, keepdim=True) * (z @ R)

        def fn(t, layout):
            if t.shape[-1] != self.dim:
                raise ShapeMismatchError(f"probe width {self.dim} does not match the state width {t.shape[-1]}")
            if t.shape[1] == 1:  # decoding step
                return t + delta(t[:, 0].float())[:, None].to(t.dtype)
            rows = torch.arange(t.shape[0], device=t.device)
            idx = last_index(t, layout).to(t.device)
            x = t[rows, idx].float()
            t = t.clone()
            t[rows, idx] = (x + delta(x)).to(t.dtype)
            return t

        return {f"blocks.{self.layer}.resid": fn}

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, adapter, items, config=None, calib=None, progress: bool = False) -> "ProbeSteer":
        """Question head on the yes/no questions of ``items`` (with answers; on the organism ``n``
        adversarial + ``n // 2`` random POPE questions); caption head on greedy captions of the
        caption items (``kind == "caption"``, objects with ``colour`` / ``shape`` attributes), when
        there are any. ``alpha="auto"``: chosen on ``calib`` (see :class:`Config`; at 256 questions per
        task one question is 0.4 points, too coarse for a 1-point tolerance: the organism uses 512)."""
        from .select import select_least_false_yes

        cfg = cls.make_config(config)
        cls.check_kind(adapter)
        L = adapter.num_layers("lm")
        layer = L - 1 if cfg.layer is None else int(cfg.layer)
        if not 0 <= layer < L:
            raise LayerRangeError(f"probe layer {layer} out of range (0..{L - 1})")
        questions = [it for it in items if it.kind != "caption" and it.answer in ("yes", "no") and it.prompt]
        caps = [it for it in items if it.kind == "caption"]
        X, y = question_states(adapter, layer, questions, progress)
        if y.all() or not y.any():
            raise DataError("the probe questions need both present and absent objects")
        W, b = fit_logistic(X, y[:, None].float())
        colours, numbers, shapes = cfg.colours, cfg.numbers, cfg.shapes
        R = _protect(effective_readouts(adapter, ["yes"]) - effective_readouts(adapter, ["no"]), adapter, (colours, numbers, shapes))
        heads = {"question": (W, b, R)}
        meta = {"n": len(questions), "captions": len(caps)}
        if caps:
            if len(shapes) < 2 or not colours:
                raise ConfigError("probe: a caption head needs the world's colour and shape words (config colours=, shapes=)")
            Xc, Yc, Xg, yg = caption_states(adapter, layer, caps, colours, shapes, cfg.caption_tokens, progress)
            if len(Xc) < 8 or Yc.all() or not Yc.any():
                raise DataError(f"the greedy captions named too few colour-shape objects ({len(Xc)}) to fit a caption probe")
            Wc, bc = fit_logistic(Xc, Yc.float())
            Gc, gc = fit_logistic(Xg, yg[:, None].float())
            Rc = effective_readouts(adapter, shapes)
            Rc = Rc - Rc.mean(0, keepdim=True)
            heads["caption"] = (Wc, bc, _protect(Rc, adapter, (colours, numbers, ("yes", "no"))), Gc, gc)
            # the question head's gate: yes/no question states against every caption state, so that
            # free generation (where its probe means nothing) is left alone
            Gq, gq = fit_logistic(torch.cat([X, Xg]), torch.cat([torch.ones(len(X)), torch.zeros(len(Xg))])[:, None])
            heads["question"] = (W, b, R, Gq, gq)
            meta.update(caption_states=len(Xc), gate_states=len(Xg))
        ps = cls(heads, cls.make_config(cfg, layer=layer, alpha=0.0 if cfg.alpha == "auto" else float(cfg.alpha)), meta)
        if cfg.alpha == "auto":
            if not calib:
                raise ConfigError("probe with alpha='auto' needs calibration items (calib=...), or give alpha a number")
            select_least_false_yes(ps, adapter, "alpha", cfg.alphas, calib, cfg.max_drop, progress)
        return ps

    # ------------------------------------------------------------------- io
    def tensors(self) -> dict:
        return {f"{h}.{k}": v for h, hd in self.heads.items() for k, v in zip("WbRGg", hd)}

    def state(self) -> dict:
        return {"heads": list(self.heads)}

    @classmethod
    def from_saved(cls, tensors, state, config, meta) -> "ProbeSteer":
        return cls({h: tuple(tensors[f"{h}.{k}"] for k in "WbRGg") for h in state["heads"]}, config, meta)


def question_states(adapter, layer: int, items, progress: bool = False):
    """States ``[N, D]`` at the last prompt token of the yes/no question ``items`` (batches of 32, in
    order) and their truth ``[N]`` (bool: answer "yes", the object present)."""
    site = f"blocks.{layer}.resid"
    X, y = [], []
    bar = progress_bar(progress, len(items), "fitting probe: question states")
    with torch.no_grad():
        for i in range(0, len(items), 32):
            ch = items[i:i + 32]
            bt = adapter.prepare(images=[it.image for it in ch], text=[it.prompt for it in ch])
            out = adapter.run(bt, capture=[site])
            last = torch.tensor([int(bt.layout.span("last", r)[0]) for r in range(len(ch))])
            X.append(out.cache[site][torch.arange(len(ch)), last].float())
            y += [it.answer == "yes" for it in ch]
            bar.update(len(ch))
    bar.close()
    if not X:
        raise DataError("probe steering needs yes/no questions with answers; the probe items have none")
    return torch.cat(X), torch.tensor(y, dtype=torch.bool)


def caption_states(adapter, layer: int, items, colours, shapes, max_new_tokens: int = 24, progress: bool = False):
    """On greedy captions of the caption ``items`` (their prompt, their objects' ``colour`` / ``shape``
    attributes as the truth): the states ``[N, D]`` that predict a shape word right after a colour
    word, and ``[N, S]`` (bool): is an object of that colour and each shape (``shapes`` order) in the
    image; then every caption state up to the end of its caption ``[M, D]`` and ``[M]`` (bool): is it
    one of the former (the gate's data)."""
    site = f"blocks.{layer}.resid"
    colour_id = {adapter.token_id(c): c for c in colours}
    shape_ids = {adapter.token_id(s) for s in shapes}
    X, Y, Xg, yg = [], [], [], []
    eos = adapter.tokenizer.eos_token_id
    bar = progress_bar(progress, len(items), "fitting probe: caption states")
    for i in range(0, len(items), 32):
        ch = items[i:i + 32]
        steps: list[torch.Tensor] = []

        def keep(t, layout):
            steps.append(t[torch.arange(t.shape[0]), last_index(t, layout)].detach().float())
            return t

        bt = adapter.prepare(images=[it.image for it in ch], text=[it.prompt for it in ch])
        with adapter.edits({site: keep}):
            new = adapter.generate(bt, max_new_tokens=max_new_tokens).new_tokens
        for r, it in enumerate(ch):
            present = {(o.attrs.get("colour"), o.attrs.get("shape")) for o in it.objects}
            for j in range(min(new.shape[1], len(steps))):
                prev, tok = (int(new[r, j - 1]) if j else -1), int(new[r, j])
                hit = prev in colour_id and tok in shape_ids
                Xg.append(steps[j][r])
                yg.append(hit)
                if hit:
                    X.append(steps[j][r])
                    Y.append([(colour_id[prev], sh) in present for sh in shapes])
                if tok == eos:
                    break
        bar.update(len(ch))
    bar.close()
    D = adapter.model.config.text_config.hidden_size
    st = (lambda xs: torch.stack(xs) if xs else torch.zeros(0, D))
    return st(X), torch.tensor(Y, dtype=torch.bool).reshape(-1, len(shapes)), st(Xg), torch.tensor(yg, dtype=torch.bool)


__all__ = ["ProbeSteer", "fit_logistic", "question_states", "caption_states"]
