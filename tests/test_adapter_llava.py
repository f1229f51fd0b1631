"""LLaVA adapter on tiny llava-1.5-style and llava-next-style models of the real classes."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

import vlinterp as vi
from vlinterp.adapters.llava import save_tiny
from vlinterp.core.errors import ImageError, ImageTokenMismatchError, LayerRangeError, PromptError, UnknownSiteError
from vlinterp.core.hooks import count_hooks


@pytest.fixture(scope="module")
def llava():
    return vi.load("tiny:llava")


@pytest.fixture(scope="module")
def llava_next():
    return vi.load("tiny:llava-next")


def _img(h=40, w=64, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_llava15_layout_counts_and_grid(llava):
    b = llava.prepare(images=[_img()], text=["is there a red circle?"])
    L = b.layout
    g = llava.model.config.vision_config.image_size // llava.model.config.vision_config.patch_size
    assert L.grid(0) == (g, g) == (4, 4)
    pos = L.image_positions(0)
    assert len(pos) == 16 and L.counts(0)["image"] == 16
    assert torch.equal(pos, (b.inputs["input_ids"][0] == llava.model.config.image_token_index).nonzero().flatten())
    # row-major over the grid
    assert L.row[0, pos].tolist() == [r for r in range(4) for _ in range(4)]
    assert L.col[0, pos].tolist() == list(range(4)) * 4
    # text + special + image = all positions
    c = L.counts(0)
    assert c["text"] + c["special"] + c["image"] + c["pad"] == b.inputs["input_ids"].shape[1]
    assert L.span("last", 0).item() == b.inputs["input_ids"].shape[1] - 1
    # the vision tower keeps CLS: 1 special + 16 patches per crop
    assert b.layouts["vision"].counts(0) == {"pad": 0, "text": 0, "image": 16, "special": 1}
    assert b.layouts["projector"].counts(0)["image"] == 16


def test_llava15_heatmap_centre_crop_box(llava):
    """64x40 original, shortest edge resized then centre-cropped: the grid covers x in [12, 52)."""
    b = llava.prepare(images=[_img(40, 64)], text=["what color is the square?"])
    assert b.layout.images[0].tiles[0].box == pytest.approx((12.0, 0.0, 52.0, 40.0))
    s = torch.zeros(16)
    s[0] = 1.0  # top-left patch
    h = b.layout.to_heatmap(s, 0)
    assert h.shape == (40, 64)
    assert h[:, :12].max() == 0 and h[:, 52:].max() == 0  # cropped-away margins get nothing
    ys, xs = np.unravel_index(h.argmax(), h.shape)
    assert ys < 10 and 12 <= xs < 22


def test_llava_next_tiles_and_newlines(llava_next):
    cfg = llava_next.model.config
    for (h, w), hires in [((40, 64), (6, 8)), ((64, 40), (8, 6)), ((32, 32), (4, 4))]:
        b = llava_next.prepare(images=[_img(h, w)], text=["is there a red circle?"])
        L = b.layout
        assert L.grid(0, 0) == (4, 4) and L.grid(0, 1) == hires
        n_img_tok = int((b.inputs["input_ids"][0] == cfg.image_token_index).sum())
        newlines = hires[0]
        assert n_img_tok == 16 + hires[0] * hires[1] + newlines
        assert len(L.image_positions(0)) == 16 + hires[0] * hires[1]
        # one newline special token after each hires row, carrying the image index
        nl = np.nonzero((L.modality[0] == 3) & (L.image_index[0] == 0))[0]
        assert len(nl) == newlines
        assert np.all(L.tile[0, nl] == 1) and list(L.row[0, nl]) == list(range(newlines))
        assert L.to_heatmap(torch.ones(16 + hires[0] * hires[1]), 0).shape == (h, w)


def test_parity_after_save_and_load(tmp_path):
    for variant in ["llava", "llava-next"]:
        d = tmp_path / variant
        save_tiny(variant, str(d))
        m = vi.load(str(d))
        assert type(m.model).__name__ == ("LlavaNextForConditionalGeneration" if variant == "llava-next" else "LlavaForConditionalGeneration")
        b = m.prepare(images=[_img()], text=["how many circles are there?"])
        ref = m.model(**b.inputs).logits
        assert (m.run(b).logits - ref).abs().max().item() <= 1e-6
        out = m.run(b, capture="**")
        assert (out.logits - ref).abs().max().item() <= 1e-6
        assert set(out.cache) >= {"blocks.0.resid", "vision.blocks.1.mlp", "projector", "logits"}


def test_captures_and_wildcards(llava):
    b = llava.prepare(images=[_img(), _img(seed=1)], text=["is there a red circle?", "what color is the circle?"])
    out = llava.run(b, capture=["blocks.*.resid", "vision.blocks.{0,1}.attn"], positions=None)
    B, T = b.layout.shape
    D = llava.model.config.text_config.hidden_size
    assert out.cache["blocks.1.resid"].shape == (B, T, D)
    assert out.cache["vision.blocks.0.attn"].shape == (2, 17, llava.model.config.vision_config.hidden_size)
    assert llava.sites("blocks.*.resid") == ["blocks.0.resid", "blocks.1.resid"]
    last = llava.run(b, capture="blocks.1.resid", positions=lambda L: L.span("last", 0))
    assert last.cache["blocks.1.resid"].shape == (B, 1, D)
    assert torch.equal(last.cache["blocks.1.resid"][:, 0], out.cache["blocks.1.resid"][:, -1])
    with pytest.raises(UnknownSiteError, match="blocks.1.resid"):
        llava.run(b, capture="blocks.1.resdi")


def test_edits_apply_and_leave_no_trace(llava):
    b = llava.prepare(images=[_img()], text=["is there a red circle?"])
    before = llava.run(b).logits
    n0 = count_hooks(llava.model)
    zero = lambda t, layout: torch.zeros_like(t)  # noqa: E731
    edited = llava.run(b, edits={"projector": zero}).logits
    assert not torch.allclose(edited, before)
    with llava.edits({"blocks.0.mlp": zero}):
        assert count_hooks(llava.model) == n0 + 1
        inside = llava.run(b).logits
    assert not torch.allclose(inside, before)
    assert count_hooks(llava.model) == n0 and torch.equal(llava.run(b).logits, before)

    def boom(t, layout):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        llava.run(b, edits={"blocks.1.attn": boom})
    assert count_hooks(llava.model) == n0 and torch.equal(llava.run(b).logits, before)


def test_edit_sees_layout_and_image_positions(llava):
    b = llava.prepare(images=[_img()], text=["is there a red circle?"])
    seen = {}

    def drop_image(t, layout):
        seen["layout"] = layout
        t = t.clone()
        t[:, layout.image_positions(0)] = 0
        return t

    out = llava.run(b, edits={"blocks.0.resid": drop_image}, capture="blocks.0.resid")
    assert seen["layout"] is b.layout
    assert out.cache["blocks.0.resid"][0, b.layout.image_positions(0)].abs().max() == 0


def test_generate_with_edit_applies_every_step(llava):
    b = llava.prepare(images=[_img()], text=["describe the image."])
    plain = llava.generate(b, max_new_tokens=4)
    calls = []

    def count(t, layout):
        calls.append(t.shape[1])
        return t

    with llava.edits({"blocks.0.resid": count}):
        again = llava.generate(b, max_new_tokens=4)
    assert torch.equal(plain.new_tokens, again.new_tokens)
    assert len(calls) == 4 and calls[0] == b.layout.shape[1] and calls[1:] == [1, 1, 1]


@pytest.mark.parametrize("variant", ["llava", "llava-next"])
def test_attention_matches_eager(variant):
    from vlinterp.adapters.llava_tiny import build_tiny
    from vlinterp.adapters.llava import LlavaAdapter

    sdpa = LlavaAdapter(*build_tiny(variant, attn_implementation="sdpa"))
    eager_model, _ = build_tiny(variant, attn_implementation="eager")
    b = sdpa.prepare(images=[_img(), _img(32, 32, 1)], text=["is there a red circle?", "how many squares are there?"])
    probs = sdpa.attention(b, layers=[0, 1])
    with torch.no_grad():
        ref = eager_model(**b.inputs, output_attentions=True).attentions
    for l in (0, 1):
        assert probs[l].shape == ref[l].shape
        mask = b.inputs["attention_mask"].bool()  # rows of padding positions are undefined in both
        assert (probs[l] - ref[l]).abs()[mask[:, None, :, None].expand_as(probs[l])].max().item() <= 1e-5
    vis = sdpa.attention(b, layers=[0], stream="vision")[0]
    with torch.no_grad():
        vref = eager_model.model.vision_tower(b.inputs["pixel_values"].flatten(0, -4) if variant == "llava-next" else b.inputs["pixel_values"], output_attentions=True).attentions[0]
    if variant == "llava":
        assert (vis - vref).abs().max().item() <= 1e-5
    assert torch.allclose(vis.sum(-1), torch.ones(()), atol=1e-5)
    with pytest.raises(LayerRangeError):
        sdpa.attention(b, layers=[99])


def test_bad_inputs(llava, tmp_path):
    with pytest.raises(ImageError):
        llava.prepare(images=[Image.new("RGB", (1, 1))], text=["is there a red circle?"])
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageError, match="bad.png"):
        llava.prepare(images=[str(corrupt)], text=["is there a red circle?"])
    with pytest.raises(PromptError, match="no <image> placeholder"):
        llava.prepare(images=[_img()], text=["is there a red circle?"], chat=False)
    with pytest.raises(PromptError):
        llava.prepare(images=[_img()], text=["<image> is there a red circle?"])  # chat=True inserts its own
    with pytest.raises(ImageTokenMismatchError):
        llava.prepare(images=[_img(), _img()], text=["a", "b", "c"])
    with pytest.raises(PromptError):
        llava.token_id("notaword")
    # odd modes are converted, not refused
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 128))
    gray16 = Image.fromarray((np.arange(1600).reshape(40, 40) * 40).astype(np.uint16))
    for im in (rgba, gray16, rgba.convert("L")):
        b = llava.prepare(images=[im], text=["is there a red circle?"])
        assert b.images[0].mode == "RGB"


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["capture", "edit", "both"]), st.sampled_from(["blocks.*.resid", "vision.blocks.0.mlp", "projector", "blocks.1.attn"]), st.booleans()), min_size=1, max_size=4))
def test_property_no_hook_leaks(ops):
    m = _shared()
    b = _shared_batch()
    n0 = count_hooks(m.model)
    start = m.run(b).logits
    for kind, site, raise_inside in ops:
        try:
            if kind == "capture":
                with m.capture(site):
                    m.run(b)
                    if raise_inside:
                        raise KeyError("inside")
            elif kind == "edit":
                with m.edits({site: lambda t, layout: t * 0.5}):
                    m.run(b)
                    if raise_inside:
                        raise KeyError("inside")
            else:
                m.run(b, capture=site, edits={site: (lambda t, layout: 1 / 0) if raise_inside else (lambda t, layout: t + 1)})
        except (KeyError, ZeroDivisionError):
            pass
    assert count_hooks(m.model) == n0
    assert torch.equal(m.run(b).logits, start)


_CACHE = {}


def _shared():
    if "m" not in _CACHE:
        _CACHE["m"] = vi.load("tiny:llava")
    return _CACHE["m"]


def _shared_batch():
    if "b" not in _CACHE:
        _CACHE["b"] = _shared().prepare(images=[_img()], text=["is there a red circle?"])
    return _CACHE["b"]
