"""Model zoo: trained organisms of the real classes, shipped as safetensors.

Filled by the zoo issue; until an organism's weights ship, ``names()`` lists none.
"""
from __future__ import annotations

ORGANISMS: dict[str, str] = {}


def names() -> list[str]:
    return sorted(ORGANISMS)


def is_organism(name: str) -> bool:
    return name in ORGANISMS


def load_organism(name: str, **kw):
    from ..core.errors import LoadError

    raise LoadError(f"organism {name!r} is not available")
