"""The saliency registry's typed configs, gradcam's layer rule, and `vi.explain` / `viz.write_explanation`."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import vlinterp as vi
from vlinterp import saliency
from vlinterp.core.errors import ConfigError, LayerRangeError, UnknownNameError, UnsupportedError, VlinterpWarning
from vlinterp.saliency.explanation import Explanation


@pytest.fixture(scope="module")
def img():
    a = np.full((48, 64, 3), 40, np.uint8)
    a[8:24, 8:28], a[28:44, 36:60] = (220, 40, 40), (40, 80, 220)
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def llava():
    return vi.load("tiny:llava")


@pytest.fixture(scope="module")
def vit():
    return vi.load("tiny:vit")


# ------------------------------------------------------------------ registry
def test_registry_names_kinds_and_errors():
    assert saliency.names("diffusion") == ["daam"] and saliency.names("clip")[-1] == "msea"
    assert "tam" in saliency.names("vlm") and "tam" not in saliency.names("vit") and "clip_text" not in saliency.names("vlm")
    assert saliency.UnknownMethodError is UnknownNameError
    with pytest.raises(saliency.UnknownMethodError, match="unknown saliency method 'relevence'; did you mean relevancy"):
        saliency.get("relevence")
    assert saliency.options("rollout") == {"max_new_tokens": 8, "layers": None, "heads": None, "residual": 0.5}
    assert saliency.takes("gradcam", "layer") and not saliency.takes("gradcam", "layers")


def test_configs_are_typed_and_validated():
    # strings from a CLI spec are converted by the field's type; bad values are refused in our words
    c = saliency.config("rollout", layers="0+1", residual="0.25")
    assert c.layers == (0, 1) and c.residual == 0.25
    assert saliency.config("ig", baseline="0.5", absolute="true").baseline == 0.5
    bad = [("rollout", {"residual": 2.0}, "residual.*in \\[0, 1\\]"), ("ig", {"n_steps": 0}, "n_steps.*greater than 0"),
           ("ig", {"baseline": "grey"}, "baseline.*number or a tensor"), ("daam", {"steps": "many"}, "steps.*integer"),
           ("relevancy", {"score": "prob"}, "score must be one of"), ("msea", {"scales": (1.0, -1.0)}, "scales must be positive"),
           ("msea", {"method": "msea"}, "cannot wrap itself"), ("attention", {"layer": 1}, "unknown option.*layer; options: max_new_tokens, layers, heads")]
    for name, opts, match in bad:
        with pytest.raises(ConfigError, match=match):
            saliency.config(name, **opts)


def test_methods_take_options_or_a_config(vit, img):
    b = vit.prepare(images=[img])
    cls = saliency.get("rollout")
    by_opts = cls(vit, layers=[1], residual=0.3)
    by_cfg = saliency.create("rollout", vit, config=cls.Config(layers=(1,), residual=0.3))
    np.testing.assert_array_equal(by_opts.attribute(b).scores, by_cfg.attribute(b).scores)
    assert by_opts.attribute(b).meta["options"] == {"max_new_tokens": 8, "layers": [1], "heads": None, "residual": 0.3}
    with pytest.raises(ConfigError, match="either config= or options"):
        cls(vit, config=cls.Config(), residual=0.3)
    with pytest.raises(UnsupportedError, match="'daam' does not support vit"):
        saliency.create("daam", vit)


def test_gradcam_layer_rule(img):
    """layer = output of block `layer`: -1 on a CLS-pooled head gets no gradient and is refused
    (not an all-zero map); -2 (the default) is non-zero; out of range is an error."""
    for name, kw in (("tiny:vit", {}), ("tiny:clip", {"text": ["a red circle", "a blue square"]})):
        m = vi.load(name)
        b = m.prepare(images=[img], **kw)
        n = m.num_layers("vision")
        default = saliency.create("gradcam", m).attribute(b)
        minus2 = saliency.create("gradcam", m, layer=-2).attribute(b)
        assert default.meta["site"] == minus2.meta["site"] == f"vision.blocks.{n - 2}.resid"
        assert default.scores.max() > 0 and np.array_equal(default.scores, minus2.scores)
        with pytest.raises(ConfigError, match=rf"no gradient at 'vision.blocks.{n - 1}.resid'.*use a layer up to {n - 2}"):
            saliency.create("gradcam", m, layer=-1).attribute(b)
        with pytest.raises(LayerRangeError, match=f"layer {n} out of range"):
            saliency.create("gradcam", m, layer=n).attribute(b)


# ------------------------------------------------------------------- explain
def test_explain_llava_one_call(llava, img, tmp_path):
    ex = vi.explain(llava, img, "what color is the circle?", method="relevancy", compare=["attention"], max_new_tokens=3)
    assert isinstance(ex, Explanation) and ex.method == "relevancy" and ex.kind == "vlm"
    n = len(ex.tokens)
    assert 1 <= n <= 3 and ex.tokens == ex.targets and len(ex.probs) == n and all(0 < p <= 1 for p in ex.probs)
    assert [name for name, _ in ex.views] == ["relevancy", "attention"]
    assert ex.result.scores.shape == (n, 16) and len(ex.maps) == n and ex.answer_map.shape == (48, 64)
    np.testing.assert_allclose(ex.answer_map, np.mean(ex.maps, 0), rtol=1e-6)
    # the same maps as the method called on its own with the same answer
    direct = saliency.create("relevancy", llava).attribute(llava.prepare(images=[img], text=["what color is the circle?"]),
                                                           target=ex.info["answer_token_ids"])
    np.testing.assert_allclose(ex.result.scores, direct.scores, rtol=1e-5, atol=1e-7)
    assert vi.viz.overlay(ex).shape == (48, 64, 3)
    rec = vi.viz.write_explanation(ex, tmp_path / "out", heatmap=tmp_path / "heat.npy")
    assert json.loads((tmp_path / "out" / "result.json").read_text()) == rec
    assert rec["targets"] == ex.targets and rec["answer"] == ex.answer and len(rec["files"]["tokens"]) == n
    assert np.load(tmp_path / "heat.npy").shape == (48, 64)
    assert sorted(os.listdir(tmp_path / "out")) == [".vlinterp-manifest.json", "overlay.png", "report.html", "result.json", "tokens"]


def test_explain_layers_and_per_layer(vit, img):
    ex = vi.explain(vit, img, method="rollout", layers=[1], per_layer=True, target=2)
    assert ex.answer == vit.class_names()[2] and ex.result.meta["layers"] == [1]
    assert [name for name, _ in ex.views] == ["rollout", "rollout / layer 0", "rollout / layer 1"]
    np.testing.assert_array_equal(ex.views[0][1].scores, ex.views[2][1].scores)
    with pytest.raises(ConfigError, match="takes no list of layers"):
        vi.explain(vit, img, method="gradcam", layers=[0, 1])
    with pytest.raises(ConfigError, match="unknown option"):
        vi.explain(vit, img, method="rollout", residul=0.2)
    # options go to the main method; compared methods get those they take
    ex = vi.explain(vit, img, method="rollout", compare=["attention"], residual=0.2, heads=[0])
    (_, ro), (_, at) = ex.views
    assert ro.meta["options"]["residual"] == 0.2 and ro.meta["options"]["heads"] == at.meta["options"]["heads"] == [0]


def test_explain_warns_about_crops(llava):
    wide = Image.fromarray(np.zeros((40, 800, 3), np.uint8))
    with pytest.warns(VlinterpWarning, match="sees only 40x40 pixels of it at x 380..420"):
        ex = vi.explain(llava, wide, "what is it?", method="attention", max_new_tokens=1)
    assert len(ex.notes) == 1 and ex.answer_map.shape == (40, 800)
