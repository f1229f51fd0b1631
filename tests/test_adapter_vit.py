"""ViT adapter on tiny timm ``VisionTransformer`` and transformers ``ViTForImageClassification`` models."""
import math
import socket

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

import vlinterp as vi
from vlinterp.adapters.vit import VitAdapter, save_tiny
from vlinterp.core.errors import ImageError, LayerRangeError, LoadError, PromptError, UnknownSiteError
from vlinterp.core.hooks import count_hooks

VARIANTS = ["vit", "vit-hf"]


@pytest.fixture(scope="module", params=VARIANTS)
def m(request):
    return vi.load(f"tiny:{request.param}")


def _img(h=100, w=160, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _gradient(h=100, w=160):
    """R encodes x, G encodes y (both linear, 0..255 over the image)."""
    x = (np.arange(w) + 0.5) / w * 255
    y = (np.arange(h) + 0.5) / h * 255
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.round(np.broadcast_to(x, (h, w)))
    a[..., 1] = np.round(np.broadcast_to(y[:, None], (h, w)))
    return Image.fromarray(a)


# ------------------------------------------------------------------ layout
def test_layout_counts_grid_and_order(m):
    b = m.prepare(images=[_img(), _img(64, 64, 1)])
    L = b.layout
    assert b.main == "vision" and set(b.layouts) == {"vision"}
    assert L.shape == (2, 17)
    for i in range(2):
        assert L.counts(i) == {"pad": 0, "text": 0, "image": 16, "special": 1}
        assert L.grid(i) == (4, 4)
        pos = L.image_positions(i)
        assert len(pos) == 4 * 4 and pos.tolist() == list(range(1, 17))
        assert L.row[i, pos].tolist() == [r for r in range(4) for _ in range(4)]
        assert L.col[i, pos].tolist() == list(range(4)) * 4
        assert L.span("cls", i).tolist() == [0]
    assert b.inputs["pixel_values"].shape == (2, 3, 64, 64)
    assert L.images[0].size == (100, 160) and L.images[1].size == (64, 64)


def test_layout_register_tokens_and_other_grid():
    m = vi.load("tiny:vit", reg_tokens=4, patch_size=8, img_size=48)
    L = m.prepare(images=[_img()]).layout
    assert L.counts(0) == {"pad": 0, "text": 0, "image": 36, "special": 5}
    assert L.grid(0) == (6, 6)
    assert L.span("cls", 0).tolist() == [0] and L.span("registers", 0).tolist() == [1, 2, 3, 4]
    assert L.image_positions(0).tolist() == list(range(5, 41))
    out = m.run(m.prepare(images=[_img()]), capture="vision.blocks.1.resid")
    assert out.cache["vision.blocks.1.resid"].shape == (1, 41, 64)


def test_timm_centre_crop_box_non_square():
    """160x100 original: shortest edge -> floor(64 / crop_pct), centre crop 64: the box is the
    crop mapped back to original pixels, and the heat map is zero outside it."""
    m = vi.load("tiny:vit")
    b = m.prepare(images=[_img(100, 160)])
    crop_pct = m.data_config["crop_pct"]
    s = math.floor(64 / crop_pct)  # 71
    rw = int(s * 160 / 100)  # 113
    left, top = int(round((rw - 64) / 2)), int(round((s - 64) / 2))
    want = (left * 160 / rw, top * 100 / s, (left + 64) * 160 / rw, (top + 64) * 100 / s)
    box = b.layout.images[0].tiles[0].box
    assert box == pytest.approx(want)
    scores = torch.zeros(16)
    scores[3] = 1.0  # row 0, col 3: top-right patch of the crop
    h = b.layout.to_heatmap(scores, 0)
    assert h.shape == (100, 160)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    assert h[:, : x0 - 1].max() == 0 and h[:, x1 + 1 :].max() == 0 and h[y1 + 1 :, :].max() == 0
    ys, xs = np.unravel_index(h.argmax(), h.shape)
    cw, ch = (box[2] - box[0]) / 4, (box[3] - box[1]) / 4
    assert box[0] + 3 * cw - 1 <= xs <= box[2] and box[1] <= ys <= box[1] + ch + 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_box_matches_pixels(variant):
    """The box is what the pixels show: on an x/y gradient image, each model-input column
    shows the original x at the box position it maps to (rows likewise)."""
    m = vi.load(f"tiny:{variant}")
    b = m.prepare(images=[_gradient(100, 160)])
    x0, y0, x1, y1 = b.layout.images[0].tiles[0].box
    if variant == "vit-hf":
        assert (x0, y0, x1, y1) == (0.0, 0.0, 160.0, 100.0)  # plain resize: the whole image
    px = b.inputs["pixel_values"][0] * 0.5 + 0.5  # both tiny processors normalise with mean = std = 0.5
    j = torch.arange(8, 56)
    want_x = (x0 + (j + 0.5) * (x1 - x0) / 64) / 160
    want_y = (y0 + (j + 0.5) * (y1 - y0) / 64) / 100
    assert torch.allclose(px[0, 32, j], want_x.float(), atol=0.02)
    assert torch.allclose(px[1, j, 32], want_y.float(), atol=0.02)


def test_hf_heatmap_whole_image():
    m = vi.load("tiny:vit-hf")
    b = m.prepare(images=[_img(100, 160)])
    s = torch.zeros(16)
    s[3] = 1.0
    h = b.layout.to_heatmap(s, 0)
    assert h.shape == (100, 160)
    ys, xs = np.unravel_index(h.argmax(), h.shape)
    assert xs >= 120 and ys < 25


# ------------------------------------------------------------------ parity
def _no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import timm.models._builder as tb

    for fn in ("load_state_dict_from_url", "load_state_dict_from_hf", "download_cached_file"):
        monkeypatch.setattr(tb, fn, refuse)


def test_timm_parity_after_save_and_load(tmp_path, monkeypatch):
    import timm
    from timm.models import VisionTransformer

    from vlinterp.adapters.vit_timm import TimmVitAdapter

    save_tiny("vit", str(tmp_path))
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    _no_network(monkeypatch)
    m = vi.load(str(tmp_path))
    assert isinstance(m, TimmVitAdapter) and isinstance(m.model, VisionTransformer)
    assert m.model.blocks[0].attn.fused_attn  # timm's default kernel is left on
    ref = vi.load("tiny:vit")
    for (k, a), (_, b) in zip(m.model.state_dict().items(), ref.model.state_dict().items()):
        assert torch.equal(a, b), k
    imgs = [_img(100, 160), _img(70, 50, 1)]
    tf = timm.data.create_transform(**timm.data.resolve_data_config(model=m.model))
    with torch.no_grad():
        native = m.model(torch.stack([tf(im) for im in imgs]))
    b = m.prepare(images=imgs)
    for cap in (None, "**"):
        assert (m.run(b, capture=cap).logits - native).abs().max() <= 1e-6
    # a .safetensors file with its config beside it loads too
    assert torch.equal(vi.load(str(tmp_path / "model.safetensors")).run(b).logits, m.run(b).logits)


def test_hf_parity_after_save_and_load(tmp_path, monkeypatch):
    from transformers import ViTForImageClassification, ViTImageProcessor

    from vlinterp.adapters.vit_hf import HfVitAdapter

    save_tiny("vit-hf", str(tmp_path))
    _no_network(monkeypatch)
    m = vi.load(str(tmp_path))
    assert isinstance(m, HfVitAdapter) and isinstance(m.model, ViTForImageClassification)
    assert m.model.config._attn_implementation == "sdpa"
    imgs = [_img(100, 160), _img(70, 50, 1)]
    proc = ViTImageProcessor.from_pretrained(str(tmp_path))
    with torch.no_grad():
        native = m.model(**proc(images=imgs, return_tensors="pt")).logits
    b = m.prepare(images=imgs)
    for cap in (None, "**"):
        assert (m.run(b, capture=cap).logits - native).abs().max() <= 1e-6


def test_class_names_round_trip(tmp_path):
    names = [f"shape_{k}" for k in range(10)]
    vi.load("tiny:vit", label_names=names).save_pretrained(str(tmp_path / "t"))
    assert vi.load(str(tmp_path / "t")).class_names() == names
    vi.load("tiny:vit-hf", id2label=names).save_pretrained(str(tmp_path / "h"))
    assert vi.load(str(tmp_path / "h")).class_names() == names
    assert vi.load("tiny:vit").class_names() == [f"class_{k}" for k in range(10)]


def test_can_load(tmp_path):
    assert not VitAdapter.can_load(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "clip"}')
    assert not VitAdapter.can_load(str(tmp_path))
    with pytest.raises(LoadError):
        VitAdapter.tiny("vit-huge")


# ----------------------------------------------------------------- captures
def test_capture_shapes_and_sites(m):
    b = m.prepare(images=[_img(), _img(50, 50, 2)])
    out = m.run(b, capture=["vision.blocks.*.resid", "vision.embed", "vision.norm", "logits", "vision.blocks.0.{attn,mlp}"])
    for name in ["vision.embed", "vision.blocks.0.resid", "vision.blocks.1.resid", "vision.norm", "vision.blocks.0.attn", "vision.blocks.0.mlp"]:
        assert out.cache[name].shape == (2, 17, 64), name
    assert torch.equal(out.cache["logits"], out.logits) and out.logits.shape == (2, 10)
    assert m.sites("vision.blocks.*.resid") == ["vision.blocks.0.resid", "vision.blocks.1.resid"]
    assert m.num_layers() == 2
    # block 0's residual output = embed + attn + mlp contributions (no layer scale in the tiny models)
    c = out.cache
    assert torch.allclose(c["vision.blocks.0.resid"], c["vision.embed"] + c["vision.blocks.0.attn"] + c["vision.blocks.0.mlp"], atol=1e-5)
    pos = m.run(b, capture="vision.blocks.1.resid", positions=lambda L: L.image_positions(0)).cache["vision.blocks.1.resid"]
    assert torch.equal(pos, out.cache["vision.blocks.1.resid"][:, 1:])
    with pytest.raises(UnknownSiteError, match="vision.blocks.0.resid"):
        m.run(b, capture="vision.blocks.0.resd")


# -------------------------------------------------------------------- edits
def test_edits_apply_and_leave_no_trace(m):
    b = m.prepare(images=[_img()])
    n0 = count_hooks(m.model)
    before = m.run(b).logits
    zero = lambda t, layout: torch.zeros_like(t)  # noqa: E731
    assert not torch.allclose(m.run(b, edits={"vision.blocks.1.mlp": zero}).logits, before)
    seen = []

    def cls_only(t, layout):
        seen.append(layout.counts(0))
        t = t.clone()
        t[:, layout.image_positions(0)] = 0
        return t

    with m.edits({"vision.blocks.0.resid": cls_only}):
        inside = m.run(b).logits
        assert count_hooks(m.model) == n0 + 1
    assert seen == [{"pad": 0, "text": 0, "image": 16, "special": 1}]
    assert not torch.allclose(inside, before)
    assert count_hooks(m.model) == n0 and torch.equal(m.run(b).logits, before)

    def bad(t, layout):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        m.run(b, edits={"vision.embed": bad}, capture="**")
    assert count_hooks(m.model) == n0 and torch.equal(m.run(b).logits, before)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["capture", "edit", "attention"]), st.sampled_from(["vision.embed", "vision.blocks.*.attn", "vision.blocks.1.mlp", "logits"]), st.booleans()), min_size=1, max_size=4))
