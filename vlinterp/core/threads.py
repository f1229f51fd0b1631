"""Torch's intra-op thread count, set for one call and put back after it.

Training recipes and benchmark mains choose their own thread count (one per process on a shared
machine); as library calls they must not leave it changed for the caller (a notebook, a test
worker), where two threads per process on two shared cores oversubscribe the machine."""
from __future__ import annotations

import contextlib
import functools

import torch


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``with torch_threads(n):`` runs with ``n`` torch threads (``None``: unchanged), restored after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def restores_threads(fn):
    """Decorator: whatever thread count ``fn`` sets, the caller's is back when it returns or raises."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(None):
            return fn(*args, **kwargs)
    return wrapper


__all__ = ["torch_threads", "restores_threads"]
