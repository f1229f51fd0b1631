"""Inference-time steering of vision-language models. One shape for every method (:mod:`.base`)::

    S = STEERING.get(name).fit(model, items, config, calib=calib_items)   # or Method.fit(...)
    with S.applied(model): ...            # every run / generate inside is steered
    S.generate(model, batch); S.edits(model); S.replace(alpha=0.5)
    S.save("fits/x"); vlinterp.steering.load("fits/x")

:class:`IRI` (intermediate representation injection, fitted from causal-tracing recovery rates),
:class:`MeanDiff` (VTI-style mean-difference vectors), :class:`SAVE` (SAE features separating
correct from hallucinated answers), :class:`ProbeSteer` (linear presence probes whose log-odds are
written onto the answer words' readouts; ITI family), :class:`VCD` (visual contrastive decoding, a
``logits`` edit with a noised-image forward inside), :class:`Grounding` (patch probes on the image
tokens choose the yes/no, colour and shape words the model is about to say). Datasets, evaluation
and the shapes world's default probe / calibration items: :mod:`vlinterp.eval.steer`."""
from .base import STEERING, SteeringMethod, load
from .ground import Grounding
from .iri import IRI
from .meandiff import MeanDiff
from .probe import ProbeSteer
from .save import SAVE
from .vcd import VCD

__all__ = ["STEERING", "SteeringMethod", "load", "Grounding", "IRI", "MeanDiff", "ProbeSteer", "SAVE", "VCD"]
