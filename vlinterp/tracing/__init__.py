"""Causal tracing (ROME / FCCT) over adapters: :func:`trace`, :func:`trace_naive`, position groups."""
from .groups import GROUPS, patch_mask, position_groups
from .trace import trace, trace_naive

__all__ = ["trace", "trace_naive", "GROUPS", "position_groups", "patch_mask"]
