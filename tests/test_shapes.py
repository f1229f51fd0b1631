"""Tests for the shapes world (vlinterp.data.shapes / questions / renderings / export)."""
from __future__ import annotations

import json
import os
import re
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vlinterp.data import shapes as S
from vlinterp.data import questions as Q
from vlinterp.data import renderings as R
from vlinterp.core.errors import OutputError
from vlinterp.data.export import export_split, load_split

N_PRIOR = 2000


@pytest.fixture(scope="module")
def scenes():
    return S.make_split("test", 300, seed=0)


@pytest.fixture(scope="module")
def train2000():
    return S.make_split("train", N_PRIOR, seed=0)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    p = np.pad(mask, r)
    h, w = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= p[r + dy:r + dy + h, r + dx:r + dx + w]
    return out


# --------------------------------------------------------------- constants / seeding
def test_constants():
    assert S.SHAPES == ["circle", "square", "triangle", "cross"]
    assert S.COLOURS == ["red", "green", "blue", "yellow", "purple", "orange"]
    assert S.COLOUR_RGB["blue"] == (50, 90, 230)
    assert len(S.PAIRS) == 24 and len(set(S.PAIRS)) == 24
    assert S.PAIRS[:5] == [("red", "circle"), ("red", "square"), ("red", "triangle"),
                           ("red", "cross"), ("green", "circle")]
    assert S.NUM_WORDS == ["zero", "one", "two", "three", "four"]
    assert S.partner("red", "circle") == ("blue", "square")
    assert S.partner("blue", "square") == ("red", "circle")
    assert S.partner("yellow", "cross") == ("green", "triangle")
    assert S.partner("orange", "circle") == ("purple", "square")
    assert S.partner("red", "cross") is None
    assert len(S.PRIOR_PAIRS) == 3


def test_determinism_and_names():
    a, b = S.make_scene("val", 3, 17), S.make_scene("val", 3, 17)
    assert np.array_equal(a.image, b.image)
    assert [o.pair for o in a.objects] == [o.pair for o in b.objects]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.objects, b.objects))
    split = S.make_split("val", 5, seed=3)
    stream = S.iter_scenes("val", seed=3, start=2)
    for i in range(2, 5):
        s = next(stream)
        assert s.index == i and s.split == "val" and s.seed == 3
        assert np.array_equal(s.image, split[i].image)
    assert S.split_seed("train") == zlib.crc32(b"train")
    train = S.make_split("train", 10)
    for other in ("test", "val", "heldout"):
        o = S.make_split(other, 10)
        assert sum(np.array_equal(x.image, y.image) for x, y in zip(train, o)) == 0
    other_seed = S.make_split("train", 10, seed=1)
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(train, other_seed))


