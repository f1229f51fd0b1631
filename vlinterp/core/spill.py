"""A capture cache with a memory budget: captures are moved to CPU and kept in memory until the
budget is reached; after that each new capture is written to its own raw file and held as a tensor
memory-mapped on that file (``torch.from_file``: file-backed pages the OS can drop), so a long
capture never holds more than the budget in anonymous memory.

Files (``{n}-{site}-{dtype}-{shape}.bin``, raw bytes in C order) go to ``spill_dir`` (kept) or to a
temporary directory removed when the cache is closed or garbage-collected. Writing to a spilled
tensor writes to its file; ``t.clone()`` gives an in-memory copy.

After each spill the C heap is trimmed (glibc ``malloc_trim``, where present): the activations the
model frees after a spill otherwise stay in the process as free-but-resident heap, and a long
capture measured here grew by the size of what it had spilled (2 processes sharing 2 cores).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import ctypes
import ctypes.util
import functools
import weakref

import torch

from .errors import ArgumentError
from .hooks import Cache


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` or None (other C libraries, other systems)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_heap() -> None:
    """Give free C-heap pages back to the OS (best effort)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class SpillCache(Cache):
    spills = True

    def __init__(self, budget_mb: float, spill_dir: str | None = None):
        super().__init__()
        if budget_mb < 0:
            raise ArgumentError(f"budget_mb must be >= 0, got {budget_mb}")
        self.budget = int(budget_mb * 2**20)
        self.in_memory = 0
        self.spilled_bytes = 0
        self.n_spilled = 0
        self._own = spill_dir is None
        self.dir = spill_dir or tempfile.mkdtemp(prefix="vlinterp-spill-")
        os.makedirs(self.dir, exist_ok=True)
        # a temporary directory goes with the cache, and at interpreter exit at the latest
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True) if self._own else None

    def add(self, name: str, t: torch.Tensor):
        t = t.detach().cpu()
        nbytes = t.numel() * t.element_size()
        if self.in_memory + nbytes <= self.budget:
            self.in_memory += nbytes
            return super().add(name, t)
        t = t.contiguous()
        shape = "x".join(str(d) for d in t.shape) or "scalar"
        path = os.path.join(self.dir, f"{self.n_spilled:07d}-{name.replace('/', '_')}-{str(t.dtype).replace('torch.', '')}-{shape}.bin")
        tmp = path + ".tmp"
        t.view(torch.uint8).numpy().tofile(tmp)  # raw bytes, any dtype (bfloat16 included)
        os.replace(tmp, path)
        self.n_spilled += 1
        self.spilled_bytes += nbytes
        # a shared file mapping: no anonymous copy (numpy memmaps wrapped by torch.from_numpy were
        # measured to grow anonymous memory by their size here)
        view = torch.from_file(path, shared=True, size=t.numel(), dtype=t.dtype).view(t.shape)
        del t
        release_heap()
        return super().add(name, view)

    def close(self) -> None:
        """Drop the captures and, for a temporary spill directory, its files."""
        self.clear()
        self.steps.clear()
        if self._cleanup is not None:
            self._cleanup()


__all__ = ["SpillCache"]