def test_hypothesis_no_leaks(ops):
    for variant in VARIANTS:
        m = _cached(variant)
        b = _batch(variant)
        n0 = count_hooks(m.model)
        start = m.run(b).logits
        for kind, site, raise_inside in ops:
            try:
                if kind == "capture":
                    with m.capture(site) as cache:
                        m.run(b)
                        assert cache
                        if raise_inside:
                            raise KeyboardInterrupt
                elif kind == "edit":
                    with m.edits({site: lambda t, layout: t * 0.5}):
                        m.run(b, capture=site)
                        if raise_inside:
                            raise KeyboardInterrupt
                else:
                    m.attention(b, layers=[0, 1] if raise_inside else [1])
            except KeyboardInterrupt:
                pass
        assert count_hooks(m.model) == n0
        assert torch.equal(m.run(b).logits, start)


_CACHE = {}


def _cached(variant):
    if variant not in _CACHE:
        _CACHE[variant] = vi.load(f"tiny:{variant}")
    return _CACHE[variant]


def _batch(variant):
    return _cached(variant).prepare(images=[_img(), _img(30, 40, 3)])


# ---------------------------------------------------------------- attention
def test_timm_attention_matches_unfused():
    m = vi.load("tiny:vit")
    b = m.prepare(images=[_img(), _img(60, 90, 4)])
    assert all(blk.attn.fused_attn for blk in m.model.blocks)
    probs = m.attention(b, layers=[0, 1])
    assert all(blk.attn.fused_attn for blk in m.model.blocks)
    # reference: the same model with timm's unfused path, probabilities seen at attn_drop's input
    ref, hs = {}, []
    for i, blk in enumerate(m.model.blocks):
        blk.attn.fused_attn = False
        hs.append(blk.attn.attn_drop.register_forward_hook(lambda mod, a, o, i=i: ref.__setitem__(i, a[0].detach())))
    try:
        with torch.no_grad():
            m.model(b.inputs["pixel_values"])
    finally:
        for h in hs:
            h.remove()
        for blk in m.model.blocks:
            blk.attn.fused_attn = True
    for i in (0, 1):
        assert probs[i].shape == (2, 2, 17, 17)
        assert torch.allclose(probs[i].sum(-1), torch.ones(2, 2, 17), atol=1e-5)
        assert (probs[i] - ref[i]).abs().max() <= 1e-5