# --------------------------------------------------------------- scene invariants
def test_scene_invariants(scenes):
    counts = set()
    for s in scenes:
        assert s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
        assert 0 <= s.background <= 60
        assert 1 <= len(s.objects) <= 4
        counts.add(len(s.objects))
        union = np.zeros((128, 128), bool)
        for o in s.objects:
            assert o.shape in S.SHAPES and o.colour in S.COLOURS
            assert o.mask.shape == (128, 128) and o.mask.dtype == bool
            x0, y0, x1, y1 = o.bbox
            ys, xs = np.nonzero(o.mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
            assert 16 <= x1 - x0 <= 40 and 16 <= y1 - y0 <= 40
            nominal = np.array(S.COLOUR_RGB[o.colour])
            assert np.all(np.abs(np.array(o.rgb) - nominal) <= 20)
            px = s.image[o.mask].astype(int)
            assert np.all(px == np.array(o.rgb))
            assert np.all(np.abs(px - nominal) <= 20)
            assert not (union & o.mask).any()
            union |= o.mask
        for i, a in enumerate(s.objects):          # 2-pixel gap between objects
            for b in s.objects[i + 1:]:
                assert not (_dilate(a.mask, 2) & b.mask).any()
        assert np.all(s.image[~union] == s.background)
        assert s.pil().size == (128, 128) and s.pil().mode == "RGB"
    assert counts == {1, 2, 3, 4}
    assert {o.shape for s in scenes for o in s.objects} == set(S.SHAPES)


def test_labels_and_index_map(scenes):
    for s in scenes[:100]:
        v = s.label_vector()
        assert v.dtype == np.float32 and v.shape == (24,)
        assert set(np.nonzero(v)[0]) == {S.PAIRS.index(o.pair) for o in s.objects}
        for c, sh in S.PAIRS:
            assert s.has(c, sh) == any(o.pair == (c, sh) for o in s.objects)
        for sh in S.SHAPES:
            assert s.count(sh) == sum(o.shape == sh for o in s.objects)
        m = S.object_index_map(s)
        assert m.dtype == np.int16 and m.shape == (128, 128)
        assert (m == -1).sum() == 128 * 128 - sum(o.mask.sum() for o in s.objects)
        for k, o in enumerate(s.objects):
            assert np.array_equal(m == k, o.mask)


# --------------------------------------------------------------- patch coverage
def test_patch_coverage_full_image(scenes):
    for s in scenes[:50]:
        cov = S.patch_coverage(s, grid=(4, 4))
        assert cov.dtype == np.float32 and cov.shape == (len(s.objects), 4, 4)
        assert cov.min() >= 0 and cov.sum(0).max() <= 1 + 1e-6
        for k, o in enumerate(s.objects):
            assert abs(cov[k].sum() * 32 * 32 - o.mask.sum()) < 1e-3
            assert abs(cov[k, 1, 2] - o.mask[32:64, 64:96].mean()) < 1e-6
    s = scenes[0]
    cov = S.patch_coverage(s, grid=(16, 16))
    assert np.allclose(cov.sum((1, 2)) * 64, [o.mask.sum() for o in s.objects], atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 20),
       x0=st.floats(-20, 60), y0=st.floats(-20, 60),
       w=st.floats(10, 150), h=st.floats(10, 150), idx=st.integers(0, 40))
def test_patch_coverage_any_box(rows, cols, x0, y0, w, h, idx):
    s = S.make_scene("cov", 0, idx)
    cov = S.patch_coverage(s, grid=(rows, cols), box=(x0, y0, x0 + w, y0 + h))
    assert cov.shape == (len(s.objects), rows, cols)
    assert cov.min() >= -1e-6 and cov.max() <= 1 + 1e-5
    # integer-pixel box: total covered area equals mask area inside the box
    bx0, by0 = int(np.floor(x0)), int(np.floor(y0))
    bx1, by1 = bx0 + int(w), by0 + int(h)
    cov = S.patch_coverage(s, grid=(rows, cols), box=(bx0, by0, bx1, by1))
    cell = (bx1 - bx0) / cols * (by1 - by0) / rows
    for k, o in enumerate(s.objects):
        inside = o.mask[max(by0, 0):max(by1, 0), max(bx0, 0):max(bx1, 0)].sum()
        assert abs(cov[k].sum() * cell - inside) < 1e-2


# --------------------------------------------------------------- language prior
def _partner_rate(scs):
    num = den = 0
    for s in scs:
        present = set(s.pairs())
        for p in present:
            q = S.partner(*p)
            if q is not None:
                den += 1
                num += q in present
    return num / den


@pytest.mark.slow
def test_prior_strength(train2000):
    rate = _partner_rate(train2000)
    assert 0.7 <= rate <= 0.9, rate
    no_prior = S.make_split("train", N_PRIOR, seed=0, prior=False)
    assert _partner_rate(no_prior) < 0.2
    freq = S.pair_frequencies()
    members = {p for ab in S.PRIOR_PAIRS for p in ab}
    assert min(freq[p] for p in members) > max(freq[p] for p in S.PAIRS if p not in members)


# --------------------------------------------------------------- questions
PRES = re.compile(r"^is there a (\w+) (\w+)\?$")
COL = re.compile(r"^what color is the (\w+)\?$")
CNT = re.compile(r"^how many (\w+) are there\?$")


