"""Metrics on known maps (a stub Result with hand-set patch scores), baselines, and the
score_fn builders on tiny models."""
import numpy as np
import pytest

from vlinterp.core.layout import LayoutBuilder, Tile
from vlinterp.core.result import Result
from vlinterp.data import make_scene
from vlinterp import metrics as M


def stub_result(scores, grid=(4, 4), size=(128, 128), box=None, targets=None) -> Result:
    """A Result like a method would return: CLS + a patch grid over the whole image."""
    lb = LayoutBuilder()
    lb.special(1, span="cls", image_index=0)
    lb.image_grid(0, *grid)
    lb.add_image(0, size, [Tile(grid, box or (0.0, 0.0, float(size[1]), float(size[0])))])
    lb.end_row()
    s = np.atleast_2d(np.asarray(scores, np.float32))
    return Result("stub", {"scores": s}, lb.build(), targets or [f"t{k}" for k in range(len(s))])


def scene_with_objects(min_objects=2):
    for i in range(200):
        s = make_scene("test-metrics", 0, i)
        if len(s.objects) >= min_objects and all(o.mask.sum() > 150 for o in s.objects):
            return s
    raise AssertionError("no scene")


def oracle(scene, k, grid=(4, 4)) -> Result:
    """Patch scores = coverage of object k (a perfect map at patch resolution)."""
    from vlinterp.data import patch_coverage

    cov = patch_coverage(scene, grid)[k]
    return stub_result(cov.reshape(-1), grid)


@pytest.fixture(scope="module")
def scene():
    return scene_with_objects()


def test_pointing_game_oracle_and_inverse(scene):
    for k, o in enumerate(scene.objects):
        res = oracle(scene, k, (8, 8))
        assert M.pointing_game(res, o.mask) == 1.0
        assert M.pointing_game(o.mask.astype(float), o.mask, tolerance=0) == 1.0
        assert M.pointing_game(-res.heatmap(0), o.mask) == 0.0


def test_pointing_game_ties_and_tolerance():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    assert M.pointing_game(np.ones((10, 10)), mask, tolerance=0) == pytest.approx(0.5)
    m = np.zeros((10, 10))
    m[0, 6] = 1  # two pixels right of the mask
    assert M.pointing_game(m, mask, tolerance=0) == 0.0
    assert M.pointing_game(m, mask, tolerance=2) == 1.0
    with pytest.raises(M.faithfulness.ShapeMismatchError):
        M.pointing_game(m, np.zeros((5, 5), bool))


def test_energy_and_iou(scene):
    o = scene.objects[0]
    exact = o.mask.astype(np.float32)
    assert M.energy_pointing_game(exact, o.mask) == pytest.approx(1.0)
    assert M.obj_iou(exact, o.mask) == pytest.approx(1.0)
    assert M.obj_iou(np.zeros((128, 128)), o.mask) == 0.0
    assert M.energy_pointing_game(1 - exact, o.mask) == pytest.approx(0.0)
    res = oracle(scene, 0, (8, 8))
    rnd = M.random_map(res, seed=1)
    assert M.obj_iou(res, o.mask) > M.obj_iou(rnd, o.mask)
    assert M.energy_pointing_game(res, o.mask) > M.energy_pointing_game(rnd, o.mask)


def test_baselines_shapes(scene):
    res = stub_result(np.zeros((2, 16)))
    r, c = M.random_map(res, seed=0), M.centre_map(res)
    assert r.scores.shape == c.scores.shape == (2, 16) and r.layout is res.layout
    assert np.array_equal(M.random_map(res, seed=0).scores, r.scores)
    h = c.heatmap(0)
    assert h.shape == (128, 128) and h[64, 64] == pytest.approx(h.max()) and h[0, 0] < h.max()
    assert M.centre_map((50, 60)).shape == (50, 60) and M.random_map(np.zeros((5, 7))).shape == (5, 7)
    centre = np.zeros((128, 128), bool)
    centre[60:68, 60:68] = True
    assert M.pointing_game(M.centre_map((128, 128)), centre) == 1.0


