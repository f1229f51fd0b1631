"""What attention-based maps say beyond the image: the prompt words each answer token used, and
one map per layer.

A method that builds a full row over its stream for every explained query (raw attention,
rollout, relevancy) hands those rows here; they are kept in the Result:

* ``arrays["text_scores"]`` ``[n_targets, n_text]``: the rows read at the prompt's text tokens
  (LLaVA: the ``prompt`` span of the language model's layout), with ``meta["text_tokens"]`` (one
  label per token) and ``meta["text_positions"]`` (their positions in the stream). The query's
  own position (the last prompt token, for the first answer token) scores 0: a token's weight on
  itself (relevancy's identity, self-attention) is not a word it read. Streams
  without a prompt (ViT, CLIP's vision tower) get neither.
* ``arrays["layer_scores"]`` ``[n_targets, n_layers, n_patches]``: each layer's own map read at
  the image patches, with ``meta["layer_ids"]``. Raw attention: each layer's attention (heads
  averaged); relevancy: each layer's gradient-weighted attention ``mean_h((dy/dA * A)^+)``, which
  is exactly the map ``relevancy`` gives with ``layers=[l]`` (``R = I + Abar_l``).
"""
from __future__ import annotations

import torch

from .targets import Targets


def prompt_positions(t: Targets) -> torch.Tensor | None:
    """Positions of the prompt's text tokens in ``t.stream`` (LongTensor), or ``None`` when the
    stream has no prompt span (vision towers)."""
    lay = t.layout
    if t.stream != "lm" or "prompt" not in lay.spans:
        return None
    pos = lay.span("prompt", t.row)
    return pos if len(pos) else None


def token_labels(adapter, batch, positions, row: int = 0) -> list[str]:
    """Readable labels of the tokens at ``positions`` of ``batch`` row ``row``."""
    tok = getattr(adapter, "tokenizer", None)
    ids = batch.inputs["input_ids"][row, positions].tolist()
    if tok is None:
        return [str(i) for i in ids]
    return [tok.decode([int(i)]).strip() or tok.convert_ids_to_tokens(int(i)) for i in ids]


def keep_text_scores(adapter, t: Targets, rows: torch.Tensor) -> None:
    """``rows`` ``[n_targets, T]`` (one row of the method's matrix per query) -> ``t.arrays["text_scores"]``
    at the prompt tokens, with their labels and positions in ``t.meta``; nothing without a prompt."""
    pos = prompt_positions(t)
    if pos is None or rows.shape[-1] <= int(pos.max()):
        return
    scores = rows[:, pos].float().clone()
    for k, q in enumerate(t.queries):  # a token's weight on itself is not a word it read
        scores[k, pos == int(q)] = 0.0
    t.arrays["text_scores"] = scores.numpy()
    t.meta["text_tokens"] = token_labels(adapter, t.batch, pos, t.row)
    t.meta["text_positions"] = pos.tolist()


def keep_layer_scores(t: Targets, layers: list[int], per_layer: torch.Tensor) -> None:
    """``per_layer`` ``[n_targets, n_layers, T]`` -> ``t.arrays["layer_scores"]`` at the image patches."""
    t.arrays["layer_scores"] = per_layer[:, :, t.patches].float().numpy()
    t.meta["layer_ids"] = [int(l) for l in layers]


__all__ = ["prompt_positions", "token_labels", "keep_text_scores", "keep_layer_scores"]
