"""What every hallucination detector shares: claims, the teacher-forced runs they are read from,
the logit lens, and the base class.

A **claim** is an :class:`~vlinterp.core.items.Item` whose ``answer`` holds the words the model said
and that are to be checked (its own ``"yes"`` to a presence question, or a caption mention
``"red circle"``), with ``meta``:

* ``prefix``: the answer text before those words (``""`` for a one-word answer; the caption so far
  for a mention);
* ``claim``: the object the words assert, named as the item's objects are (``"red circle"``);
* ``candidates``: the answers the question allows (``("yes", "no")``), when it has a closed set;
* ``hallucinated``: the label (``True``: the claimed object is not in the image), when known.

A **run** (:class:`ClaimRun`) is one forward of a chunk of claims with the answer teacher-forced
(``prefix`` + words), capturing the residual stream; ``positions[r]`` ``[k]`` are the positions
that predict the ``k`` claimed tokens ``tokens[r]`` ``[k]``. The text-only run is the same with the
image removed. :meth:`ClaimRun.lens` reads every layer's residual through the final norm and the
unembedding (the logit lens): ``[L, k, V]`` log-probabilities per claim; the last layer's are the
model's own.

A detector (:class:`Detector`) reads a run and returns one value per claim and layer, ``[B, L]``
(a detector with one reading gives ``[B, 1]``), oriented so that **higher means more likely
hallucinated**. :meth:`Detector.fit` fits what it needs on claims of a separate split (probes,
the layer that separates best), never on the claims it scores.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, LayerRangeError, PromptError, UnsupportedError
from ..core.items import Item

Layer = int | Literal["auto"]


def claim_name(item: Item) -> str:
    """The object a claim asserts: ``meta["claim"]``, else the question's ``meta["target"]``
    (a ``(colour, shape)`` pair is joined by a space)."""
    c = item.meta.get("claim", item.meta.get("target"))
    if c is None:
        raise DataError(f"claim {item.id or '?'}: no meta['claim'] (the object the answer asserts)")
    return " ".join(c) if isinstance(c, (tuple, list)) else str(c)


def labels(claims) -> np.ndarray:
    """``[N]`` bool: ``meta["hallucinated"]`` of every claim (:class:`DataError` if one lacks it)."""
    out = []
    for c in claims:
        if "hallucinated" not in c.meta:
            raise DataError(f"claim {c.id or '?'} has no label (meta['hallucinated'])")
        out.append(bool(c.meta["hallucinated"]))
    return np.asarray(out, bool)


def has_labels(claims) -> bool:
    return bool(claims) and all("hallucinated" in c.meta for c in claims)


# ------------------------------------------------------------------------------- runs
def _answer_text(c: Item) -> str:
    prefix = str(c.meta.get("prefix") or "").strip()
    if not c.answer:
        raise DataError(f"claim {c.id or '?'} has no answer words to check")
    return f"{prefix} {c.answer.strip()}" if prefix else c.answer.strip()


@dataclass
class ClaimRun:
    """One teacher-forced forward of ``claims`` (see the module doc). ``cache``: site ->
    ``[B, T, D]``; ``positions`` / ``tokens``: per row ``[k]`` LongTensors; ``image``: whether the
    images were given."""

    adapter: object
    claims: list
    batch: object
    cache: dict
    logits: torch.Tensor
    positions: list
    tokens: list
    image: bool = True
    _lens: list | None = field(default=None, repr=False)

    @classmethod
    def make(cls, adapter, claims, sites=(), image: bool = True) -> "ClaimRun":
        tok = adapter.tokenizer
        answers = [_answer_text(c) for c in claims]
        images = [c.image for c in claims] if image else None
        if image and any(im is None for im in images):
            raise DataError("a claim without an image: detectors read claims about images")
        b = adapter.prepare(images=images, text=[c.prompt for c in claims], answer=answers)
        out = adapter.run(b, capture=list(sites) or None)
        ids = b.inputs["input_ids"]
        positions, tokens = [], []
        for r, c in enumerate(claims):
            span = b.layout.span("answer", r)
            prefix = str(c.meta.get("prefix") or "").strip()
            n_pre = len(tok(" " + prefix, add_special_tokens=False)["input_ids"]) if prefix else 0
            got = ids[r, span.to(ids.device)].cpu()
            if n_pre and got[:n_pre].tolist() != tok(" " + prefix, add_special_tokens=False)["input_ids"]:
                raise DataError(f"claim {c.id or r}: the prefix {prefix!r} does not end on a token boundary")
            if n_pre >= len(span):
                raise DataError(f"claim {c.id or r}: the words {c.answer!r} tokenize to nothing after the prefix")
            positions.append(span[n_pre:] - 1)
            tokens.append(got[n_pre:])
        return cls(adapter, list(claims), b, dict(out.cache), out.logits, positions, tokens, image)

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers("lm")

    def states(self, layer: int) -> list[torch.Tensor]:
        """Per row the residual states ``[k, D]`` after block ``layer`` at the predicting positions."""
        h = self.cache[f"blocks.{layer}.resid"]
        return [h[r, p.to(h.device)] for r, p in enumerate(self.positions)]

    @torch.no_grad()
    def lens(self) -> list[torch.Tensor]:
        """Per row ``[L, k, V]`` float32 log-probabilities of the next token read from every layer's
        residual state at the predicting positions (final norm + unembedding)."""
        if self._lens is None:
            a = self.adapter
            norm, head = a.module("norm"), a.module("logits")
            L = self.num_layers
            rows = []
            for r, p in enumerate(self.positions):
                h = torch.stack([self.cache[f"blocks.{l}.resid"][r, p.to(self.logits.device)] for l in range(L)])  # [L, k, D]
                rows.append(torch.log_softmax(head(norm(h)).float(), -1).cpu())
            self._lens = rows
        return self._lens


def lens_sites(adapter) -> list[str]:
    return [f"blocks.{l}.resid" for l in range(adapter.num_layers("lm"))]


def read_claims(adapter, claims, detectors: dict, batch_size: int = 16, progress: bool = False,
                desc: str = "detect: reading claims") -> dict[str, np.ndarray]:
    """``{name: [N, L_name]}``: every detector's per-layer values on ``claims``, the runs shared
    (one forward with the images; one without when a detector needs it)."""
    from tqdm.auto import tqdm

    if not claims:
        return {n: np.zeros((0, 1), np.float32) for n in detectors}
    for d in detectors.values():
        d.check(adapter)
    sites = sorted({s for d in detectors.values() for s in d.sites(adapter)})
    text_sites = sorted({s for d in detectors.values() if "text" in d.needs for s in d.text_sites(adapter)})
    need_text = any("text" in d.needs for d in detectors.values())
    parts: dict[str, list] = {n: [] for n in detectors}
    bar = tqdm(total=len(claims), desc=desc, disable=not progress)
    for i in range(0, len(claims), batch_size):
        chunk = claims[i:i + batch_size]
        run = ClaimRun.make(adapter, chunk, sites, image=True)
        trun = ClaimRun.make(adapter, chunk, text_sites, image=False) if need_text else None
        for n, d in detectors.items():
            v = np.asarray(d.read(run, trun), np.float64)
            parts[n].append(v.reshape(len(chunk), -1))
        bar.update(len(chunk))
    bar.close()
    return {n: np.concatenate(p) for n, p in parts.items()}


# ---------------------------------------------------------------------------- detectors
@dataclass
class Scores:
    """A detector's output on ``N`` claims: ``values`` ``[N]`` (higher = more likely hallucinated),
    ``layers`` ``[N, L]`` (the per-layer trajectory, or ``None``), ``layer`` the one ``values`` came
    from (``None``: a single reading)."""

    name: str
    values: np.ndarray
    layers: np.ndarray | None = None
    layer: int | None = None
    meta: dict = field(default_factory=dict)


class Detector:
    """Base class. A subclass sets ``name`` (by its registration), ``Config`` (a dataclass; a
    ``layer`` field of type :data:`Layer` makes the layer ``"auto"``-selectable), ``needs``
    (``("image",)`` or ``("image", "text")``), ``per_layer`` (``read`` returns ``[B, L]``) and
    implements :meth:`read`; fitted detectors override :meth:`fit`."""

    name = "base"
    kinds = ("vlm",)
    needs: tuple[str, ...] = ("image",)
    per_layer = True
    trained = False  # fit needs labelled claims (a probe), not only a layer choice

    @dataclass
    class Config:
        layer: Layer = "auto"

    def __init__(self, config=None, **opts):
        if config is None:
            from . import DETECTORS

            config = DETECTORS.config(self.name, **opts) if self.name in DETECTORS else self.Config(**opts)
        elif opts:
            config = dataclasses.replace(config, **opts)
            if hasattr(config, "validate"):
                config.validate()
        self.config = config
        self.chosen_layer: int | None = None
        self.meta: dict = {}

    # ------------------------------------------------------------------- interface
    def check(self, adapter) -> None:
        if adapter.kind not in self.kinds:
            raise UnsupportedError(f"detector {self.name} needs a {' or '.join(self.kinds)} model, not {adapter.family}")

    def sites(self, adapter) -> list[str]:
        """Sites the image run must capture for :meth:`read`."""
        return lens_sites(adapter) if self.per_layer else []

    def text_sites(self, adapter) -> list[str]:
        return lens_sites(adapter) if self.per_layer else []

    def read(self, run: ClaimRun, text_run: ClaimRun | None) -> np.ndarray:
        """``[B, L]`` (``[B, 1]``) values of the run's claims; higher = more likely hallucinated."""
        raise NotImplementedError

    def fit(self, adapter, claims, progress: bool = False, values: np.ndarray | None = None) -> "Detector":
        """Choose the layer on labelled ``claims`` (config ``layer="auto"``: the best AUROC; without
        labels the last layer). ``values``: this detector's :func:`read_claims` output on them."""
        if self.per_layer and getattr(self.config, "layer", None) == "auto":
            if has_labels(claims):
                from ..metrics.detection import auroc

                v = values if values is not None else read_claims(adapter, claims, {self.name: self}, progress=progress)[self.name]
                y = labels(claims)
                aucs = [auroc(v[:, l], y) for l in range(v.shape[1])]
                ok = [l for l in range(len(aucs)) if np.isfinite(aucs[l])]
                self.chosen_layer = max(ok, key=lambda l: (aucs[l], l)) if ok else v.shape[1] - 1
                self.meta["fit_layer_auroc"] = aucs
                self.meta["fit_claims"] = len(claims)
            else:
                self.chosen_layer = adapter.num_layers("lm") - 1
        return self

    def layer_of(self, L: int) -> int | None:
        """The layer ``values`` are read from (``None``: single reading)."""
        if not self.per_layer:
            return None
        want = getattr(self.config, "layer", "auto")
        if want == "auto":
            return L - 1 if self.chosen_layer is None else self.chosen_layer
        if not -L <= int(want) < L:
            raise LayerRangeError(f"detector {self.name}: layer {want} out of range (0..{L - 1})")
        return int(want) % L

    def scores(self, values: np.ndarray) -> Scores:
        """:class:`Scores` from this detector's :func:`read_claims` output ``[N, L]``."""
        if not self.per_layer:
            return Scores(self.name, values[:, 0], None, None, dict(self.meta))
        layer = self.layer_of(values.shape[1])
        return Scores(self.name, values[:, layer], values, layer, dict(self.meta))

    def score(self, adapter, claims, batch_size: int = 16, progress: bool = False) -> Scores:
        """Values of ``claims`` (see :class:`Scores`)."""
        return self.scores(read_claims(adapter, claims, {self.name: self}, batch_size, progress)[self.name])

    def __repr__(self) -> str:
        return f"<detector {self.name} {self.config}>"