def _colour_score(scene, k):
    """Fake model score: fraction of object k's pixels still showing its colour."""
    o = scene.objects[k]
    rgb = np.asarray(o.rgb, np.float32)

    def fn(images):
        d = np.abs(images.astype(np.float32) - rgb).sum(-1)
        return (d[:, o.mask] < 30).mean(1)

    return fn


@pytest.mark.parametrize("order", ["pixel", "patch"])
def test_deletion_insertion_oracle_beats_random(scene, order):
    k = 0
    fn = _colour_score(scene, k)
    res, rnd = oracle(scene, k, (8, 8)), M.random_map(oracle(scene, k, (8, 8)), seed=3)
    calls = []
    counted = lambda imgs: (calls.append(len(imgs)), fn(imgs))[1]  # noqa: E731
    d_or = M.deletion_auc(scene.image, res, counted, steps=16, order=order, batch_size=8)
    assert sum(calls) == 17 and max(calls) <= 8
    d_rn = M.deletion_auc(scene.image, rnd, fn, steps=16, order=order)
    i_or = M.insertion_auc(scene.image, res, fn, steps=16, order=order)
    i_rn = M.insertion_auc(scene.image, rnd, fn, steps=16, order=order)
    assert d_or < 0.7 * d_rn and i_or > i_rn
    curve = M.perturbation_curve(scene.image, res, fn, "deletion", steps=10, order=order)
    assert curve["fractions"][0] == 0 and curve["fractions"][-1] == 1 and len(curve["scores"]) == 11
    assert curve["scores"][0] == pytest.approx(1.0) and curve["scores"][-1] < 0.2


def test_perturbation_images_endpoints(scene):
    fr, imgs = M.perturbation_images(scene.image, np.random.default_rng(0).random((128, 128)), "deletion", steps=4)
    assert imgs.shape == (5, 128, 128, 3) and imgs.dtype == np.uint8
    assert np.array_equal(imgs[0], scene.image) and np.array_equal(imgs[-1], M.blur(scene.image))
    fr, ins = M.perturbation_images(scene.image, np.zeros((128, 128)), "insertion", steps=4)
    assert np.array_equal(ins[0], M.blur(scene.image)) and np.array_equal(ins[-1], scene.image)
    # half the pixels replaced at the midpoint
    assert (np.any(ins[2] != ins[0], -1)).mean() <= 0.5 + 1e-6
    with pytest.raises(ValueError):
        M.perturbation_images(scene.image, np.zeros((128, 128)), "sideways")
    with pytest.raises(M.faithfulness.ShapeMismatchError):
        M.perturbation_images(scene.image, np.zeros((64, 64)), "deletion")


def test_auc_and_evaluate(scene):
    assert M.auc([0, 0.5, 1], [1, 1, 1]) == pytest.approx(1.0)
    assert M.auc([0, 1], [1, 0]) == pytest.approx(0.5)
    o = scene.objects[0]
    ev = M.evaluate(oracle(scene, 0), o.mask, image=scene.image, score_fn=_colour_score(scene, 0), steps=8)
    assert set(ev) == {"pointing_game", "energy_pointing_game", "obj_iou", "deletion_auc", "insertion_auc"}
    assert all(np.isfinite(v) for v in ev.values())
    assert np.isnan(M.evaluate(oracle(scene, 0), o.mask)["deletion_auc"])


