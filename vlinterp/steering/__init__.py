"""Inference-time steering of LLaVA models through the adapter's edits: :class:`IRI`
(intermediate representation injection, fitted from causal-tracing recovery rates)."""
from .iri import IRI

__all__ = ["IRI"]
