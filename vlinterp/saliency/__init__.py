"""Saliency methods: one per file, one base class, one registry.

>>> from vlinterp import saliency
>>> saliency.names()                                  # registered method names
>>> meth = saliency.get("relevancy")(adapter, layers=None)
>>> res = meth.attribute(batch, target=None, image_index=0)   # -> vlinterp.core.result.Result
>>> res.scores            # [n_targets, n_patches]; res.heatmap(k) -> [H, W] at the image size
>>> saliency.MSEA(meth, scales=(0.75, 1.0, 1.25)).attribute(batch)

``target``: LLaVA an answer string or token ids (``None``: the greedy answer; one row per answer
token), ViT a class index or name, CLIP a text index or text, diffusion a word (see
:mod:`vlinterp.saliency.targets`). Every method takes ``(adapter, **options)``; unknown options
raise ``TypeError`` listing the valid ones.
"""
from __future__ import annotations

import importlib

from ..core.errors import VlinterpError


class UnknownMethodError(VlinterpError, KeyError):
    """A saliency method name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]

REGISTRY: dict[str, str] = {
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
}
_loaded: dict[str, type] = {}


def register(name: str, cls) -> None:
    """Register a method class (or ``"module:Class"`` path) under ``name``."""
    _loaded.pop(name, None)
    if isinstance(cls, str):
        REGISTRY[name] = cls
    else:
        REGISTRY[name] = f"{cls.__module__}:{cls.__qualname__}"
        _loaded[name] = cls


def get(name: str):
    """The method class registered as ``name``; call it as ``cls(adapter, **options)``."""
    if name not in REGISTRY:
        raise UnknownMethodError(f"unknown saliency method {name!r}; known: {', '.join(REGISTRY)}")
    if name not in _loaded:
        mod, cls = REGISTRY[name].split(":")
        _loaded[name] = getattr(importlib.import_module(mod), cls)
    return _loaded[name]


def names(family: str | None = None) -> list[str]:
    """Registered names; with ``family`` only the methods that support it (``msea``: any of vlm, vit, clip)."""
    if family is None:
        return list(REGISTRY)
    out = []
    for n in REGISTRY:
        fams = ("vlm", "vit", "clip") if n == "msea" else getattr(get(n), "families", ())
        if family in fams:
            out.append(n)
    return out


def __getattr__(name):
    if name == "MSEA":
        return get("msea")
    if name in ("SaliencyMethod", "Targets"):
        mod = importlib.import_module(".base" if name == "SaliencyMethod" else ".targets", __name__)
        return getattr(mod, name)
    raise AttributeError(name)


__all__ = ["names", "get", "register", "REGISTRY", "MSEA", "SaliencyMethod", "UnknownMethodError"]
