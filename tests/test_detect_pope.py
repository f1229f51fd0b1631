"""Issue 32's detection acceptance on held-out POPE-adversarial "yes" answers of shapes-llava (slow)."""
import pytest


@pytest.fixture(scope="module")
def pope_acceptance(shapes_llava):
    from vlinterp.eval.detect import run

    return run(shapes_llava, "shapes:test", kinds=("pope-adversarial",), n=256, seed=21, fit_dataset="shapes:detect-fit",
               fit_n=512, fit_seed=0)["tasks"]["pope-adversarial"]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the fixture fits an SAE and two probes on 512 items: ~6-12 min on two shared cores
def test_acceptance_pope_adversarial(pope_acceptance):
    """Issue 32: on held-out POPE-adversarial "yes" answers of shapes-llava (256 items of shapes:test
    seed 21, fitted on 512 of shapes:detect-fit) the best score separates hallucinated from correct
    answers with AUROC >= 0.95 and beats the model's own yes/no margin by >= 0.05. Measured: ground
    0.974, sae 0.956, conflict 0.884, perceptual 0.853, decision 0.852, margin 0.853 (153 claims,
    27 hallucinated)."""
    t = pope_acceptance
    a = {n: r["auroc"] for n, r in t["detectors"].items()}
    assert t["hallucinated"] >= 20 and t["claims"] - t["hallucinated"] >= 20
    best = max(a, key=a.get)
    assert best != "margin" and a[best] >= 0.95 and a[best] - a["margin"] >= 0.05, a
    assert a["ground"] >= 0.95 and a["sae"] >= 0.92 and a["conflict"] >= a["margin"] + 0.01, a
    for n in ("perceptual", "conflict", "decision", "margin"):  # the logit lens: a trajectory, late layers separate
        traj = t["detectors"][n]["layer_auroc"]
        assert traj[-1] > 0.8 and traj[-1] > traj[0] + 0.2, (n, traj)
