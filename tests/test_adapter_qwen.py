"""The Qwen VL families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) on the generic VLM adapter: tiny random
models of the real classes with their real processors, built offline.

Every layout is checked against the model's own internals, not against vlinterp's arithmetic: the
image runs against ``image_grid_thw`` and the M-RoPE ids the model computes, the packed vision
layout against the rotary (row, col) ids, ``cu_seqlens`` and attention windows the vision blocks
receive, heat maps against ``smart_resize``.
"""
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp as vi
from vlinterp.core.hooks import count_hooks
from vlinterp.core.layout import IMAGE

FAMILIES = ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"]


@pytest.fixture(scope="module", params=FAMILIES)
def qwen(request):
    return vi.load(f"tiny:{request.param}")


def _img(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _vision(m):
    return m.model.model.visual


def test_lm_layout_matches_grid_thw_and_the_models_mrope(qwen):
    """Two rows, the first holding two images of different aspect ratios (kept apart), the second one."""
    b = qwen.prepare(images=[[_img(40, 64), _img(64, 40, 1)], _img(32, 32, 2)], text=["compare the two images", "what is it?"])
    L, ids = b.layout, b.inputs["input_ids"]
    grid = b.inputs["image_grid_thw"]
    assert grid.shape == (3, 3) and [L.image_row(i) for i in range(3)] == [0, 0, 1]
    pos = qwen.position_ids(b)
    assert pos.shape == (3, *ids.shape)
    for r in range(2):
        runs = [L.image_positions(i) for i in range(3) if L.image_row(i) == r]
        assert torch.equal(torch.cat(runs), (ids[r] == qwen.image_token_id).nonzero().flatten())
    for i in range(3):
        t, h, w = grid[i].tolist()
        P, r = L.image_positions(i), L.image_row(i)
        assert L.grid(i) == (h // 2, w // 2) and len(P) == t * h * w // 4
        # the model's own 3-D positions of this image's tokens are its grid cells (+ an offset)
        hp, wp = pos[1, r, P], pos[2, r, P]
        assert torch.equal(hp - hp.min(), torch.as_tensor(L.row[r, P.numpy()]).long())
        assert torch.equal(wp - wp.min(), torch.as_tensor(L.col[r, P.numpy()]).long())
    assert L.grid(0) != L.grid(1)  # the two aspect ratios give two grids
    c = L.counts(0)
    assert c["image"] == sum(len(L.image_positions(i)) for i in (0, 1)) and c["special"] >= 4  # vision start/end pairs


def test_position_ids_are_the_models_own(qwen):
    """``position_ids(batch)`` is what the rotary embedding receives; passing it back gives the same
    logits bit for bit (what a method keeping original positions after dropping tokens relies on)."""
    b = qwen.prepare(images=[_img(40, 64), None], text=["what color is the circle?", "how many squares are there?"])
    got = {}
    with qwen.raw_hooks() as h:
        h.pre(qwen.lm.rotary_emb, lambda mod, args: got.__setitem__("pos", args[1]))
        ref = qwen.run(b).logits
    mine = qwen.position_ids(b)
    assert torch.equal(got["pos"].expand_as(mine), mine)
    with torch.no_grad():
        again = qwen.model(**b.inputs, position_ids=mine).logits
    assert torch.equal(again, ref)
    text_only = qwen.prepare(text=["how many squares are there?"])
    assert torch.equal(qwen.position_ids(text_only)[0, 0], torch.arange(text_only.layout.shape[1]))


def test_packed_vision_layout_follows_the_tower(qwen):
    """Each packed position's (image, row, col) is the patch the vision blocks see there: (row, col)
    from the rotary ids the tower computes (matched through the rotary table it hands block 0), the
    image from the full-attention ``cu_seqlens``; for Qwen2.5-VL every attention window of block 0
    lies inside one 2x2-block window of one image."""
    b = qwen.prepare(images=[[_img(40, 64), _img(64, 48, 1)]], text=["compare the two images"])
    vis, got = _vision(qwen), {}
    blocks = list(vis.blocks)
    with qwen.raw_hooks() as h:
        h.pre(vis.rotary_pos_emb, lambda mod, args: got.__setitem__("rc", args[1]))
        h.forward(vis.rotary_pos_emb, lambda mod, args, out: got.__setitem__("cos", out[0]))
        h.pre(blocks[0], lambda mod, args, kw: got.update(cos0=kw["position_embeddings"][0], cu0=kw["cu_seqlens"]), with_kwargs=True)
        h.pre(blocks[-1], lambda mod, args, kw: got.update(cu_full=kw["cu_seqlens"]), with_kwargs=True)
        qwen.run(b)
    V = b.layouts["vision"]
    N = int(b.inputs["image_grid_thw"].prod(-1).sum())
    assert V.shape == (1, N) and (V.modality[0] == IMAGE).all()
    cos_proc = got["cos"].reshape(N, -1)
    table = {}
    for j in range(N):
        table.setdefault(cos_proc[j].numpy().tobytes(), set()).add(tuple(got["rc"][j].tolist()))
    assert all(len(v) == 1 for v in table.values())  # the rotary table identifies (row, col)
    cos0 = got["cos0"].reshape(N, -1)
    rc_block = [next(iter(table[cos0[k].numpy().tobytes()])) for k in range(N)]
    assert [(int(V.row[0, k]), int(V.col[0, k])) for k in range(N)] == rc_block
    cu = got["cu_full"].tolist()
    img_of = np.repeat(np.arange(len(cu) - 1), np.diff(cu))
    assert np.array_equal(V.image_index[0], img_of)
    for i in range(2):
        assert V.grid(i) == tuple(b.inputs["image_grid_thw"][i, 1:].tolist())
    if qwen.family == "qwen2.5-vl":  # window = window_size px = 2x2 merged blocks = 4x4 patches
        w = qwen.config.vision_config.window_size // qwen.config.vision_config.patch_size
        cu0 = got["cu0"].tolist()
        assert len(cu0) > len(cu)  # more windows than images
        for a, z in zip(cu0[:-1], cu0[1:]):
            assert len({(int(V.image_index[0, k]), int(V.row[0, k]) // w, int(V.col[0, k]) // w) for k in range(a, z)}) == 1
    P = b.layouts["projector"]
    assert P.shape == (1, N // 4)
    assert np.array_equal(P.row[0], V.row[0, ::4] // 2) and np.array_equal(P.col[0], V.col[0, ::4] // 2)


def test_heatmap_through_smart_resize(qwen):
    """A non-square image: a high score on cell (r, c) lands on the original pixels that cell was
    resized from (``smart_resize`` to a multiple of patch x merge, no crop, no pad)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    H, W = 50, 90
    b = qwen.prepare(images=[_img(H, W)], text=["where is the circle?"])
    ip = qwen.processor.image_processor
    f = ip.patch_size * ip.merge_size
    Hr, Wr = smart_resize(H, W, f, ip.size["shortest_edge"], ip.size["longest_edge"])
    rows, cols = b.layout.grid(0)
    assert (rows, cols) == (Hr // f, Wr // f) and rows != cols
    for r, c in [(0, cols - 1), (rows - 1, 0), (rows // 2, cols // 2)]:
        s = torch.zeros(rows * cols)
        s[r * cols + c] = 1.0
        hm = b.layout.to_heatmap(s, 0)
        assert hm.shape == (H, W)
        y0, y1 = r * f * H / Hr, (r + 1) * f * H / Hr
        x0, x1 = c * f * W / Wr, (c + 1) * f * W / Wr
        ys, xs = np.unravel_index(hm.argmax(), hm.shape)
        assert y0 - 1 <= ys < y1 + 1 and x0 - 1 <= xs < x1 + 1, (r, c, ys, xs, (y0, y1, x0, x1))
        box = hm[int(np.floor(y0)):int(np.ceil(y1)), int(np.floor(x0)):int(np.ceil(x1))]
        assert box.sum() > 0.5 * hm.sum()


def test_capture_and_edit_leave_no_trace(qwen):
    b = qwen.prepare(images=[_img(40, 64), _img(32, 48, 1)], text=["is there a red circle?", "what color is the square?"])
    with torch.no_grad():
        ref = qwen.model(**b.inputs).logits
    n0 = count_hooks(qwen.model)
    out = qwen.run(b, capture="**")
    assert torch.equal(out.logits, ref) and count_hooks(qwen.model) == n0
    T, D = b.layout.shape[1], qwen.text_config.hidden_size
    N = int(b.inputs["image_grid_thw"].prod(-1).sum())
    assert out.cache["blocks.1.resid"].shape == (2, T, D)
    assert out.cache["vision.blocks.0.resid"].shape[:2] == (1, N) and out.cache["projector"].shape == (1, N // 4, D)
    # inputs_embeds: the projector's features at the image positions (not the placeholder's embedding)
    feats = out.cache["projector"][0]
    if qwen.family == "qwen2.5-vl":  # the merger runs in window order; the model restores row-major order
        from vlinterp.adapters.qwen_layout import unit_order

        feats = feats[torch.argsort(torch.tensor(unit_order(qwen, b.inputs["image_grid_thw"], True)))]
    img = torch.as_tensor(b.layout.modality == IMAGE)
    assert torch.equal(out.cache["inputs_embeds"][img], feats)
    assert not torch.equal(out.cache["embed"][img], feats)
    zero = lambda t, layout: torch.zeros_like(t)  # noqa: E731
    for site in ("projector", "vision.blocks.0.mlp", "inputs_embeds", "blocks.0.attn"):
        edited = qwen.run(b, edits={site: zero}).logits
        assert not torch.allclose(edited, ref), site
        assert count_hooks(qwen.model) == n0
    with qwen.edits({"vision.embed": lambda t, layout: t * 0.5}):
        assert count_hooks(qwen.model) == n0 + 1
        assert not torch.allclose(qwen.run(b).logits, ref)
    assert count_hooks(qwen.model) == n0 and torch.equal(qwen.run(b).logits, ref)

    def boom(t, layout):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        qwen.run(b, edits={"vision.blocks.1.attn": boom})
    assert count_hooks(qwen.model) == n0 and torch.equal(qwen.run(b).logits, ref)
    seen = {}
    qwen.run(b, edits={"vision.blocks.0.resid": lambda t, layout: seen.setdefault("layout", layout) and t})
    assert seen["layout"] is b.layouts["vision"]


def _eager_vision_weights(model, inputs):
    """Per vision layer, the probabilities the eager kernel computes for each packed sequence."""
    mod = sys.modules[type(model.model.visual.blocks[0].attn).__module__]
    orig, cur, rec = mod.eager_attention_forward, {}, {}

    def eager(module, *a, **kw):
        out = orig(module, *a, **kw)
        if "layer" in cur:
            rec.setdefault(cur["layer"], []).append(out[1])
        return out

    def leave(m, a, o):
        cur.pop("layer", None)  # returns None: the module's output stays

    handles = []
    for i, blk in enumerate(model.model.visual.blocks):
        handles.append(blk.attn.register_forward_pre_hook(lambda m, a, i=i: cur.__setitem__("layer", i)))
        handles.append(blk.attn.register_forward_hook(leave))
    mod.eager_attention_forward = eager
    try:
        with torch.no_grad():
            lm = model(**inputs, output_attentions=True).attentions
    finally:
        mod.eager_attention_forward = orig
        for h in handles:
            h.remove()
    return lm, rec


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_matches_eager_while_running_sdpa(family):
    from vlinterp.adapters.qwen_tiny import build_tiny
    from vlinterp.adapters.vlm import VlmAdapter

    sdpa = VlmAdapter(*build_tiny(family, attn_implementation="sdpa"))
    eager_model, _ = build_tiny(family, attn_implementation="eager")
    assert sdpa.model.config.vision_config._attn_implementation == "sdpa"
    b = sdpa.prepare(images=[_img(40, 64), _img(64, 64, 1)], text=["is there a red circle?", "how many squares are there?"])
    lm_ref, vis_ref = _eager_vision_weights(eager_model, b.inputs)
    probs = sdpa.attention(b, layers=[0, 1])
    mask = b.inputs["attention_mask"].bool()
    for l in (0, 1):
        assert probs[l].shape == lm_ref[l].shape
        assert (probs[l] - lm_ref[l]).abs()[mask[:, None, :, None].expand_as(probs[l])].max().item() <= 1e-5
    vis = sdpa.attention(b, layers=[0, 1], stream="vision")
    N = int(b.inputs["image_grid_thw"].prod(-1).sum())
    for l in (0, 1):
        assert vis[l].shape == (1, 2, N, N)
        chunks = vis_ref[l]
        a = 0
        for w in chunks:  # each packed sequence's block on the diagonal, zeros elsewhere
            t = w.shape[-1]
            assert (vis[l][0, :, a:a + t, a:a + t] - w[0]).abs().max().item() <= 1e-5
            a += t
        assert a == N and torch.allclose(vis[l].sum(-1), torch.ones(()), atol=1e-5)
        assert len(chunks) == (b.inputs["image_grid_thw"].shape[0] if family != "qwen2.5-vl" or l == 1 else len(chunks))
    if family == "qwen2.5-vl":
        assert len(vis_ref[0]) > len(vis_ref[1]) == 2  # block 0 windowed, block 1 full


def test_trace_full_restoration_is_one(qwen):
    """``vlinterp.tracing`` as it is: restoring the last layer's residual at every position recovers
    the clean prediction exactly, restoring nothing leaves the corrupted one; batched equals naive."""
    from vlinterp.tracing import trace, trace_naive

    b = qwen.prepare(images=[_img(40, 64)], text=["is there a red circle?"])
    target = int(qwen.run(b).logits[0, int(b.layout.span("last", 0)[0])].argmax())
    L, T = qwen.num_layers(), b.layout.shape[1]
    r = trace(qwen, b, target, positions={"all": list(range(T)), "none": []}, layers=[L - 1], samples=2)
    assert abs(r.arrays["te"][0]) > 1e-6
    assert abs(r.arrays["rr"][0, 0, 0] - 1.0) <= 1e-6 and abs(r.arrays["rr"][0, 0, 1]) <= 1e-6
    kw = dict(components=("resid",), positions="groups", samples=1, layers=[0])
    fast, slow = trace(qwen, b, target, batch_size=4, **kw), trace_naive(qwen, b, target, **kw)
    assert np.abs(fast.arrays["p_patch"] - slow.arrays["p_patch"]).max() <= 1e-5
    # the vision tower (packed: one forward per cell); block 0's output feeds every later block and
    # Qwen3-VL's DeepStack merger, so restoring it fully recovers the clean run
    vis = trace(qwen, b, target, stream="vision", positions={"all": list(range(b.layouts["vision"].shape[1]))}, layers=[0], samples=1)
    assert abs(vis.arrays["rr"][0, 0, 0] - 1.0) <= 1e-6


def test_generate_prompts_and_errors(qwen):
    from vlinterp.core.errors import PromptError

    b = qwen.prepare(images=[_img(40, 64)], text=["describe the image."])
    g = qwen.generate(b, max_new_tokens=3)
    assert g.new_tokens.shape == (1, 3)
    calls = []
    with qwen.edits({"blocks.0.resid": lambda t, layout: calls.append(t.shape[1]) or t}):
        again = qwen.generate(b, max_new_tokens=3)
    assert torch.equal(g.new_tokens, again.new_tokens) and calls[1:] == [1, 1]
    raw = b.meta["formatted"][0]
    assert raw.count("<|image_pad|>") == 1
    b2 = qwen.prepare(images=[_img(40, 64)], text=raw, chat=False, answer="red")
    assert len(b2.layout.span("answer", 0)) == 1 and b2.layout.span("last", 0).item() == b2.layout.span("answer", 0).item() - 1
    assert b2.inputs["mm_token_type_ids"].shape == b2.inputs["input_ids"].shape
    assert qwen.run(b2).logits.shape[1] == b2.layout.shape[1]
    with pytest.raises(PromptError, match="image_pad"):
        qwen.prepare(images=[_img(40, 64)], text="no placeholder here", chat=False)


def test_saved_tiny_loads_with_from_pretrained(tmp_path):
    """``vi.load(DIR)`` of a saved tiny model: ``AutoProcessor`` + the model class, same logits."""
    from vlinterp.adapters.qwen_tiny import build_tiny, save_tiny

    d = save_tiny("qwen2.5-vl", str(tmp_path / "q"))
    m = vi.load(d)
    assert m.family == "qwen2.5-vl" and type(m.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(m.processor).__name__ == "Qwen2_5_VLProcessor" and m.name == "q"
    ref_model, ref_proc = build_tiny("qwen2.5-vl")
    b = m.prepare(images=[_img(40, 64)], text=["how many circles are there?"])
    enc = ref_proc(images=[_img(40, 64)], text=b.meta["formatted"], return_tensors="pt", padding=True)
    assert torch.equal(enc["input_ids"], b.inputs["input_ids"])
    with torch.no_grad():
        assert torch.equal(m.run(b).logits, ref_model(**enc).logits)


def test_packed_captures_keep_gradients_and_positions(qwen):
    """Captures on the packed tower keep the graph (``grad=True``) and select positions of the packed row."""
    b = qwen.prepare(images=[_img(40, 64), _img(32, 32, 1)], text=["is there a red circle?", "what is it?"])
    out = qwen.run(b, capture=["vision.blocks.0.resid", "inputs_embeds"], grad=True)
    out.logits[0, -1].max().backward()
    for site in ("vision.blocks.0.resid", "inputs_embeds"):
        g = out.cache[site].grad
        assert g is not None and g.abs().sum() > 0, site
    V = b.layouts["vision"]
    sel = qwen.run(b, capture="vision.blocks.1.mlp", positions=lambda L: L.image_positions(1)).cache["vision.blocks.1.mlp"]
    full = qwen.run(b, capture="vision.blocks.1.mlp").cache["vision.blocks.1.mlp"]
    assert sel.shape[1] == len(V.image_positions(1)) < full.shape[1]
    assert torch.equal(sel, full[:, V.image_positions(1)])
