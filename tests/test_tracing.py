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
    # the last layer at positions other than the last: exactly 0 without running (the naive loop,
    # which runs them, reads rounding noise); the last position there and every earlier layer run
    inert = fast.arrays["ie"][:, -1, :-1]
    assert np.all(inert == 0.0) and np.abs(slow.arrays["ie"][:, -1, :-1]).max() <= 1e-6
    assert np.all(fast.arrays["ie"][:, -1, -1] != 0.0)


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


@pytest.mark.slow
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


def _rome_loop(m, b, target, comp, groups, window, samples, seed, scale=3.0):
    """Causal tracing written from scratch, ROME-style: Gaussian noise (``scale`` x the std of the
    image patch embeddings) at ``vision.embed``, then for each layer ``l`` the clean output of
    ``blocks.{j}.{comp}`` restored at a group's positions for ``j`` in ROME's window
    ``range(max(0, l - window // 2), min(L, l - (-window // 2)))``. Returns RR ``[L, groups]``."""
    L = m.num_layers()
    last = int(b.layout.span("last", 0)[0])
    tid = m.token_id(target)
    prob = lambda logits: float(logits[0, last].float().softmax(-1)[tid])  # noqa: E731
    clean = m.run(b, capture=["vision.embed"] + [f"blocks.{j}.{comp}" for j in range(L)]).cache
    emb = clean["vision.embed"]
    img = torch.as_tensor(b.layouts["vision"].modality == 2)[..., None].expand_as(emb)
    std = float(emb[img].float().std())
    p_clean = prob(m.run(b).logits)
    p_corr, p_patch = [], np.zeros((samples, L, len(groups)))
    for s in range(samples):
        z = torch.randn(tuple(emb.shape), generator=torch.Generator().manual_seed(seed * 1000003 + s)) * scale * std * img
        noise = {"vision.embed": lambda t, layout, z=z: t + z.to(t.dtype)}
        p_corr.append(prob(m.run(b, edits=noise).logits))
        for l in range(L):
            for g, pos in enumerate(groups.values()):
                def restore(t, layout, site):
                    t = t.clone()
                    t[:, pos] = clean[site][:, pos].to(t.dtype)
                    return t
                sites = [f"blocks.{j}.{comp}" for j in range(max(0, l - window // 2), min(L, l - (-window // 2)))]
                edits = {**noise, **{site: (lambda t, layout, site=site: restore(t, layout, site)) for site in sites}}
                p_patch[s, l, g] = prob(m.run(b, edits=edits).logits)
    pc = float(np.mean(p_corr))
    return (p_patch.mean(0) - pc) / (p_clean - pc)


@pytest.mark.parametrize("window", [2, 3, 4])
def test_window_follows_rome_at_the_edge_layers(shapes_llava, window):
    """``window=W`` restores ROME's window, cut short at the first and last layers; ``window_mode="slide"``
    (the earlier behaviour, kept as an option) keeps W layers there and so differs at the edges only."""
    from vlinterp.eval import shapes as S
    from vlinterp.tracing import window_layers

    m = shapes_llava
    it = S.present_objects("test", 1, 11)[0]
    b = m.prepare(images=[it.image], text=[it.prompt])
    pos = b.layout.image_positions(0).numpy()
    groups = {"patches": pos[::3].tolist(), "last": b.layout.span("last", 0).tolist()}
    L = m.num_layers()
    ours = trace(m, b, "yes", components="resid", positions=groups, window=window, samples=2, seed=4)
    ref = _rome_loop(m, b, "yes", "resid", groups, window, samples=2, seed=4)
    assert np.abs(ours.arrays["rr"][0] - ref).max() <= 1e-5
    assert ours.meta["window_mode"] == "rome"
    slide = trace(m, b, "yes", components="resid", positions=groups, window=window, samples=2, seed=4, window_mode="slide")
    edge = [l for l in range(L) if window_layers(l, window, L, "rome") != window_layers(l, window, L, "slide")]
    inner = [l for l in range(L) if l not in edge]
    assert edge == [l for l in range(L) if l < window // 2 or l > L - 1 - (-(-window // 2) - 1)]
    assert np.abs(slide.arrays["rr"][0, inner] - ours.arrays["rr"][0, inner]).max() <= 1e-6
    assert np.abs(slide.arrays["rr"][0, edge] - ours.arrays["rr"][0, edge]).max() > 1e-3  # the modes really differ there


def test_window_layers():
    from vlinterp.tracing import window_layers

    assert [window_layers(l, 3, 4) for l in range(4)] == [[0, 1], [0, 1, 2], [1, 2, 3], [2, 3]]
    assert [window_layers(l, 3, 4, "slide") for l in range(4)] == [[0, 1, 2], [0, 1, 2], [1, 2, 3], [1, 2, 3]]
    assert [window_layers(l, 10, 6) for l in (0, 5)] == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5]]  # ROME's default window
    assert window_layers(2, 1, 4) == window_layers(2, 1, 4, "slide") == [2]


def test_corruption_registry(llava):
    from vlinterp.core.errors import ConfigError, UnknownNameError
    from vlinterp.tracing import CORRUPTIONS, Blur, ImageNoise, make_corruption

    assert CORRUPTIONS.names() == ["noise", "pixel-noise", "blur", "text-noise", "interchange"]
    assert make_corruption("noise", 2.0).describe() == {"kind": "noise", "scale": 2.0, "space": "embed"}
    assert make_corruption("pixel-noise").describe() == {"kind": "noise", "scale": 3.0, "space": "pixel"}
    assert make_corruption("blur:sigma=2").sigma == 2.0 and make_corruption("noise:scale=5", 2.0).scale == 5.0
    assert ImageNoise(4.0).config == CORRUPTIONS.config("noise", scale=4) and Blur().sigma == 4.0
    assert make_corruption("text-noise", positions=[3, 4]).positions.tolist() == [3, 4]
    with pytest.raises(UnknownNameError, match="did you mean blur"):
        make_corruption("blurr")
    with pytest.raises(ConfigError, match="sigma must be > 0"):
        make_corruption("blur:sigma=-1")
    with pytest.raises(ConfigError, match="unknown option"):
        make_corruption("noise:sigma=1")
    with pytest.raises(PromptError, match="second image"):
        make_corruption("interchange")
    m, b = llava
    r = trace(m, b, "yes", components="resid", positions="all", samples=1, corruption="blur:sigma=2")
    assert r.meta["corruption"] == {"kind": "blur", "sigma": 2.0}


def test_object_mask_is_judged_in_each_tile():
    """LLaVA-NeXT's base grid and high-resolution grid each get the object from their own cells
    (the base tile's mask tiled over the high-res grid put most "object" positions off the box)."""
    m = vlinterp.load("tiny:llava-next")
    b = m.prepare(images=[Image.new("RGB", (96, 48))], text=["is there a red circle?"])
    g = b.layout.images[0]
    pos = b.layout.image_positions(0)
    tile, col = b.layout.tile[g.batch_row, pos], b.layout.col[g.batch_row, pos]
    assert [t.grid for t in g.tiles] == [(4, 4), (4, 8)]
    right = patch_mask(b.layout, (48, 0, 96, 48))  # the right half of the image
    assert right.shape == (len(pos),) and right.sum() == 8 + 16
    assert np.array_equal(right[tile == 0], col[tile == 0] >= 2)   # base: 4x4 over the whole image
    assert np.array_equal(right[tile == 1], col[tile == 1] >= 4)   # high-res: 4x8 over the whole image
    # a patch mask of the base grid reaches the high-res grid through the pixels it covers
    base = np.zeros((4, 4), bool)
    base[:, 2:] = True
    assert np.array_equal(patch_mask(b.layout, base), right)
    # a one-tile model (LLaVA-1.5) reads the patch grid as given, row-major
    one = vlinterp.load("tiny:llava")
    b1 = one.prepare(images=[Image.new("RGB", (48, 48))], text=["is there a red circle?"])
    rows, cols = b1.layout.images[0].tiles[0].grid
    grid = np.random.default_rng(0).random((rows, cols)) > 0.5
    assert np.array_equal(patch_mask(b1.layout, grid), grid.reshape(-1))


def test_curves_refuse_a_model_that_answers_nothing_right(llava, monkeypatch):
    """With no presence question answered "yes", localisation and the last-token curves name the
    problem instead of averaging an empty list."""
    from vlinterp.eval import trace_curves as tc

    m, _ = llava
    monkeypatch.setattr(tc, "_answers_yes", lambda adapter, b: False)
    with pytest.raises(ValueError, match="none of the 2 presence questions"):
        tc.localisation(m, n=2, seed=11, samples=1)
    with pytest.raises(ValueError, match="nothing to trace"):
        tc.last_token_curves(m, n=2, seed=11, samples=1)


def test_cells_nothing_reads_are_exactly_zero(shapes_llava):
    """The last layer at positions other than the last: run batched from the resumed layer they came
    out ~1e-8 from rounding (shapes-llava, scene 1 of seed 11); now they are not run and read 0."""
    from vlinterp.eval.trace import shapes_items
    from vlinterp.tracing import text_positions

    it = shapes_items(2, 11, "test")[1]
    b = shapes_llava.prepare(images=[it.image], text=[it.prompt])
    kw = dict(components=("attn", "mlp", "resid"), samples=3, seed=int(it.meta["scene"].index), object_mask=it.objects[0].box,
              object_positions=text_positions(shapes_llava, b, it.meta["object"]))
    ie = trace(shapes_llava, b, "yes", **kw).arrays["ie"]
    assert np.all(ie[:, -1, :-1] == 0.0) and np.all(ie[:, -1, -1] != 0.0)
    assert np.count_nonzero(ie[:, :-1]) == ie[:, :-1].size  # every earlier cell is run