def test_caption_ordering():
    s = S.make_scene("test", 0, 0)
    objs = [S.Obj("circle", "red", (220, 40, 40), (50, 0, 70, 20), s.objects[0].mask),
            S.Obj("square", "blue", (50, 90, 230), (10, 30, 30, 50), s.objects[0].mask),
            S.Obj("cross", "green", (40, 180, 60), (90, 60, 110, 80), s.objects[0].mask)]
    s2 = S.Scene(s.image, s.background, objs, 0, "x", 0)
    assert Q.caption(s2) == "a blue square, a red circle and a green cross."
    s2.objects = objs[:2]
    assert Q.caption(s2) == "a blue square and a red circle."
    s2.objects = objs[:1]
    assert Q.caption(s2) == "a red circle."
    assert R.as_text(s2) == "the image shows a red circle."


def test_questions_against_ground_truth(scenes):
    rng = np.random.default_rng(0)
    for i, s in enumerate(scenes[:150]):
        qas = Q.make_questions(s, rng, neg_type=Q.NEG_TYPES[i % 3])
        kinds = [q.kind for q in qas]
        assert kinds.count("caption") == 1
        pres = [q for q in qas if q.kind == "presence"]
        assert sum(q.answer == "yes" for q in pres) == sum(q.answer == "no" for q in pres)
        for q in qas:
            if q.kind == "presence":
                c, sh = PRES.match(q.question).groups()
                assert (c, sh) == q.target
                assert q.answer == ("yes" if s.has(c, sh) else "no")
                if q.answer == "yes":
                    assert q.neg_type is None and s.objects[q.obj_index].pair == (c, sh)
                else:
                    assert q.neg_type == Q.NEG_TYPES[i % 3] and q.obj_index is None
            elif q.kind == "colour":
                sh = COL.match(q.question).group(1)
                assert s.count(sh) == 1 and q.target == sh
                assert q.answer == s.objects[q.obj_index].colour
                assert s.objects[q.obj_index].shape == sh
            elif q.kind == "count":
                word = CNT.match(q.question).group(1)
                sh = q.target
                assert word == ("crosses" if sh == "cross" else sh + "s")
                assert q.answer == S.NUM_WORDS[s.count(sh)]
            else:
                assert q.question == "describe the image." and q.answer == Q.caption(s)
        asked_colour = {q.target for q in qas if q.kind == "colour"}
        assert asked_colour == {sh for sh in S.SHAPES if s.count(sh) == 1}


def test_pope_negatives(scenes):
    rng = np.random.default_rng(1)
    popular = Q.popular_order()
    n_partner = 0
    for s in scenes[:150]:
        present = set(s.pairs())
        for nt in Q.NEG_TYPES:
            negs = [q for q in Q.presence_questions(s, rng, nt) if q.answer == "no"]
            assert len(negs) == len(present)
            assert all(not s.has(*q.target) for q in negs)
            assert len({q.target for q in negs}) == len(negs)
        pop = [q.target for q in Q.presence_questions(s, rng, "popular") if q.answer == "no"]
        assert pop == [p for p in popular if p not in present][:len(pop)]
        adv = [q.target for q in Q.presence_questions(s, rng, "adversarial")
               if q.answer == "no"]
        partners = {S.partner(*p) for p in present} - {None} - present
        if partners:
            n_partner += 1
            assert set(adv[:len(partners)]) <= partners
            assert adv[0] in partners
        for t in adv[len(partners):]:
            assert any(t[0] == c or t[1] == sh for c, sh in present)
    assert n_partner > 10


def test_pope_split():
    for nt in Q.NEG_TYPES:
        data = Q.pope_split("test", 40, seed=0, neg_type=nt)
        assert len(data) == 40
        assert sum(qa.answer == "yes" for _, qa in data) == 20
        for s, qa in data:
            assert qa.answer == ("yes" if s.has(*qa.target) else "no")
            if qa.answer == "no":
                assert qa.neg_type == nt
                partners = {S.partner(*p) for p in s.pairs()} - {None} - set(s.pairs())
                if nt == "adversarial":  # always an absent partner, on a scene of the separate stream
                    assert qa.target in partners and s.index >= Q.ADV_STREAM
                else:
                    assert s.index < 40
    a = Q.pope_split("test", 10, 0, "random")
    b = Q.pope_split("test", 10, 0, "random")
    assert [q.question for _, q in a] == [q.question for _, q in b]