def fit_detectors(adapter, claims, detectors: dict, batch_size: int = 16, progress: bool = False) -> dict:
    """Fit every detector on ``claims`` (the layer choices read in one shared pass; probes fit
    their own way). Returns ``detectors``."""
    choose = {n: d for n, d in detectors.items() if not d.trained and d.per_layer and getattr(d.config, "layer", None) == "auto"}
    vals = read_claims(adapter, claims, choose, batch_size, progress, "detect: fitting layers") if choose and has_labels(claims) else {}
    for n, d in detectors.items():
        d.fit(adapter, claims, progress=progress, values=vals.get(n))
    return detectors


def token_ids(adapter, words) -> list[int]:
    """Ids of the single-token ``words`` the tokenizer has (the others are left out)."""
    out = []
    for w in words:
        try:
            out.append(int(adapter.token_id(w)))
        except PromptError:  # a word that is not one token is simply not used
            continue
    return sorted(set(out))


Reduce = Literal["mean", "max", "sum", "first", "last"]


def reduce_tokens(x: torch.Tensor, how: str) -> torch.Tensor:
    """``[L, k]`` values over a claim's ``k`` tokens -> ``[L]``."""
    if how == "mean":
        return x.mean(-1)
    if how == "max":
        return x.max(-1).values
    if how == "sum":
        return x.sum(-1)
    if how == "first":
        return x[:, 0]
    if how == "last":
        return x[:, -1]
    raise ConfigError(f"token reduction must be mean, max, sum, first or last, got {how!r}")


def check_layer(layer, what: str) -> None:
    if layer != "auto" and not isinstance(layer, int):
        raise ConfigError(f"{what}: layer must be an integer or 'auto', got {layer!r}")


__all__ = ["ClaimRun", "Detector", "Scores", "read_claims", "fit_detectors", "claim_name", "labels", "has_labels",
           "lens_sites", "token_ids", "Layer", "Reduce", "reduce_tokens", "check_layer"]
