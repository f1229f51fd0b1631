"""The rows attention-based methods keep beside the image map: each layer's own map
(``arrays["layer_scores"]``) and the prompt tokens' scores (``arrays["text_scores"]``)."""
import numpy as np
import pytest
import torch

import vlinterp as vi
from vlinterp import saliency
from vlinterp.saliency.relevancy import relevance_maps


@pytest.fixture(scope="module")
def llava():
    return vi.load("tiny:llava")


@pytest.fixture(scope="module")
def batch(llava, pil_image_module):
    return llava.prepare(images=[pil_image_module], text=["what color is the square?"])


@pytest.fixture(scope="module")
def pil_image_module():
    from PIL import Image

    a = np.full((128, 128, 3), 30, np.uint8)
    a[20:50, 20:50] = (220, 40, 40)
    a[70:110, 60:100] = (50, 90, 230)
    return Image.fromarray(a)


ANSWER = "red blue"  # two answer tokens, teacher-forced


@pytest.mark.parametrize("name", ["attention", "relevancy"])
def test_layer_scores_are_the_one_layer_maps(llava, batch, name):
    full = saliency.create(name, llava).attribute(batch, target=ANSWER)
    ls = full.arrays["layer_scores"]
    assert ls.shape == (2, 2, full.scores.shape[1]) and full.meta["layer_ids"] == [0, 1]
    for l in (0, 1):
        one = saliency.create(name, llava, layers=[l]).attribute(batch, target=ANSWER)
        np.testing.assert_allclose(ls[:, l], one.scores, rtol=1e-5, atol=1e-8)
    assert not np.allclose(ls[:, 0], ls[:, 1])
    if name == "attention":  # the map over all layers is their mean
        np.testing.assert_allclose(ls.mean(1), full.scores, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", ["attention", "rollout", "relevancy"])
def test_text_scores_read_the_prompt(llava, batch, name):
    r = saliency.create(name, llava).attribute(batch, target=ANSWER)
    toks, pos = r.meta["text_tokens"], r.meta["text_positions"]
    assert toks[:5] == ["what", "color", "is", "the", "square"] and len(pos) == len(toks)
    ts = r.arrays["text_scores"]
    assert ts.shape == (2, len(toks)) and np.isfinite(ts).all() and (ts != 0).any()
    last = pos.index(int(batch.layout.span("last", 0)[0]))
    assert ts[0, last] == 0.0  # the first answer token's query is the last prompt token: its self-weight is left out
    if name == "relevancy":  # the relevance rows of the same run, read at the prompt
        m = saliency.create(name, llava)
        t = m.resolve(batch, ANSWER)
        _, maps = relevance_maps(llava, t, None, None, score=m.score)
        want = torch.stack([R[q, torch.as_tensor(pos)] for q, R in zip(t.queries, maps)]).numpy()
        want[0, last] = 0.0
        np.testing.assert_allclose(ts, want, rtol=1e-5, atol=1e-9)


def test_vision_stream_keeps_no_text_scores():
    m = vi.load("tiny:vit")
    from PIL import Image

    r = saliency.create("attention", m).attribute(m.prepare(images=[Image.new("RGB", (64, 64), (200, 30, 30))]))
    assert "text_scores" not in r.arrays and "layer_scores" in r.arrays


def test_report_views_from_the_rows(llava, batch, pil_image_module, monkeypatch):
    """The report's views carry the per-layer maps and prompt words; past MAX_LAYER_MAPS the strip
    keeps only the answer's maps; a single answer row among several targets is shown first."""
    from vlinterp.viz import report

    r = saliency.create("relevancy", llava).attribute(batch, target=ANSWER)
    v = report.view_from_result("relevancy", r, pil_image_module, answer_rows=[0, 1])
    assert v.start == "all" and v.all_label == "answer (mean of 2)" and len(v.layers) == 2
    assert all(len(L["overlays"]) == 2 and all(L["overlays"]) and L["all"] for L in v.layers)
    assert v.text["tokens"] == r.meta["text_tokens"] and np.allclose(v.text["all"], r.arrays["text_scores"].mean(0), rtol=1e-3)
    monkeypatch.setattr(report, "MAX_LAYER_MAPS", 3)
    small = report.view_from_result("relevancy", r, pil_image_module, answer_rows=[0, 1])
    assert all(L["overlays"] == [None, None] and L["all"] for L in small.layers)
    one = report.view_from_result("relevancy", r, pil_image_module, answer_rows=[1])
    assert one.all is None and one.start == 1
    html = report.report_html(pil_image_module, [one])
    assert f'src="{one.overlays[1]}"' in html and 'id="tok-1" data-k="1" aria-pressed="true"' in html
