"""Method x family matrix (issue 28): every method on every tiny model (:mod:`vlinterp.eval.matrix`).

Each cell either runs end to end (a finite, non-empty map / effect / reconstruction that changes
the output / pruned run that keeps fewer image tokens) or raises ``UnsupportedError`` whose
message names why. Which cells are refused is pinned below: a method that stops running on a
family, or starts running where it should not, fails the test. The fast lane runs a part (see
``_fast``), the slow lane the rest."""
import functools

import pytest

from vlinterp.core.errors import UnsupportedError
from vlinterp.eval import matrix as M

ENC = set(M.ENCODERS)
VLM = set(M.VLMS)
TILED = {"llava-next", "llava-onevision", "internvl", "smolvlm"}
NO_CLS = {"llava-onevision", "gemma3", "paligemma", "smolvlm"}

# (method prefix or name, models) -> a fragment of the reason UnsupportedError must give
REFUSED = [
    ("saliency:clip_text", VLM | {"vit", "dinov2"}, "supports: clip"),
    ("saliency:tam", ENC, "supports: vlm"),
    ("trace:text-noise", ENC, "text noise needs a language model"),
    ("prune:", ENC, "needs a vision-language model"),
    ("prune:visionzip", {"qwen3-vl"}, "DeepStack"),          # Qwen2/2.5-VL: ranked by attention received
    ("prune:hybrid(visionzip)", {"qwen3-vl"}, "DeepStack"),
    ("prune:visionzip", NO_CLS, "has no CLS token"),
    ("prune:hybrid(visionzip)", NO_CLS, "has no CLS token"),
    ("prune:visionzip", {"llava-next", "internvl"}, "one vision crop per image"),
    ("prune:hybrid(visionzip)", {"llava-next", "internvl"}, "one vision crop per image"),
    ("steer:", ENC, "steering needs a vlm model"),
    ("audit", ENC, "do not answer questions"),
    ("audit", {"paligemma"}, "cannot take a prompt without an image"),
]


def refused(method: str, model: str) -> str | None:
    """The reason fragment the cell must raise, ``None`` where it must run."""
    for name, models, why in REFUSED:
        hit = method.startswith(name) if name.endswith(":") else method == name
        if hit and model in models:
            return why
    return None


@functools.lru_cache(maxsize=None)
def _adapter(model):
    from vlinterp.adapters.registry import load

    return load(f"tiny:{model}")


METHODS = list(M.methods())
# fast lane: every refusal (they fail before any work), every pruning cell, and every cell on one
# model of each layout kind (llava-1.5, Qwen's packed M-RoPE, Gemma 3's bidirectional image
# blocks, a ViT). The rest (prototypes included: a probe fit, ~4 s a model) runs in the slow lane.
FAST_MODELS = ("llava", "qwen2.5-vl", "gemma3", "vit")
CELLS = [(meth, model) for model in M.MODELS for meth in METHODS]


def _fast(meth, model):
    if meth == "prototypes":  # a probe fit per model: slow lane (tests/test_prototypes.py covers a ViT fast)
        return False
    return refused(meth, model) is not None or meth.startswith("prune:") or model in FAST_MODELS


FAST = [c for c in CELLS if _fast(*c)]
SLOW = [c for c in CELLS if not _fast(*c)]


def _check(meth, model):
    why = refused(meth, model)
    a = _adapter(model)
    if why is None:
        note = M.methods()[meth](a)
        assert isinstance(note, str) and note
    else:
        with pytest.raises(UnsupportedError, match=why):
            M.methods()[meth](a)


@pytest.mark.parametrize("meth,model", FAST, ids=[f"{m}-{f}" for m, f in FAST])
def test_cell(meth, model):
    _check(meth, model)


@pytest.mark.slow
@pytest.mark.parametrize("meth,model", SLOW, ids=[f"{m}-{f}" for m, f in SLOW])
def test_cell_slow(meth, model):
    _check(meth, model)


def test_every_method_family_is_in_the_matrix():
    """Every registered saliency method (DAAM: diffusion only), corruption, pruning and steering method has
    a column, and the table marks refusals with their reason."""
    from vlinterp.pruning import PRUNERS
    from vlinterp.saliency import REGISTRY
    from vlinterp.tracing import CORRUPTIONS

    want = {f"saliency:{n}" for n in REGISTRY.names() if n not in M.NOT_IN_MATRIX}
    want |= {f"trace:{n}" for n in CORRUPTIONS.names()} | {f"prune:{n}" for n in PRUNERS.names()}
    from vlinterp.steering import STEERING

    want |= {f"steer:{n}" for n in STEERING.names()} | {"trace:tokens", "sae:harvest+splice", "prototypes", "audit"}
    assert {"steer:iri", "steer:save", "steer:probe", "steer:ground", "steer:vcd", "steer:meandiff"} <= want
    assert want <= set(METHODS)
    table = M.markdown({("audit", "llava"): (True, "8 fields"), ("audit", "clip"): (False, "no questions"),
                        ("prune:random", "llava"): (False, "no questions"), ("prune:random", "clip"): (False, "no questions")})
    assert "| audit | ✓ | ✗1 |" in table and "| prune:random | ✗1 | ✗1 |" in table and "1. no questions" in table
