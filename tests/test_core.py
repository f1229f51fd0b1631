"""Core pieces without any model: layouts, site wildcards, image loading and errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from vlinterp.core.errors import ImageError, LayoutError, ShapeMismatchError, UnknownSiteError
from vlinterp.core.hooks import Site, pattern_to_regex, resolve_sites
from vlinterp.core.images import MAX_SIDE, load_image
from vlinterp.core.layout import LayoutBuilder, Tile


def _layout():
    lb = LayoutBuilder()
    lb.special(1)
    lb.add_image(0, (100, 160), [Tile((2, 4), (0.0, 0.0, 160.0, 100.0))])
    lb.image_grid(0, 2, 4)
    lb.text(3, span="prompt")
    lb.end_row()
    lb.text(2, span="prompt")
    lb.add_image(1, (50, 50), [Tile((3, 3), (0.0, 0.0, 50.0, 50.0))])
    lb.image_grid(1, 3, 3)
    lb.end_row()
    return lb.build(pad_side="left")


def test_layout_positions_spans_and_padding():
    L = _layout()
    assert L.shape == (2, 12)
    assert L.counts(0) == {"pad": 0, "text": 3, "image": 8, "special": 1}
    assert L.counts(1) == {"pad": 1, "text": 2, "image": 9, "special": 0}
    assert L.image_positions(0).tolist() == list(range(1, 9))
    assert L.image_positions(1).tolist() == list(range(3, 12))  # after 1 pad + 2 text
    assert L.image_row(1) == 1 and L.grid(1) == (3, 3)
    assert L.span("prompt", 1).tolist() == [1, 2]
    assert L.span("last", 0).tolist() == [11] and L.span("last", 1).tolist() == [11]
    assert L.span("image[1]", 1).tolist() == L.image_positions(1).tolist()
    with pytest.raises(LayoutError, match="row 1"):
        L.span("image[1]", 0)
    with pytest.raises(LayoutError, match="unknown span"):
        L.span("answer-ish")
    with pytest.raises(LayoutError, match="out of range"):
        L.grid(5)


def test_heatmap_original_size_and_location():
    L = _layout()
    s = np.zeros(8, np.float32)
    s[7] = 1.0  # bottom-right patch of a 2x4 grid over 160x100
    h = L.to_heatmap(s, 0)
    assert h.shape == (100, 160) and h.dtype == np.float32
    y, x = np.unravel_index(h.argmax(), h.shape)
    assert y >= 50 and x >= 120
    assert h[:50, :80].max() == 0
    # full-row scores (length T) select the image positions
    full = torch.zeros(12)
    full[L.image_positions(0)] = torch.as_tensor(s)
    assert np.allclose(L.to_heatmap(full, 0), h)
    with pytest.raises(ShapeMismatchError, match="8 patches"):
        L.to_heatmap(np.zeros(5), 0)
    with pytest.raises(ShapeMismatchError, match="NaN"):
        L.to_heatmap(np.full(8, np.nan), 0)


def test_heatmap_box_outside_image_is_clipped():
    lb = LayoutBuilder()
    lb.add_image(0, (40, 64), [Tile((2, 2), (12.0, 0.0, 52.0, 40.0))])  # centre crop
    lb.image_grid(0, 2, 2)
    h = lb.build().to_heatmap(np.ones(4), 0)
    assert h[:, :12].max() == 0 and h[:, 52:].max() == 0 and h[:, 12:52].min() == pytest.approx(1.0)


def test_repeat_layout():
    L = _layout().repeat(3)
    assert L.shape == (6, 12) and L.num_images == 6
    assert [L.image_row(i) for i in range(6)] == [0, 1, 2, 3, 4, 5]
    assert L.image_positions(3).tolist() == list(range(3, 12))


def test_wildcards():
    table = {f"blocks.{i}.{k}": Site(f"m.{i}.{k}", "lm", i) for i in range(3) for k in ("attn", "mlp", "resid")}
    table.update({f"vision.blocks.{i}.resid": Site(f"v.{i}", "vision", i) for i in range(2)})
    assert resolve_sites("blocks.*.resid", table) == ["blocks.0.resid", "blocks.1.resid", "blocks.2.resid"]
    assert resolve_sites("blocks.{0,2}.{attn,mlp}", table) == ["blocks.0.attn", "blocks.0.mlp", "blocks.2.attn", "blocks.2.mlp"]
    assert len(resolve_sites("**", table)) == len(table)
    assert resolve_sites("**.resid", table)[-1] == "vision.blocks.1.resid"
    assert not pattern_to_regex("blocks.*").match("blocks.1.attn")
    with pytest.raises(UnknownSiteError) as e:
        resolve_sites("blocks.1.residual", table)
    assert "blocks.1.resid" in str(e.value)


def test_images_convert_odd_modes(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    assert load_image(rgba).getpixel((0, 0)) == (0, 0, 0)  # transparent -> black
    g16 = Image.fromarray(np.full((20, 30), 65535, np.uint16))
    p = tmp_path / "g16.png"
    g16.save(p)
    im = load_image(str(p))
    assert im.mode == "RGB" and im.size == (30, 20) and im.getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.zeros((10, 10), np.uint8)).mode == "RGB"
    assert load_image(torch.rand(3, 12, 16)).size == (16, 12)
    assert load_image(Image.new("P", (10, 10))).mode == "RGB"
    big = Image.new("RGB", (MAX_SIDE * 2 + 10, 8000))
    assert max(load_image(big).size) == MAX_SIDE


def test_images_refuse_bad_input(tmp_path):
    with pytest.raises(ImageError, match="too small"):
        load_image(Image.new("RGB", (1, 1)))
    with pytest.raises(ImageError, match="no such file"):
        load_image(str(tmp_path / "missing.png"))
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(str(bad))
    trunc = tmp_path / "trunc.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(trunc)
    trunc.write_bytes(trunc.read_bytes()[:40])
    with pytest.raises(ImageError):
        load_image(str(trunc))
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(ImageError, match="expected a path"):
        load_image(12345)
    with pytest.raises(ImageError, match="directory"):
        load_image(str(tmp_path))


def test_huge_png_file_is_refused_or_downscaled(tmp_path):
    """A 10k x 10k PNG: decoded safely (downscaled) or refused with ImageError, never a crash."""
    p = tmp_path / "huge.png"
    Image.new("L", (10000, 10000), 128).save(p, optimize=False)
    try:
        im = load_image(str(p))
    except ImageError as e:
        assert "large" in str(e)
    else:
        assert max(im.size) <= MAX_SIDE and im.mode == "RGB"
