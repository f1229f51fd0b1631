"""Visualisation: heat-map overlays (OpenCV colormaps, atomic PNGs) and the self-contained HTML report."""
from .figure import figure
from .overlay import COLORMAPS, colorize, data_uri, overlay, png_bytes, save_overlay, save_png, write_bytes_atomic
from .report import View, report_html, view_from_maps, view_from_result, write_report
from .explanation import write_explanation

__all__ = ["figure", "COLORMAPS", "colorize", "data_uri", "overlay", "png_bytes", "save_overlay", "save_png", "write_bytes_atomic",
           "View", "report_html", "view_from_maps", "view_from_result", "write_report", "write_explanation"]
