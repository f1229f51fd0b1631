"""Causal tracing (ROME / FCCT) over adapters: :func:`trace`, :func:`trace_naive`, position
groups, corruptions (image noise, pixel noise, blur, interchange, text noise)."""
from .corrupt import Blur, Corruption, ImageNoise, Interchange, TextNoise, make_corruption
from .groups import GROUPS, patch_mask, position_groups, text_positions
from .trace import trace, trace_naive

__all__ = ["trace", "trace_naive", "GROUPS", "position_groups", "patch_mask", "text_positions", "Corruption",
           "ImageNoise", "Blur", "Interchange", "TextNoise", "make_corruption"]
