"""SAE-V: sparse autoencoders on multimodal activations (SAELens does the modelling and training).

:class:`ActivationStore` harvests a site over items with per-token modality and grid position;
architectures (:data:`~vlinterp.sae.archs.SAE_ARCHS`), training, quality metrics and the
cross-modal analysis build on it. Datasets, the SAE-V evaluation and Ray harvests are in
:mod:`vlinterp.eval` (``sae_data``, ``saev``, ``sae_parallel``); dashboards in
:mod:`vlinterp.viz.sae_dashboard`. (Imported lazily: the CLI reads the registry without torch.)"""
from __future__ import annotations

import importlib

_LAZY = {"ActivationStore": "vlinterp.sae.store", "SAE_ARCHS": "vlinterp.sae.archs"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlinterp.sae' has no attribute {name!r}")


__all__ = ["ActivationStore", "SAE_ARCHS"]
