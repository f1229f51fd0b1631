"""LLaVA-OneVision, Gemma 3, PaliGemma, InternVL, SmolVLM and Idefics3 on the generic VLM adapter:
their layouts checked against the models' and processors' own work, on tiny random models of the
real classes with their real processors (built offline).

* LM positions: every image cell (image, tile, row, col) of the layout holds, in ``inputs_embeds``,
  exactly the projector's output for that crop at that cell (the model scattered it there); the
  OneVision high-resolution cells depend on the canvas tiles their boxes say (an edit of one tile's
  features moves exactly those cells) and its newline tokens hold the model's ``image_newline``.
* Vision crops: each row the tower sees is the crop its box says: on an image whose red and green
  channels are x and y ramps, the processed pixels of every crop read back the box's coordinates.
* Heat maps: a score on one cell of one tile lands on that cell of the tile's box in the original.
"""
import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp as vi
from vlinterp.core.layout import IMAGE, SPECIAL

FAMILIES = ["llava-onevision", "gemma3", "paligemma", "internvl", "smolvlm", "idefics3"]
PAS = {"do_pan_and_scan": True, "pan_and_scan_min_crop_size": 8}  # tiny images: crops from 8 px


@pytest.fixture(scope="module", params=FAMILIES)
def vlm(request):
    return vi.load(f"tiny:{request.param}")


