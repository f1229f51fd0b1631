import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp
from vlinterp.core.errors import LayerRangeError, PromptError, ShapeMismatchError
from vlinterp.tracing import GROUPS, patch_mask, position_groups, trace, trace_naive


@pytest.fixture(scope="module")
def llava():
    torch.set_num_threads(1)
    m = vlinterp.load("tiny:llava")
    img = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))
    return m, m.prepare(images=[img], text=["is there a red circle?"])


@pytest.fixture(scope="module")
def vit():
    m = vlinterp.load("tiny:vit")
    img = Image.fromarray((np.random.RandomState(1).rand(64, 64, 3) * 255).astype("uint8"))
    return m, m.prepare(images=[img])


def _target(m, b):
    return int(m.run(b).logits[0, int(b.layout.span("last", 0)[0])].argmax())


def test_full_restore_is_one_and_nothing_is_zero(llava):
    m, b = llava
    L = m.num_layers()
    T = b.layout.shape[1]
    r = trace(m, b, _target(m, b), positions={"all": list(range(T)), "none": []}, layers=[L - 2], samples=2)
    assert r.arrays["rr"].shape == (1, 1, 2)
    assert abs(r.arrays["te"][0]) > 1e-6  # the noise does change the prediction
    assert abs(r.arrays["rr"][0, 0, 0] - 1.0) <= 1e-6
    assert abs(r.arrays["rr"][0, 0, 1]) <= 1e-6
    assert r.meta["positions"] == ["all", "none"]


def test_batched_equals_naive_llava(llava):
    m, b = llava
    kw = dict(components=("resid", "mlp", "attn"), positions="groups", samples=2, window=1)
    fast = trace(m, b, "yes", batch_size=5, **kw)
    slow = trace_naive(m, b, "yes", **kw)
    assert fast.arrays["rr"].shape == (3, m.num_layers(), len(GROUPS))
    assert fast.meta["positions"] == list(GROUPS)
    for k in ("p_patch", "p_corrupt", "p_clean"):
        assert np.abs(fast.arrays[k] - slow.arrays[k]).max() <= 1e-5, k
    assert np.all(np.isfinite(fast.arrays["rr"]))


def test_batched_equals_naive_llava_vision_window(llava):
    m, b = llava
    kw = dict(stream="vision", positions="tokens", samples=1, window=2)
    fast = trace(m, b, "yes", batch_size=7, **kw)
    slow = trace_naive(m, b, "yes", **kw)
    assert np.abs(fast.arrays["p_patch"] - slow.arrays["p_patch"]).max() <= 1e-5


def test_batched_equals_naive_vit(vit):
    m, b = vit
    target = int(m.run(b).logits[0].argmax())
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    kw = dict(components=("resid", "attn"), positions="groups", samples=2, object_mask=mask)
    fast = trace(m, b, target, batch_size=4, **kw)
    slow = trace_naive(m, b, target, **kw)
    assert fast.meta["positions"] == ["early-visual", "object-visual", "late-visual", "cls"]
    assert np.abs(fast.arrays["rr"] - slow.arrays["rr"]).max() <= 1e-5
    assert np.abs(fast.arrays["p_patch"] - slow.arrays["p_patch"]).max() <= 1e-5
    # full residual restore at the layer before the last block recovers exactly
    full = trace(m, b, target, positions="all", layers=[m.num_layers() - 2], samples=1)
    assert abs(full.arrays["rr"][0, 0, 0] - 1.0) <= 1e-6


def test_groups_partition(llava):
    m, b = llava
    lay = b.layout
    g = position_groups(lay, object_mask=(2, 2, 30, 30))
    allpos = np.concatenate([v.numpy() for v in g.values()])
    assert len(allpos) == len(set(allpos.tolist())) == int((lay.modality[0] != 0).sum())
    assert set(g["object-visual"].tolist()) | set(g["early-visual"].tolist()) | set(g["late-visual"].tolist()) == set(lay.image_positions(0).tolist())
    assert g["last"].tolist() == lay.span("last", 0).tolist()
    H, W = lay.images[0].size
    pix = np.zeros((H, W), bool)
    pix[: H // 2, : W // 2] = True
    pm = patch_mask(lay, pix)
    rows, cols = lay.grid(0)
    assert pm.reshape(rows, cols)[: rows // 2, : cols // 2].all() and pm.sum() == (rows // 2) * (cols // 2)


def test_errors(llava, vit):
    m, b = llava
    with pytest.raises(PromptError):
        trace(m, b, "zzzqqqxxnotaword", samples=1)
    with pytest.raises(PromptError):
        trace(m, b, 10 ** 7, samples=1)
    with pytest.raises(LayerRangeError):
        trace(m, b, "yes", layers=[m.num_layers()], samples=1)
    with pytest.raises(ShapeMismatchError):
        trace(m, b, "yes", object_mask=np.zeros((3, 5), bool), samples=1)
    H, W = b.layout.images[0].size
    with pytest.raises(ShapeMismatchError):
        trace(m, b, "yes", object_mask=(0, 0, W + 10, H), samples=1)
    mv, bv = vit
    with pytest.raises(PromptError):
        trace(mv, bv, 999, samples=1)
    with pytest.raises(PromptError):
        trace(mv, bv, "no-such-class", samples=1)


def test_corruptions_batched_equal_naive(llava):
    from vlinterp.tracing import Interchange, TextNoise, text_positions

    m, b = llava
    obj = text_positions(m, b, "red circle")
    other = Image.fromarray((np.random.RandomState(5).rand(40, 50, 3) * 255).astype("uint8"))
    kw = dict(components=("resid", "attn"), positions="groups", object_positions=obj)
    for corr in ("pixel-noise", "blur", TextNoise(obj), Interchange(other)):
        fast = trace(m, b, "yes", corruption=corr, samples=2, batch_size=6, **kw)
        slow = trace_naive(m, b, "yes", corruption=corr, samples=2, **kw)
        name = fast.meta["corruption"]["kind"]
        assert np.abs(fast.arrays["p_patch"] - slow.arrays["p_patch"]).max() <= 1e-5, name
        assert abs(fast.arrays["te"][0]) > 1e-7, name  # each corruption moves P[yes]
        assert fast.meta["samples"] == (1 if name in ("blur", "interchange") else 2)
    assert fast.meta["group_positions"]["text-object"] == obj


def test_interchange_with_itself_changes_nothing(llava):
    from vlinterp.tracing import Interchange

    m, b = llava
    r = trace(m, b, "yes", corruption=Interchange(b.images[0]), samples=1)
    assert abs(r.arrays["p_corrupt"][0] - r.arrays["p_clean"][0]) <= 1e-6
    assert np.all(r.arrays["rr"] == 0)  # no total effect: RR is defined as 0


def test_text_noise_errors(llava, vit):
    from vlinterp.core.errors import UnsupportedError
    from vlinterp.tracing import TextNoise, text_positions

    m, b = llava
    with pytest.raises(PromptError):
        text_positions(m, b, "purple triangle")
    with pytest.raises(PromptError):  # image tokens are not text
        trace(m, b, "yes", corruption=TextNoise(b.layout.image_positions(0)[:2].tolist()), samples=1)
    with pytest.raises(ShapeMismatchError):
        trace(m, b, "yes", corruption=TextNoise([10 ** 4]), samples=1)
    mv, bv = vit
    with pytest.raises(UnsupportedError):
        trace(mv, bv, 0, corruption=TextNoise([1]), samples=1)
    r = trace(mv, bv, 0, corruption="blur", samples=1)  # vision-only blur works
    assert np.all(np.isfinite(r.arrays["rr"]))
