"""Small shims over transformers versions (the names of arguments that moved)."""
from __future__ import annotations

import functools
import inspect


@functools.lru_cache(maxsize=64)
def _params(fn) -> frozenset:
    try:
        return frozenset(inspect.signature(inspect.unwrap(fn)).parameters)
    except (TypeError, ValueError):
        return frozenset()


def cache_kwarg(fn) -> str:
    """The key/value-cache argument of a decoder layer's ``forward`` or of a mask builder:
    ``cache`` (transformers >= 5.24) or ``past_key_values`` (earlier)."""
    return "cache" if "cache" in _params(fn) else "past_key_values"


CACHE_NAMES = ("cache", "past_key_values", "past_key_value")

__all__ = ["cache_kwarg", "CACHE_NAMES"]