def _img(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _ramp(h, w):
    """Red = x / (W - 1), green = y / (H - 1) (in [0, 255]), blue constant."""
    a = np.zeros((h, w, 3), np.float64)
    a[..., 0] = np.arange(w)[None, :] / (w - 1) * 255
    a[..., 1] = np.arange(h)[:, None] / (h - 1) * 255
    a[..., 2] = 128
    return Image.fromarray(np.round(a).astype(np.uint8))


def _crop_rows(layout, i):
    """Rows of a crop stream (``vision``/``projector``) that come from original image ``i``."""
    return [k for k, g in enumerate(layout.images) if g.source == i]


def _inputs_embeds(vlm, b):
    out = vlm.run(b, capture=["inputs_embeds", "projector"])
    return out.cache["inputs_embeds"], out.cache["projector"]


def _check_cells_hold_crops(vlm, b):
    """Each LM tile of each image whose features come straight from one crop: its cells, row-major,
    are that crop's projector rows. Returns the number of tiles checked."""
    L, P = b.layout, b.layouts["projector"]
    emb, proj = _inputs_embeds(vlm, b)
    checked = 0
    for i in range(L.num_images):
        rows = _crop_rows(P, i)
        tiles = L.images[i].tiles
        r = L.image_row(i)
        for t, tile in enumerate(tiles):
            if tile.name == "hires":  # OneVision: unpadded (and maybe shrunk) canvas, checked apart
                continue
            pos = L.image_positions(i, tile=t)
            assert len(pos) == tile.grid[0] * tile.grid[1] == P.grid(rows[t])[0] * P.grid(rows[t])[1]
            assert torch.equal(emb[r, pos], proj[rows[t]]), (vlm.family, i, t)
            checked += 1
    assert len(set(P.images[k].source for k in range(P.num_images))) == L.num_images
    return checked


def test_image_cells_hold_their_crops_features(vlm):
    """Two images of different aspect ratios in one prompt (kept apart), one wide image in another."""
    b = vlm.prepare(images=[[_img(40, 64), _img(64, 40, 1)], _img(24, 90, 2)], text=["compare the two images", "what is it?"])
    L = b.layout
    assert [L.image_row(i) for i in range(3)] == [0, 0, 1]
    ids = b.inputs["input_ids"]
    for r in range(2):  # the image-token positions are exactly the layout's image cells (+ OneVision newlines)
        cells = (torch.as_tensor(L.modality[r]) == IMAGE) | ((torch.as_tensor(L.modality[r]) == SPECIAL) & (torch.as_tensor(L.image_index[r]) >= 0))
        assert torch.equal(ids[r] == vlm.image_token_id, cells)
    assert _check_cells_hold_crops(vlm, b) >= 3
    V, P = b.layouts["vision"], b.layouts["projector"]
    out = vlm.run(b, capture=["vision.blocks.0.resid", "projector"])
    assert out.cache["vision.blocks.0.resid"].shape[:2] == V.shape and out.cache["projector"].shape[:2] == P.shape
    if vlm.family in ("internvl", "smolvlm"):  # several tiles + a whole-image tile per image
        assert all(len(L.images[i].tiles) > 1 for i in range(3))
        assert L.images[2].tiles[-1].box == (0.0, 0.0, 90.0, 24.0)


def test_onevision_hires_cells_follow_their_canvas_tiles():
    """OneVision alone in its prompt: newline tokens hold ``image_newline``; zeroing one canvas
    tile's projector features moves exactly the high-resolution cells inside that tile's box."""
    vlm = vi.load("tiny:llava-onevision")
    H, W = 40, 64
    b = vlm.prepare(images=[_img(H, W)], text=["what is it?"])
    L, P = b.layout, b.layouts["projector"]
    emb, _ = _inputs_embeds(vlm, b)
    nl = torch.as_tensor(np.nonzero((L.modality[0] == SPECIAL) & (L.image_index[0] == 0))[0])
    rows, cols = L.grid(0, tile=1)
    assert len(nl) == rows and torch.equal(emb[0, nl], vlm.model.model.image_newline.expand(rows, -1))
    hires = L.image_positions(0, tile=1)
    crops = _crop_rows(P, 0)
    assert len(crops) > 2  # base + at least two canvas tiles
    for j in crops[1:]:
        x0, y0, x1, y1 = P.images[j].tiles[0].box

        def zero(t, layout, j=j):
            t = t.clone()
            t[j] = 0
            return t

        moved = vlm.run(b, capture="inputs_embeds", edits={"projector": zero}).cache["inputs_embeds"]
        changed = (moved[0, hires] != emb[0, hires]).any(-1).reshape(rows, cols).numpy()
        cy = (np.arange(rows)[:, None] + 0.5) * H / rows
        cx = (np.arange(cols)[None, :] + 0.5) * W / cols
        ch, cw = H / rows / 2, W / cols / 2  # half a cell of slack at the tile's edges
        inside = (cx > x0 + cw) & (cx < x1 - cw) & (cy > y0 + ch) & (cy < y1 - ch)
        near = (cx > x0 - cw) & (cx < x1 + cw) & (cy > y0 - ch) & (cy < y1 + ch)
        assert changed.any() and (changed <= near).all() and (inside <= changed).all(), (j, changed, (x0, y0, x1, y1))


def _tower_pixels(vlm, b):
    """The pixels the vision tower receives, one row per crop ``[n_crops, 3, S, S]``."""
    got = {}

    def grab(module, args, kwargs):
        got["px"] = args[0] if args else kwargs["pixel_values"]

    with vlm.raw_hooks() as h:
        h.pre(vlm.module("vision.embed"), grab, with_kwargs=True)
        vlm.run(b)
    return got["px"].float()


def _check_crops_read_their_boxes(vlm, b, sizes):
    """Every crop the tower sees reads back its box from the x/y ramps (interior pixels inside the image)."""
    ip = vlm.processor.image_processor
    mean = torch.tensor(ip.image_mean).view(3, 1, 1)
    std = torch.tensor(ip.image_std).view(3, 1, 1)
    px = _tower_pixels(vlm, b) * std + mean  # back to [0, 1]
    V = b.layouts["vision"]
    assert px.shape[0] == V.shape[0]
    worst = 0.0
    for k in range(V.num_images):
        H, W = sizes[V.images[k].source]
        x0, y0, x1, y1 = V.images[k].tiles[0].box
        S = px.shape[-1]
        u = np.arange(S)
        xo = x0 + (u + 0.5) * (x1 - x0) / S - 0.5
        yo = y0 + (u + 0.5) * (y1 - y0) / S - 0.5
        cx = (xo > 1.5) & (xo < W - 2.5) & (u > 1) & (u < S - 2)  # interior, away from pads and borders
        cy = (yo > 1.5) & (yo < H - 2.5) & (u > 1) & (u < S - 2)
        assert cx.any() and cy.any(), (k, V.images[k].tiles[0])
        red = px[k, 0][np.ix_(cy, cx)].mean(0).numpy()
        green = px[k, 1][np.ix_(cy, cx)].mean(1).numpy()
        err = max(np.abs(red - xo[cx] / (W - 1)).max(), np.abs(green - yo[cy] / (H - 1)).max())
        worst = max(worst, err)
        assert err < 0.03, (vlm.family, k, V.images[k].tiles[0], err)
    return worst


def test_vision_crops_are_their_boxes(vlm):
    sizes = [(40, 64), (64, 40), (24, 90)]
    b = vlm.prepare(images=[[_ramp(*sizes[0]), _ramp(*sizes[1])], _ramp(*sizes[2])], text=["compare the two images", "what is it?"])
    _check_crops_read_their_boxes(vlm, b, sizes)


def test_gemma3_pan_and_scan_crops():
    """Pan-and-scan (a processor call option): the wide image is the whole image plus crops, each
    its own run of soft tokens; crop boxes match the pixels, crop cells hold the crops' features."""
    vlm = vi.load("tiny:gemma3")
    sizes = [(30, 100), (40, 40)]
    b = vlm.prepare(images=[[_ramp(*sizes[0]), _ramp(*sizes[1])]], text=["compare the two images"], processor_kwargs=PAS)
    L = b.layout
    names = [t.name for t in L.images[0].tiles]
    assert names[0] == "base" and len(names) == 1 + 3 and len(L.images[1].tiles) == 1  # 100/30 -> 3 crops; square: none
    assert b.inputs["pixel_values"].shape[0] == 5 and b.meta["processor_kwargs"] == PAS
    boxes = [t.box for t in L.images[0].tiles[1:]]
    assert boxes[0][0] == 0.0 and boxes[-1][2] == 100.0 and all(bx[1] == 0.0 and bx[3] == 30.0 for bx in boxes)
    runs = torch.diff(torch.nonzero(b.inputs["input_ids"][0] == vlm.image_token_id).flatten()) > 1
    assert int(runs.sum()) + 1 == 5  # five runs of soft tokens: image 0, its 3 crops, image 1
    assert _check_cells_hold_crops(vlm, b) == 5
    _check_crops_read_their_boxes(vlm, b, sizes)
    plain = vlm.prepare(images=[[_ramp(*sizes[0]), _ramp(*sizes[1])]], text=["compare the two images"])
    assert len(plain.layout.images[0].tiles) == 1 and plain.inputs["pixel_values"].shape[0] == 2  # off by default


def test_internvl_tiles_follow_processor_kwargs():
    vlm = vi.load("tiny:internvl")
    img = _img(40, 150)
    default = vlm.prepare(images=[img], text=["what is it?"])
    fewer = vlm.prepare(images=[img], text=["what is it?"], processor_kwargs={"max_patches": 2})
    one = vlm.prepare(images=[img], text=["what is it?"], processor_kwargs={"max_patches": 1})
    n = [len(x.layout.images[0].tiles) for x in (default, fewer, one)]
    assert n == [5, 3, 1]  # 4 x 1 tiles + thumbnail; 2 x 1 + thumbnail; the whole image alone
    for x, k in zip((default, fewer, one), n):
        assert x.inputs["pixel_values"].shape[0] == k == x.layouts["vision"].shape[0]
        assert len(x.layout.image_positions(0)) == 16 * k
        _check_cells_hold_crops(vlm, x)


def test_heatmap_maps_each_tiles_cells_to_their_pixels(vlm):
    H, W = 40, 90
    b = vlm.prepare(images=[_img(H, W)], text=["where is the circle?"])
    L = b.layout
    tiles = L.images[0].tiles
    offsets = np.cumsum([0] + [t.grid[0] * t.grid[1] for t in tiles])
    for t, tile in enumerate(tiles):
        rows, cols = tile.grid
        x0, y0, x1, y1 = tile.box
        for r, c in [(0, cols - 1), (rows - 1, 0), (rows // 2, cols // 2)]:
            cx0, cx1 = x0 + c * (x1 - x0) / cols, x0 + (c + 1) * (x1 - x0) / cols
            cy0, cy1 = y0 + r * (y1 - y0) / rows, y0 + (r + 1) * (y1 - y0) / rows
            if cx1 <= 0 or cx0 >= W or cy1 <= 0 or cy0 >= H:
                continue  # a padded cell: no original pixels
            s = torch.zeros(int(offsets[-1]))
            s[offsets[t] + r * cols + c] = 1.0
            hm = L.to_heatmap(s, 0)
            assert hm.shape == (H, W)
            ys, xs = np.unravel_index(hm.argmax(), hm.shape)
            assert cy0 - 1 <= ys < cy1 + 1 and cx0 - 1 <= xs < cx1 + 1, (vlm.family, tile.name, r, c, ys, xs)
