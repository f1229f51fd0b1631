"""Inference-time steering of LLaVA models. One shape for every method: ``S = Method.fit(model, ...)``,
``with S.applied(model): ...``, ``S.generate(model, batch)``, ``S.save/load``.

:class:`IRI` (intermediate representation injection, fitted from causal-tracing recovery rates),
:class:`MeanDiff` (VTI-style mean-difference vectors), :class:`SAVE` (SAE features separating
correct from hallucinated answers), :class:`VCD` (visual contrastive decoding;
a decoding rule, so ``choose`` / ``generate`` instead of ``applied``)."""
from .iri import IRI
from .meandiff import MeanDiff
from .save import SAVE
from .vcd import VCD

__all__ = ["IRI", "MeanDiff", "SAVE", "VCD"]
