"""Modality-inconsistency audit: the same content as text, image, rendered text and mixed; accuracy
per rendering, render-equivalence, OCR control, rendering factors, similarity vs consistency, and the
layer where the text and image pathways part ways."""
from .items import AuditItem, load_items, shapes_items
from .plant import projector_noise
from .render import Rendering, renderings
from .run import audit

__all__ = ["AuditItem", "load_items", "shapes_items", "Rendering", "renderings", "audit", "projector_noise"]
