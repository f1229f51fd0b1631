"""Hallucination detection (vlinterp.detect, vlinterp.eval.detect, `vlinterp detect`): the AUROC /
AUPRC metrics against scikit-learn, the detectors' values checked by hand on shapes-llava, claims
from answers and captions, bad CLI input (one row each). The acceptance on held-out claims is in test_detect_pope.py and
test_detect_chair.py (slow; separate files so two test workers can run them side by side)."""
import numpy as np
import pytest
import torch

from cli_util import assert_bad_input, run_cli


# ------------------------------------------------------------------------------ metrics
def test_auroc_auprc_match_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from vlinterp.metrics.detection import auprc, auroc, roc_curve

    rng = np.random.RandomState(0)
    for trial in range(5):
        y = rng.rand(60) < 0.3
        s = rng.randint(0, 8, 60) + y * rng.rand(60) * 3  # ties and partial separation
        assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert auprc(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    y = np.array([0, 0, 1, 1], bool)
    assert auroc([0.1, 0.2, 0.8, 0.9], y) == 1.0 and auroc([0.9, 0.8, 0.2, 0.1], y) == 0.0
    assert auroc([1, 1, 1, 1], y) == 0.5
    assert np.isnan(auroc([0.1, 0.2], [True, True]))
    fpr, tpr = roc_curve([0.1, 0.2, 0.8, 0.9], y)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and tpr[2] == 1 and fpr[2] == 0


def test_metrics_refuse_nan_and_shape():
    from vlinterp.core.errors import VlinterpError
    from vlinterp.metrics.detection import auroc

    with pytest.raises(VlinterpError, match="NaN"):
        auroc([0.1, float("nan")], [True, False])
    with pytest.raises(VlinterpError, match="3 scores for 2 labels"):
        auroc([0.1, 0.2, 0.3], [True, False])


# ------------------------------------------------------------------------------ claims
def test_find_mentions_and_vocabulary():
    from vlinterp.eval.detect import find_mentions, shapes_vocabulary

    v = shapes_vocabulary()
    assert v["red circles"] == "red circle" and v["blue squares"] == "blue square"
    got = find_mentions("A red circle and two Blue Squares, near a green.", v)
    assert got == [(1, 3, "red circle"), (5, 7, "blue square")]
    assert find_mentions("nothing here", v) == []


def test_registry_and_config_errors():
    from vlinterp import detect
    from vlinterp.core.errors import ConfigError, UnknownNameError

    assert set(detect.names()) == {"perceptual", "conflict", "decision", "margin", "ground", "sae"}
    assert detect.create("decision:layer=2,reduce=mean").config.reduce == "mean"
    with pytest.raises(UnknownNameError, match="did you mean margin"):
        detect.create("margn")
    with pytest.raises(ConfigError, match="cover must be in"):
        detect.config("ground:cover=0")
    assert detect.config("decision:layer=auto").layer == "auto" and detect.config("decision:layer=-2").layer == -2
    with pytest.raises(ConfigError, match="option 'layer' must be an integer"):
        detect.config("decision:layer=top")


# ------------------------------------------------------------------ detectors on the organism
@pytest.fixture(scope="module")
def pope_items():
    from vlinterp.eval import shapes

    return shapes.pope("detect-unit", 12, 3, neg_type="adversarial")


def _claims(items, answers):
    from vlinterp.core.items import Item

    return [Item(it.image, it.prompt, a, it.objects, it.id, "answer",
                 dict(it.meta, prefix="", claim=" ".join(it.meta["target"]), candidates=("yes", "no"),
                      hallucinated=it.answer == "no"))
            for it, a in zip(items, answers)]


def test_margin_and_decision_match_the_model_logits(shapes_llava, pope_items):
    """The last layer of the logit lens is the model's own output: the yes/no margin and the decision
    entropy recomputed from adapter.run's logits at the answer position."""
    from vlinterp import detect
    from vlinterp.detect.base import read_claims

    m = shapes_llava
    items = pope_items[:6]
    claims = _claims(items, ["yes"] * len(items))
    dets = {"margin": detect.create("margin"), "decision": detect.create("decision:layer=-1"),
            "perceptual": detect.create("perceptual:layer=-1,tokens=no")}
    vals = read_claims(m, claims, dets, batch_size=4)
    L = m.num_layers("lm")
    assert vals["margin"].shape == vals["decision"].shape == (len(claims), L)
    b = m.prepare(images=[c.image for c in claims], text=[c.prompt for c in claims])
    lp = torch.log_softmax(m.run(b).logits[:, -1].float(), -1).cpu()
    yes, no = m.token_id("yes"), m.token_id("no")
    want_margin = -(lp[:, yes] - lp[:, no]).numpy()
    got = np.array([detect.create("margin").scores(vals["margin"][i:i + 1]).values[0] for i in range(len(claims))])
    np.testing.assert_allclose(got, want_margin, atol=2e-3)
    np.testing.assert_allclose(vals["decision"][:, -1], -(lp.exp() * lp).sum(-1).numpy(), atol=2e-3)
    p_no = lp[:, no].exp().numpy()
    np.testing.assert_allclose(vals["perceptual"][:, -1], -(p_no * np.log(p_no) + (1 - p_no) * np.log(1 - p_no)), atol=2e-3)
    # the alternative set matters: over the whole vocabulary the early-layer margins differ (the
    # organism's last layer already puts yes/no on top, so there they agree)
    whole = read_claims(m, claims, {"margin": detect.create("margin:candidates=false")})["margin"]
    np.testing.assert_allclose(whole[:, -1], want_margin, atol=2e-3)
    assert (whole[:, 0] >= vals["margin"][:, 0] - 1e-6).all() and not np.allclose(whole[:, 0], vals["margin"][:, 0], atol=1e-3)


def test_conflict_is_image_minus_text_logprob(shapes_llava, pope_items):
    from vlinterp import detect
    from vlinterp.detect.base import read_claims

    m = shapes_llava
    claims = _claims(pope_items[:4], ["yes"] * 4)
    v = read_claims(m, claims, {"conflict": detect.create("conflict:layer=-1")})["conflict"]
    yes = m.token_id("yes")
    with_img = torch.log_softmax(m.run(m.prepare(images=[c.image for c in claims], text=[c.prompt for c in claims]))
                                 .logits[:, -1].float(), -1)[:, yes]
    text = torch.log_softmax(m.run(m.prepare(images=None, text=[c.prompt for c in claims])).logits[:, -1].float(), -1)[:, yes]
    np.testing.assert_allclose(v[:, -1], -(with_img - text).cpu().numpy(), atol=2e-3)
    assert np.ptp(v[:, -1]) > 1e-3  # the image changes the claim's probability, differently per item


def test_mention_prefix_and_claim_errors(shapes_llava, pope_items):
    from vlinterp.core.errors import DataError
    from vlinterp.core.items import Item
    from vlinterp.detect.base import ClaimRun

    it = pope_items[0]
    c = Item(it.image, "describe the image.", "red circle", it.objects, "x", "mention",
             {"prefix": "there is a", "claim": "red circle"})
    run = ClaimRun.make(shapes_llava, [c])
    toks = shapes_llava.tokenizer(" red circle", add_special_tokens=False)["input_ids"]
    assert run.tokens[0].tolist() == toks
    with pytest.raises(DataError, match="no answer words"):
        ClaimRun.make(shapes_llava, [Item(it.image, it.prompt, "", it.objects, "y", "answer", {})])


@pytest.mark.slow
def test_ground_probe_separates_present_from_absent(shapes_llava):
    """The grounding probe fitted on one split scores held-out claims of absent objects above present
    ones; scoring before fitting is refused."""
    from vlinterp import detect
    from vlinterp.core.errors import ConfigError
    from vlinterp.eval import shapes
    from vlinterp.metrics.detection import auroc

    fit = shapes.pope("detect-unit-fit", 24, 0, neg_type="adversarial")
    test = shapes.pope("detect-unit", 24, 5, neg_type="adversarial")
    claims = _claims(test, ["yes"] * len(test))
    g = detect.create("ground")
    with pytest.raises(ConfigError, match="fit the probe first"):
        g.score(shapes_llava, claims[:2])
    g.fit(shapes_llava, fit)
    s = g.score(shapes_llava, claims)
    y = np.array([c.meta["hallucinated"] for c in claims])
    assert 0 < y.sum() < len(y)
    assert auroc(s.values, y) >= 0.85


@pytest.mark.slow
def test_sae_detector_fits_and_scores(shapes_llava):
    from vlinterp import detect
    from vlinterp.eval import shapes
    from vlinterp.metrics.detection import auroc

    fit = shapes.pope("detect-unit-fit", 48, 0, neg_type="adversarial")
    test = shapes.pope("detect-unit", 24, 5, neg_type="adversarial")
    d = detect.create("sae:d_sae=128,k=8,steps=200")
    d.fit(shapes_llava, _claims(fit, ["yes"] * len(fit)))
    claims = _claims(test, ["yes"] * len(test))
    s = d.score(shapes_llava, claims)
    assert s.values.shape == (len(claims),) and d.meta["features"] > 0
    assert auroc(s.values, [c.meta["hallucinated"] for c in claims]) > 0.6


# ------------------------------------------------------------------------------------- CLI
ROWS = [
    (["detect", "--n", "0", "--json", "r.json"], r"--n: 0 must be a positive integer"),
    (["detect", "--fit-n", "-3", "--json", "r.json"], r"--fit-n: -3 must be a positive integer"),
    (["detect", "--detectors", "margn", "--json", "r.json"], r"unknown detector 'margn'; did you mean margin"),
    (["detect", "--detectors", "margin,margin", "--json", "r.json"], r"given twice"),
    (["detect", "--detectors", "ground[cover=0]", "--json", "r.json"], r"cover must be in"),
    (["detect", "--detectors", "decision[nosuch=1]", "--json", "r.json"], r"unknown option\(s\) nosuch"),
    (["detect", "--detectors", ",", "--json", "r.json"], r"at least one detector"),
    (["detect", "--kinds", "colour", "--json", "r.json"], r"unknown claim item kind 'colour'"),
    (["detect", "--dataset", "nosuch:x", "--json", "r.json"], r"--dataset"),
    (["detect", "--json", "dir.json"], r"--json:.*is a directory"),
    (["detect"], r"required: --json"),
    (["detect", "--json", "r.json", "--out", "mine"], r"--out:.*not empty"),
    (["detect", "--json", "r.json", "--out", "afile"], r"--out:.*not a directory"),
    (["detect", "--json", "r.json", "--fit-dataset", "shapes:test", "--fit-seed", "21"], r"same items"),
    (["detect", "--json", "r.json", "--dataset", "shapes:a:8:0", "--fit-dataset", "shapes:a:8:0", "--fit-seed", "3"],
     r"overlap"),
    (["detect", "--json", "r.json", "--batch", "0"], r"--batch: 0 must be a positive integer"),
]


@pytest.mark.parametrize("argv,match", ROWS, ids=[f"{i}" for i in range(len(ROWS))])
def test_detect_bad_input(argv, match, tmp_path, capsys, monkeypatch):
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("my work")
    (tmp_path / "afile").write_text("x")
    assert_bad_input(argv, tmp_path, capsys, monkeypatch, match=match)


def test_detect_help_has_every_option(capsys):
    code, out, _ = run_cli(["detect", "--help"], capsys)
    assert code == 0
    for flag in ("--dataset", "--kinds", "--detectors", "--fit-dataset", "--fit-n", "--json", "--out", "--batch"):
        assert flag in out


@pytest.mark.slow
def test_detect_cli_small_run(tmp_path, capsys, shapes_llava):
    """End to end on a few items: the table, the JSON with every claim's scores, the plot. The model is
    the default, the organism name "shapes-llava", loaded as the user's command loads it (the eval layer
    once took it for a path and refused it)."""
    import json

    code, out, err = run_cli(["detect", "--dataset", "shapes:detect-cli:16:1", "--fit-dataset", "shapes:detect-cli-fit:16:0",
                              "--kinds", "pope-adversarial", "--detectors", "margin,decision,ground", "--n", "16",
                              "--fit-n", "16", "--json", tmp_path / "r.json", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["model"] == "shapes-llava"
    t = res["tasks"]["pope-adversarial"]
    assert set(t["detectors"]) == {"margin", "decision", "ground"}
    assert len(t["items"]) == t["claims"] > 0 and set(t["items"][0]["scores"]) == {"margin", "decision", "ground"}
    assert len(t["detectors"]["decision"]["layer_auroc"]) == shapes_llava.num_layers("lm")
    assert (tmp_path / "o" / "detect.png").read_bytes()[:4] == b"\x89PNG" and "margin" in out
