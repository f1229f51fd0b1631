"""Issue 32's detection acceptance on CHAIR mentions in shapes-llava's captions (slow)."""
import numpy as np
import pytest


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_acceptance_chair_mentions(shapes_llava):
    """Issue 32: AUROC of every detector on CHAIR mentions (objects named in greedy captions of 128
    held-out scenes, fitted on 256 others). Few mentions are hallucinated (measured: 9 of 340), so
    only the grounding probe is held to a floor; measured: ground 0.975, conflict 0.773, margin
    0.724 (over the whole vocabulary), sae 0.699, decision 0.596, perceptual 0.468."""
    from vlinterp.eval.detect import run

    t = run(shapes_llava, "shapes:test", kinds=("caption",), n=128, seed=21, fit_dataset="shapes:detect-fit", fit_n=256,
            fit_seed=0)["tasks"]["caption"]
    assert t["hallucinated"] >= 5 and t["claims"] >= 200
    a = {n: r["auroc"] for n, r in t["detectors"].items()}
    assert set(a) == {"perceptual", "conflict", "decision", "margin", "ground", "sae"} and all(np.isfinite(list(a.values())))
    assert a["ground"] >= 0.9 and a["ground"] > a["margin"] + 0.1, a
    assert all(it["prefix"] or it["words"] for it in t["items"])
