"""Model zoo: small trained organisms of the real classes, shipped inside the package.

Each organism has a recipe module (``train``, ``evaluate``, ``FLOORS``) and, once trained,
a weights directory ``vlinterp/zoo/weights/<name>/`` in its library's own on-disk format
(HF ``save_pretrained``, timm hub format, open_clip hub format, diffusers) plus
``card.json`` (measured floors, seed, exact training command, training time). Loading an
organism is loading that directory through the normal adapter.
"""
from __future__ import annotations

import importlib
import json
import os

from ..core.errors import LoadError

# name -> recipe module
ORGANISMS: dict[str, str] = {
    "shapes-vit": "vlinterp.zoo.recipe_vit",
    "shapes-clip": "vlinterp.zoo.recipe_clip",
    "shapes-llava": "vlinterp.zoo.recipe_llava",
    "shapes-llava-aligned": "vlinterp.zoo.llava_align",  # shapes-llava + the align stage (SAE-V)
    "shapes-qwen": "vlinterp.zoo.recipe_qwen",  # Qwen2.5-VL class (window-attention tower, 2x2 merger, M-RoPE)
    "shapes-diffusion": "vlinterp.zoo.recipe_diffusion",
}

WEIGHTS_ROOT = os.path.join(os.path.dirname(__file__), "weights")


def names() -> list[str]:
    return list(ORGANISMS)


def is_organism(name: str) -> bool:
    return name in ORGANISMS


def weights_dir(name: str) -> str:
    return os.path.join(WEIGHTS_ROOT, name)


def available(name: str) -> bool:
    """Whether the organism's trained weights ship in this install."""
    return os.path.isfile(os.path.join(weights_dir(name), "card.json"))


def recipe(name: str):
    if name not in ORGANISMS:
        raise LoadError(f"unknown organism {name!r}; known: {', '.join(ORGANISMS)}")
    return importlib.import_module(ORGANISMS[name])


def card(name: str) -> dict:
    path = os.path.join(weights_dir(name), "card.json")
    if not os.path.isfile(path):
        raise LoadError(f"organism {name!r} has no shipped weights in this install ({path}); train it with `vlinterp zoo train {name} --out DIR`")
    with open(path) as f:
        return json.load(f)


def load_organism(name: str, **kw):
    """Load a shipped organism through its family adapter."""
    from ..adapters.registry import load

    card(name)  # clear error if missing
    m = load(weights_dir(name), **kw)
    m.name = name
    return m