# --------------------------------------------------------------- renderings
def test_renderings(scenes):
    s = next(x for x in scenes if len(x.objects) == 3)
    im = R.render_words(s)
    assert im.size == (128, 128) and im.mode == "RGB"
    assert np.asarray(im).max() > 0
    long = R.render_words("the image shows " + ", ".join(["a purple triangle"] * 8) + ".")
    assert long.size == (128, 128) and long.mode == "RGB"
    assert R.render_words("x", size=64).size == (64, 64)
    b = np.asarray(R.blank_image(30))
    assert b.shape == (128, 128, 3) and np.all(b == 30)
    rng = np.random.default_rng(0)
    for x in scenes[:40]:
        img, text, shown = R.mixed(x, rng, return_indices=True)
        arr = np.asarray(img)
        assert arr.shape == (128, 128, 3)
        n = len(x.objects)
        assert (1 <= len(shown) < n) if n >= 2 else shown == [0]
        for k, o in enumerate(x.objects):
            if k in shown:
                assert np.all(arr[o.mask] == o.rgb)
            else:
                assert np.all(arr[o.mask] == x.background)
                assert f"a {o.colour} {o.shape}" in text


# --------------------------------------------------------------- export / asset
def test_export_roundtrip(tmp_path):
    out = tmp_path / "shapes"
    path = export_split(out, "heldout", 64, seed=0)
    assert path == os.path.join(str(out), "heldout.jsonl")
    pngs = sorted(p for p in os.listdir(out / "images") if p.endswith(".png"))
    assert len(pngs) == 64 and pngs[0] == "heldout_0000.png"
    assert [p for p in os.listdir(out) if p.startswith(".tmp")] == []
    lines = open(path).read().splitlines()
    assert len(lines) == 64
    rec = json.loads(lines[5])
    assert rec["index"] == 5 and rec["split"] == "heldout"
    loaded = load_split(path)
    ref = S.make_split("heldout", 64, seed=0)
    for (s, qas), r in zip(loaded, ref):
        assert np.array_equal(s.image, r.image)
        assert [(o.pair, o.rgb, o.bbox) for o in s.objects] == \
            [(o.pair, o.rgb, o.bbox) for o in r.objects]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(s.objects, r.objects))
        assert qas[-1].answer == Q.caption(r)
    # re-export with fewer scenes removes the stale images it wrote, never the user's
    (out / "images" / "heldout_9999.png").write_bytes(b"mine")
    (out / "images" / "heldout_0063.png").write_bytes(b"mine now")  # the user replaced one of ours
    export_split(out, "heldout", 3, seed=0)
    assert sorted(p for p in os.listdir(out / "images") if p.endswith(".png")) == \
        ["heldout_0000.png", "heldout_0001.png", "heldout_0002.png", "heldout_0063.png", "heldout_9999.png"]
    assert (out / "images" / "heldout_0063.png").read_bytes() == b"mine now"
    # a user's file where the export would write stops it before anything is written
    (out / "images" / "heldout_0003.png").write_bytes(b"mine")
    before = (out / "heldout.jsonl").read_bytes()
    with pytest.raises(OutputError, match="heldout_0003.png"):
        export_split(out, "heldout", 5, seed=0)
    assert (out / "heldout.jsonl").read_bytes() == before
    assert (out / "images" / "heldout_0003.png").read_bytes() == b"mine"


def test_plot_samples(tmp_path):
    p = S.plot_samples(tmp_path / "w.png", n=8, seed=0)
    im = Image.open(p)
    assert im.mode == "RGB" and im.size[0] > 4 * 256 and im.size[1] > 2 * 256


def test_committed_heldout_matches_generator():
    root = os.path.join(os.path.dirname(__file__), "..", "datasets", "shapes")
    path = os.path.join(root, "heldout.jsonl")
    if not os.path.exists(path):
        pytest.skip("datasets/shapes/heldout.jsonl not exported")
    loaded = load_split(path)
    assert len(loaded) == 64
    for (s, _), r in zip(loaded[:16], S.make_split("heldout", 16, seed=0)):
        assert np.array_equal(s.image, r.image)
