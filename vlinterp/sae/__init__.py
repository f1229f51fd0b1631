"""SAE-V: sparse autoencoders on multimodal activations (SAELens does the modelling and training).

:class:`ActivationStore` harvests a site with per-token modality and grid position; training,
quality metrics, the cross-modal analysis and dashboards build on it."""
from .store import ActivationStore, shapes_items

__all__ = ["ActivationStore", "shapes_items"]