def test_score_fn_builders_tiny_models(scene):
    import vlinterp as vi

    imgs = np.stack([scene.image, M.blur(scene.image), scene.image])
    llava = vi.load("tiny:llava")
    fn = M.llava_score_fn(llava, "what color is the circle?", "red", batch_size=2)
    p = fn(imgs)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1)) and p[0] == pytest.approx(p[2], abs=1e-5)
    p2 = M.llava_score_fn(llava, "what color is the circle?", "circle", prefix="red")(imgs[:1])
    assert p2.shape == (1,) and 0 <= p2[0] <= 1
    vit = vi.load("tiny:vit")
    for act in ("softmax", "sigmoid"):
        q = M.vit_score_fn(vit, 1, activation=act)(imgs)
        assert q.shape == (3,) and np.all((q >= 0) & (q <= 1))
    with pytest.raises(vi.VlinterpError):
        M.vit_score_fn(vit, "no such class")
    clip = vi.load("tiny:clip")
    r = M.clip_score_fn(clip, "a red circle", ["a blue square", "a green cross"])(imgs)
    assert r.shape == (3,) and np.all((r >= 0) & (r <= 1))
    cos = M.clip_score_fn(clip, "a red circle")(imgs[:2])
    assert cos.shape == (2,) and np.all(np.abs(cos) <= 1 + 1e-5)
    with pytest.raises(vi.VlinterpError):
        M.score_fn_for(vi.load("tiny:diffusion"))


def test_pixel_heatmap_of_a_result_is_used(scene):
    """A method that keeps a pixel map at the image size (MSEA: arrays["heatmap"]) is measured on it."""
    o = scene.objects[0]
    res = stub_result(np.zeros(16))
    res.arrays["heatmap"] = o.mask[None].astype(np.float32)
    assert np.array_equal(M.result_map(res), o.mask.astype(np.float32))
    assert M.obj_iou(res, o.mask) == pytest.approx(1.0) and M.pointing_game(res, o.mask, tolerance=0) == 1.0


@pytest.mark.parametrize("family", ["llava-next", "internvl"])
def test_position_coverage_judges_each_tile_in_its_own_box(family):
    """On tiled layouts (tiny LLaVA-NeXT at 336x672: a base and a high-resolution grid over the
    image; tiny InternVL: crops with their own boxes and a thumbnail) each position's coverage is the
    share of its own tile's cell: summed over a tile's positions, coverage x cell area gives the
    mask's area inside that tile's box; a one-tile layout gives mask_coverage of its grid."""
    import vlinterp
    from vlinterp.metrics.coverage import mask_coverage, position_coverage

    m = vlinterp.load(f"tiny:{family}")
    H, W = 336, 672
    mask = np.zeros((1, H, W), bool)
    mask[40:200, 380:620] = True  # inside the right half only
    lay = m.prepare(images=[np.zeros((H, W, 3), np.uint8)], text=["what is it?"]).layout
    g = lay.images[0]
    assert len({(t.grid, t.box) for t in g.tiles}) >= 2
    cov = position_coverage(lay, mask, 0)
    pos = lay.image_positions(0).numpy()
    tiles = lay.tile[g.batch_row, pos]
    for t, tile in enumerate(g.tiles):
        x0, y0, x1, y1 = tile.box
        rows, cols = tile.grid
        cell = (x1 - x0) / cols * (y1 - y0) / rows
        inside = mask[0, max(0, int(y0)):int(min(H, y1)), max(0, int(x0)):int(min(W, x1))].sum()
        assert cov[0, tiles == t].sum() * cell == pytest.approx(inside, rel=1e-4), (t, tile)
    left = [t for t, tile in enumerate(g.tiles) if tile.box[2] <= W / 2]
    assert all(cov[0, tiles == t].max() == 0 for t in left)  # no left-half tile sees the object
    assert family != "internvl" or left
    one = vlinterp.load("tiny:llava")
    lay1 = one.prepare(images=[np.zeros((H, H, 3), np.uint8)], text=["what is it?"]).layout
    sq = mask[:, :, 300:636]
    assert np.array_equal(position_coverage(lay1, sq, 0), mask_coverage(sq, (H, H), lay1.grid(0)).reshape(1, -1))
