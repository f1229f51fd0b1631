"""Attention and relevancy at real lengths: only the query rows a method reads (``attention(queries=)``),
scores in query chunks, and relevancy without the vision tower's autograd graph."""
import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp as vi
from vlinterp import saliency
from vlinterp.core import attention as core_attention


@pytest.fixture(scope="module")
def llava():
    return vi.load("tiny:llava")


@pytest.fixture(scope="module")
def batch(llava):
    a = np.full((64, 64, 3), 30, np.uint8)
    a[10:30, 10:30] = (220, 40, 40)
    return llava.prepare(images=[Image.fromarray(a)], text=["what color is the square?"], answer="red")


def test_attention_queries_are_the_full_maps_rows(llava, batch):
    full = llava.attention(batch, [0, 1])
    T = full[0].shape[-1]
    q = [T - 1, 3, -2]
    part = llava.attention(batch, [0, 1], queries=q)
    for l in (0, 1):
        assert part[l].shape == (1, full[l].shape[1], 3, T)
        torch.testing.assert_close(part[l], full[l][:, :, [T - 1, 3, T - 2]], rtol=1e-5, atol=1e-6)
    vis = llava.attention(batch, [0], stream="vision")
    torch.testing.assert_close(llava.attention(batch, [0], stream="vision", queries=[0])[0], vis[0][:, :, :1])


def test_attention_queries_on_a_vision_encoder():
    m = vi.load("tiny:vit")
    b = m.prepare(images=[Image.new("RGB", (64, 64), (200, 30, 30))])
    full = m.attention(b, [1])[1]
    torch.testing.assert_close(m.attention(b, [1], queries=[0, -1])[1], full[:, :, [0, full.shape[-2] - 1]])


def test_chunked_scores_equal_one_pass(llava, batch, monkeypatch):
    """Long sequences compute their scores a few query rows at a time (bounded memory), same values."""
    want = llava.attention(batch, [1])[1]
    T = want.shape[-1]
    monkeypatch.setattr(core_attention, "CHUNK_ELEMENTS", want.shape[1] * T * 3)  # 3 rows per chunk
    got = llava.attention(batch, [1])[1]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(llava.attention(batch, [1], queries=list(range(T - 5, T)))[1], want[:, :, -5:], rtol=1e-6, atol=1e-7)


def test_relevancy_keeps_no_vision_graph_and_the_same_scores(llava, batch):
    """Relevancy explains language-model attention: the tower ran with its autograd graph (pixels
    with grad, parameters requiring grad) although no gradient is needed there."""
    from vlinterp.saliency.relevancy import relevance_maps

    m = saliency.create("relevancy", llava)
    seen = []
    with llava.raw_hooks() as h:
        h.forward("vision.blocks.0.resid", lambda mod, a, out: seen.append((out[0] if isinstance(out, tuple) else out).requires_grad))
        h.forward("blocks.0.resid", lambda mod, a, out: seen.append((out[0] if isinstance(out, tuple) else out).requires_grad))
        r = m.attribute(batch, target="red")
    assert seen[-2:] == [False, True], seen  # the tower outside the graph, the language model in it
    assert all(p.requires_grad for p in llava.model.parameters())  # the freeze is undone
    t = m.resolve(batch, "red")
    _, maps = relevance_maps(llava, t, None, None, score=m.score)  # the full [T, T] maps, graph from the pixels
    want = np.stack([R[q, t.patches].numpy() for q, R in zip(t.queries, maps)])
    np.testing.assert_allclose(r.scores, want, rtol=1e-4, atol=1e-7)
    assert np.abs(want).max() > 0


def test_relevancy_layers_subset_starts_the_graph_there(llava, batch):
    m = saliency.create("relevancy", llava, layers=[1])
    seen = []
    with llava.raw_hooks() as h:
        h.forward("blocks.0.resid", lambda mod, a, out: seen.append((out[0] if isinstance(out, tuple) else out).requires_grad))
        r = m.attribute(batch, target="red")
    assert seen == [False]
    one = saliency.create("relevancy", llava).attribute(batch, target="red")
    np.testing.assert_allclose(r.scores, one.arrays["layer_scores"][:, 1], rtol=1e-4, atol=1e-7)
