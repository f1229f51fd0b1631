"""Answering one question about one image, optionally with visual-token pruning (``vlinterp ask``).

>>> answer(m, "scene.png", "what color is the circle?", prune="hybrid:0.25")
{'answer': 'red', 'tokens': ['red'], 'probs': [0.998]}
"""
from __future__ import annotations

import sys
import warnings


def pruner_for(spec):
    """A pruner from a spec such as ``"hybrid:0.25"`` (:func:`vlinterp.pruning.make_pruner`):
    checks the name and options without a model."""
    from ..pruning import make_pruner

    return make_pruner(spec)


def prepare_pruner(m, pruner, progress: bool | None = None) -> None:
    """Do now, with a progress bar, the slow one-time work a pruner would otherwise need first: the
    hybrid pruner's information horizon of ``m`` (measured once per model on shapes probe items)."""
    from ..core.errors import VlinterpWarning
    from ..pruning.information import known_horizon
    from .prune import resolve_horizon

    if getattr(pruner, "name", None) == "hybrid" and pruner.horizon is None and known_horizon(m) is None:
        warnings.warn(f"pruning with {pruner}: measuring the information horizon of {m.name} first "
                      "(once per model, on shapes probe items)", VlinterpWarning, stacklevel=2)
    resolve_horizon(m, pruner, progress=sys.stderr.isatty() if progress is None else bool(progress))


def answer(m, image, prompt: str, max_new_tokens: int = 12, prune=None, progress: bool | None = None) -> dict:
    """Greedy answer of VLM adapter ``m``: ``{"answer", "tokens", "probs"}`` (each answer token's
    probability under the model; tokens up to the first end-of-sequence). ``prune``: a pruning spec
    such as ``"hybrid:0.25"`` or a pruner (dropped visual tokens leave the sequence and the cache)."""
    import torch

    from ..core.errors import UnsupportedError

    if m.kind != "vlm":
        raise UnsupportedError(f"answering needs a vision-language model; {m.name!r} is a {m.family} ({m.kind}) model")
    b = m.prepare(images=[image], text=[prompt])
    if prune:
        from ..pruning import PrunedLM

        pruner = pruner_for(prune)
        prepare_pruner(m, pruner, progress)
        g = PrunedLM(m).generate(b, pruner, max_new_tokens=max_new_tokens)
    else:
        g = m.generate(b, max_new_tokens=max_new_tokens, keep_scores=True)
    toks, probs = [], []
    eos = m.tokenizer.eos_token_id
    for step, tid in enumerate(g.new_tokens[0].tolist()):
        if tid == eos:
            break
        p = torch.softmax(g.scores[step, 0].float(), -1)[tid].item()
        toks.append(m.tokenizer.decode([tid]).strip())
        probs.append(round(p, 6))
    return {"answer": g.texts[0], "tokens": toks, "probs": probs}


__all__ = ["answer", "pruner_for", "prepare_pruner"]
