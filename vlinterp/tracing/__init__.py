"""Causal tracing (ROME / FCCT) over adapters: :func:`trace`, :func:`trace_naive`, position
groups, corruptions (one registry, :data:`CORRUPTIONS`: image noise, pixel noise, blur,
interchange, text noise). Dataset sweeps and the shapes-world localisation check are in
:mod:`vlinterp.eval.trace` and :mod:`vlinterp.eval.trace_curves`."""
from .corrupt import CORRUPTIONS, Blur, Corruption, ImageNoise, Interchange, PixelNoise, TextNoise, make_corruption
from .groups import GROUPS, patch_mask, position_groups, text_positions
from .trace import COMPONENTS, WINDOW_MODES, trace, trace_naive, window_layers

__all__ = ["trace", "trace_naive", "window_layers", "COMPONENTS", "WINDOW_MODES", "GROUPS", "position_groups", "patch_mask",
           "text_positions", "Corruption", "ImageNoise", "PixelNoise", "Blur", "Interchange", "TextNoise", "make_corruption",
           "CORRUPTIONS"]

# attention knockout, direct logit attribution, relevance patching (with causal tracing, one registry);
# tracing of the last token's attention output by key group
from .dla import dla  # noqa: E402
from .knockout import KNOCKOUT_GROUPS, knockout, parse_edges  # noqa: E402
from .methods import TRACING_METHODS  # noqa: E402
from .parts import PARTS, attention_parts  # noqa: E402
from .relp import relp, sign_agreement  # noqa: E402

__all__ += ["knockout", "parse_edges", "KNOCKOUT_GROUPS", "dla", "relp", "sign_agreement", "TRACING_METHODS", "attention_parts", "PARTS"]
