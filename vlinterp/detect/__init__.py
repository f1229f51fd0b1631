"""Hallucination detection: per-answer scores that flag a hallucinated claim before anyone steers it.

One detector per file behind one base class (:mod:`.base`) and one registry:

* ``perceptual``: perceptual entropy, the binary entropy of the probability on uncertainty tokens,
  per layer by the logit lens ("Anatomy of a Lie");
* ``conflict``: inferential conflict, ``log P(words | image) - log P(words | text only)`` per layer;
* ``decision``: decision entropy of the next-token distribution at the claimed words, per layer;
* ``margin``: the model's own margin of the claimed words over their best alternative (yes/no);
* ``ground``: the grounding probe's presence log-odds of the claimed object (fitted on items);
* ``sae``: a logistic probe on SAE-V features of the claim (fitted on labelled claims).

>>> from vlinterp import detect
>>> dets = {n: detect.create(n) for n in ("margin", "conflict", "ground")}
>>> detect.fit_detectors(adapter, fit_claims, dets)          # claims of a separate split
>>> vals = detect.read_claims(adapter, claims, dets)         # {name: [N, L]}, the runs shared
>>> dets["ground"].scores(vals["ground"]).values             # [N], higher = more likely hallucinated

Claims are items (see :mod:`.base`); :mod:`vlinterp.eval.detect` makes them from POPE answers and
caption mentions and measures AUROC / AUPRC.
"""
from __future__ import annotations

from ..core.registry import Registry

DETECTORS = Registry("detector", {
    "perceptual": "vlinterp.detect.perceptual:PerceptualEntropy",
    "conflict": "vlinterp.detect.conflict:InferentialConflict",
    "decision": "vlinterp.detect.decision:DecisionEntropy",
    "margin": "vlinterp.detect.margin:AnswerMargin",
    "ground": "vlinterp.detect.ground:GroundingProbe",
    "sae": "vlinterp.detect.sae:SAELogistic",
})


def names() -> list[str]:
    return DETECTORS.names()


def get(name: str):
    return DETECTORS.get(name)


def create(spec: str, **options):
    """A detector from ``"name"`` or ``"name:k=v,..."`` (options override the spec's)."""
    name, opts = DETECTORS.parse(spec)
    return DETECTORS.create(name, **{**opts, **options})


def config(spec: str):
    """The validated config of a spec, without a model (what the CLI checks before loading)."""
    name, opts = DETECTORS.parse(spec)
    return DETECTORS.config(name, **opts)


def __getattr__(name):
    if name in ("Detector", "ClaimRun", "Scores", "read_claims", "fit_detectors", "claim_name", "labels"):
        from . import base

        return getattr(base, name)
    raise AttributeError(name)


__all__ = ["DETECTORS", "names", "get", "create", "config", "Detector", "ClaimRun", "Scores", "read_claims",
           "fit_detectors", "claim_name", "labels"]
