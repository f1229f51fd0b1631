"""Saliency methods: one per file, one base class, one registry.

>>> import vlinterp as vi
>>> ex = vi.explain(model, image, "what color is the circle?", method="relevancy")  # the whole job, see .explanation
>>> from vlinterp import saliency
>>> saliency.names("vlm")                                   # methods for a kind (vlm, vit, clip, diffusion)
>>> meth = saliency.create("relevancy", adapter, layers=[2, 3])   # = saliency.get("relevancy")(adapter, ...)
>>> res = meth.attribute(batch, target=None, image_index=0)      # -> vlinterp.core.result.Result
>>> res.scores            # [n_targets, n_patches]; res.heatmap(k) -> [H, W] at the image size
>>> saliency.MSEA(meth, scales=(0.75, 1.0, 1.25)).attribute(batch)

``target``: LLaVA an answer string or token ids (``None``: the greedy answer; one row per answer
token), ViT a class index or name, CLIP a text index or text, diffusion a word (see
:mod:`vlinterp.saliency.targets`). Every method is a class with a nested dataclass ``Config``
(its options, typed, with defaults); ``cls(adapter, **options)`` builds it and refuses unknown
options or bad values with :class:`~vlinterp.core.errors.ConfigError` naming the valid ones.

Adding a method: one file with a :class:`~vlinterp.saliency.base.SaliencyMethod` subclass
(``name``, ``kinds``, ``Config``, ``compute(t) -> [n_targets, n_patches]``) and one line in
``REGISTRY`` below (or ``saliency.register("name", Class)`` from your own code).
"""
from __future__ import annotations

import importlib

from ..core.errors import UnknownNameError
from ..core.registry import Registry

UnknownMethodError = UnknownNameError  # the former name of "unknown saliency method"

REGISTRY = Registry("saliency method", {
    "attention": "vlinterp.saliency.attention:RawAttention",
    "rollout": "vlinterp.saliency.rollout:Rollout",
    "relevancy": "vlinterp.saliency.relevancy:Relevancy",
    "gradcam": "vlinterp.saliency.gradcam:GradCAMMethod",
    "ig": "vlinterp.saliency.captum_methods:IntegratedGradientsMethod",
    "occlusion": "vlinterp.saliency.captum_methods:OcclusionMethod",
    "tam": "vlinterp.saliency.tam:TokenActivationMap",
    "clip_text": "vlinterp.saliency.clip_maps:ClipTextRelevancy",
    "daam": "vlinterp.saliency.daam:DAAM",
    "msea": "vlinterp.saliency.msea:MSEA",
})
WRAPPERS = ("msea",)  # methods that run another method


def register(name: str, cls=None):
    """Register a method class (or ``"module:Class"``) under ``name``; as a decorator without ``cls``."""
    return REGISTRY.register(name, cls)


def get(name: str):
    """The method class registered as ``name`` (:class:`UnknownNameError` with the nearest names);
    call it as ``cls(adapter, **options)``."""
    return REGISTRY.get(name)


def create(name: str, adapter, **options):
    """``get(name)(adapter, **options)``: the method on ``adapter``."""
    return get(name)(adapter, **options)


def config(name: str, **options):
    """The validated ``Config`` of method ``name`` from ``options`` (strings from a CLI spec are
    converted), without a model: what the CLI checks before loading anything."""
    from .base import build_config

    return build_config(get(name), None, options)


def options(name: str) -> dict:
    """``{option: default}`` of method ``name``."""
    return REGISTRY.options(name)


def takes(name: str, option: str) -> bool:
    """Whether method ``name`` has option ``option``."""
    return option in options(name)


def names(kind: str | None = None) -> list[str]:
    """Registered names; with ``kind`` (``adapter.kind``: vlm, vit, clip, diffusion) only the
    methods that support it."""
    if kind is None:
        return REGISTRY.names()
    return REGISTRY.names(kind=kind)


def __getattr__(name):
    if name == "MSEA":
        return get("msea")
    if name in ("SaliencyMethod", "Targets"):
        mod = importlib.import_module(".base" if name == "SaliencyMethod" else ".targets", __name__)
        return getattr(mod, name)
    if name in ("explain", "Explanation"):
        return getattr(importlib.import_module(".explanation", __name__), name)
    raise AttributeError(name)


__all__ = ["names", "get", "create", "config", "options", "takes", "register", "REGISTRY", "WRAPPERS", "MSEA",
           "SaliencyMethod", "UnknownMethodError", "explain", "Explanation"]