def test_hf_attention_matches_eager(tmp_path):
    m = vi.load("tiny:vit-hf")
    assert m.model.config._attn_implementation == "sdpa"
    save_tiny("vit-hf", str(tmp_path))
    eager = vi.load(str(tmp_path), attn_implementation="eager")
    assert eager.model.config._attn_implementation == "eager"
    b = m.prepare(images=[_img(), _img(60, 90, 4)])
    probs = m.attention(b, layers=[0, 1])
    with torch.no_grad():
        ref = eager.model(pixel_values=b.inputs["pixel_values"], output_attentions=True).attentions
    for i in (0, 1):
        assert probs[i].shape == (2, 2, 17, 17)
        assert torch.allclose(probs[i].sum(-1), torch.ones(2, 2, 17), atol=1e-5)
        assert (probs[i] - ref[i]).abs().max() <= 1e-5


def test_attention_layer_range(m):
    b = m.prepare(images=[_img()])
    with pytest.raises(LayerRangeError, match="99"):
        m.attention(b, layers=[99])
    assert set(m.attention(b, layers=[-1])) == {1}


# ---------------------------------------------------------------- bad input
def test_bad_inputs(m, tmp_path):
    with pytest.raises(ImageError, match="too small"):
        m.prepare(images=[Image.new("RGB", (1, 1))])
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    with pytest.raises(ImageError, match="cannot read"):
        m.prepare(images=[str(bad)])
    with pytest.raises(PromptError, match="take no text"):
        m.prepare(images=[_img()], text=["a photo of a cat"])
    with pytest.raises(ImageError, match="at least one image"):
        m.prepare(images=[])
    # grayscale / RGBA / a single image without a list are accepted
    b = m.prepare(images=Image.new("RGBA", (30, 20)))
    assert b.inputs["pixel_values"].shape == (1, 3, 64, 64)
    assert m.prepare(images=[np.zeros((20, 30), np.uint8)]).layout.images[0].size == (20, 30)
