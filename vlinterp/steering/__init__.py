"""Inference-time steering of LLaVA models. One shape for every method: ``S = Method.fit(model, ...)``,
``with S.applied(model): ...``, ``S.generate(model, batch)``, ``S.save/load``.

:class:`IRI` (intermediate representation injection, fitted from causal-tracing recovery rates),
:class:`MeanDiff` (VTI-style mean-difference vectors), :class:`SAVE` (SAE features separating
correct from hallucinated answers), :class:`ProbeSteer` (linear presence probes whose log-odds are
written onto the answer words' readouts; ITI family), :class:`VCD` (visual contrastive decoding;
a decoding rule, so ``choose`` / ``generate`` instead of ``applied``), :class:`Grounding` (patch probes
on the image tokens choose the yes/no, colour and shape words the model is about to say)."""
from .ground import Grounding
from .iri import IRI
from .meandiff import MeanDiff
from .probe import ProbeSteer
from .save import SAVE
from .vcd import VCD

__all__ = ["Grounding", "IRI", "MeanDiff", "ProbeSteer", "SAVE", "VCD"]
