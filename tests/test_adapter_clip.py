"""CLIP adapter (open_clip ``CLIP`` and transformers ``CLIPModel``) on tiny random models."""
import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

import vlinterp
from vlinterp.adapters.clip import ClipAdapter, build_tiny_open_clip, save_tiny
from vlinterp.core.errors import ImageError, LayerRangeError, LoadError, PromptError, UnknownSiteError
from vlinterp.core.hooks import count_hooks

VARIANTS = ["clip", "clip-hf"]
PROMPTS = ["a red circle", "is there a blue square?", "x"]


def _image(h=100, w=160, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module", params=VARIANTS)
def saved(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    save_tiny(request.param, str(d))
    return request.param, str(d)


@pytest.fixture(scope="module")
def m(saved):
    return vlinterp.load(saved[1])


@pytest.fixture(scope="module")
def batch(m):
    return m.prepare(images=[_image(), _image(seed=1)], text=PROMPTS)


@pytest.fixture(scope="module")
def base(m, batch):
    return m.run(batch).logits


def _native_logits(model, inputs):
    """The library's own forward on the adapter's inputs: ``[n_images, n_texts]``."""
    if hasattr(model, "visual"):  # open_clip
        return model.get_logits(inputs["pixel_values"], inputs["input_ids"])[0]
    return model(**inputs).logits_per_image


def _grid_from_config(model):
    if hasattr(model, "visual"):
        return tuple(model.visual.grid_size)
    vc = model.config.vision_config
    return (vc.image_size // vc.patch_size,) * 2


# ------------------------------------------------------------------ loading
@pytest.mark.slow
def test_save_load_and_can_load(saved, m, tmp_path):
    variant, d = saved
    assert isinstance(m, ClipAdapter) and ClipAdapter.can_load(d)
    assert m.backend.name == ("open_clip" if variant == "clip" else "transformers")
    assert not ClipAdapter.can_load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    assert not ClipAdapter.can_load(str(tmp_path))
    oc = tmp_path / "oc"
    oc.mkdir()
    (oc / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    assert not ClipAdapter.can_load(str(oc))  # no weights
    with pytest.raises(LoadError, match="no weights"):
        ClipAdapter.from_path(str(oc))
    # the saved model and processor are exactly the tiny ones
    tiny = vlinterp.load(f"tiny:{variant}")
    b, bt = m.prepare(images=[_image()], text=PROMPTS), tiny.prepare(images=[_image()], text=PROMPTS)
    assert b.inputs.keys() == bt.inputs.keys() and all(torch.equal(b.inputs[k], bt.inputs[k]) for k in b.inputs)
    sd, sd_tiny = m.model.state_dict(), tiny.model.state_dict()
    assert sd.keys() == sd_tiny.keys() and all(torch.equal(sd[k], sd_tiny[k]) for k in sd)
    # same weights, same inputs: logits equal up to the BLAS kernel's last bit (the loaded tensors'
    # memory layout can pick another kernel: 4.8e-7 apart with transformers 5.25)
    torch.testing.assert_close(tiny.run(b).logits, m.run(b).logits, rtol=0, atol=2e-6)
    if variant == "clip":  # the pickle format loads too (weights_only)
        from safetensors.torch import load_file

        pt = tmp_path / "pt"
        pt.mkdir()
        (pt / "open_clip_config.json").write_text((Path(d) / "open_clip_config.json").read_text())
        torch.save(load_file(str(Path(d) / "open_clip_model.safetensors")), pt / "open_clip_pytorch_model.bin")
        assert torch.equal(vlinterp.load(str(pt)).run(b).logits, m.run(b).logits)


# ------------------------------------------------------------------- layout
def test_layout(m):
    b = m.prepare(images=[_image(), _image(seed=1)], text=PROMPTS)
    L = b.layouts["vision"]
    rows, cols = _grid_from_config(m.model)
    assert (rows, cols) == (4, 4) and b.layout is L and b.main == "vision"
    assert L.shape == (2, 1 + rows * cols)
    for i in range(2):
        assert L.counts(i) == {"pad": 0, "text": 0, "image": rows * cols, "special": 1}
        assert L.grid(i) == (rows, cols) and L.image_row(i) == i
        pos = L.image_positions(i)
        assert len(pos) == rows * cols and pos.tolist() == list(range(1, 1 + rows * cols))
        assert L.row[i, 1 + cols] == 1 and L.col[i, 1 + cols] == 0  # row-major
    assert b.inputs["pixel_values"].shape[0] == 2

    T = b.layouts["text"]
    ids = b.inputs["input_ids"]
    assert T.shape == tuple(ids.shape)
    assert T.modalities(0)[:6] == ["special", "text", "text", "text", "special", "pad"]
    assert T.counts(2) == {"pad": ids.shape[1] - 3, "text": 1, "image": 0, "special": 2}
    eos = 49407
    for r in range(3):  # "last" is the EOT position the model pools at
        assert T.span("last", r).tolist() == [int((ids[r] == eos).int().argmax())]
        assert int(ids[r, T.span("last", r)[0]]) == eos
    assert T.span("prompt", 1).tolist() == list(range(1, int(T.span("last", 1)[0])))

    bi, bt = m.prepare(images=_image()), m.prepare(text="a red circle")
    assert set(bi.layouts) == {"vision"} and set(bt.layouts) == {"text"} and bt.main == "text"


@pytest.mark.parametrize("hw", [(100, 160), (160, 100)])
def test_heatmap_and_crop_box(m, hw):
    H, W = hw
    b = m.prepare(images=[_image(H, W)])
    L = b.layout
    # resize shortest edge to 64, centre crop 64x64 -> box = crop region in original pixels
    short, long = min(H, W), max(H, W)
    new_long = int(64 * long / short)
    off = (new_long - 64) // 2
    scale = long / new_long
    exp = (off * scale, 0.0, (off + 64) * scale, float(short)) if W > H else (0.0, off * scale, float(short), (off + 64) * scale)
    np.testing.assert_allclose(L.images[0].tiles[0].box, exp, atol=1e-6)
    rows, cols = L.grid(0)
    scores = torch.zeros(rows * cols)
    scores[1 * cols + 2] = 1.0  # patch (row 1, col 2)
    heat = L.to_heatmap(scores)
    assert heat.shape == (H, W)
    x0, y0, x1, y1 = exp
    pw, ph = (x1 - x0) / cols, (y1 - y0) / rows
    yy, xx = np.unravel_index(np.argmax(heat), heat.shape)
    assert x0 + 2 * pw <= xx <= x0 + 3 * pw and y0 + ph <= yy <= y0 + 2 * ph
    if W > H:
        assert heat[:, : int(x0) - 1].max() == 0 and heat[:, int(np.ceil(x1)) + 1 :].max() == 0
    # the box really is what the preprocessing shows: paint that patch's original region white
    a = np.zeros((H, W, 3), np.uint8)
    a[int(y0 + ph) + 2 : int(y0 + 2 * ph) - 2, int(x0 + 2 * pw) + 2 : int(x0 + 3 * pw) - 2] = 255
    px = m.prepare(images=[Image.fromarray(a)]).inputs["pixel_values"][0].mean(0)
    p = px.shape[-1] // cols
    means = px.reshape(rows, p, cols, p).mean((1, 3))
    assert divmod(int(means.argmax()), cols) == (1, 2)
    assert (means.flatten().sort().values[-2] - means.min()) < 0.5 * (means.max() - means.min())


# ------------------------------------------------------------------- parity
def test_parity_with_library(saved, m, batch):
    variant, d = saved
    with torch.no_grad():
        native = _native_logits(m.model, batch.inputs)
    for cap in (None, "**"):
        out = m.run(batch, capture=cap)
        assert out.logits.shape == (2, 3)
        assert (out.logits - native).abs().max() <= 1e-6
    # an independent load by the library itself gives the same numbers
    if variant == "clip":
        import open_clip

        ref, _, _ = open_clip.create_model_and_transforms("local-dir:" + d)
    else:
        from transformers import CLIPModel

        ref = CLIPModel.from_pretrained(d, local_files_only=True)
    with torch.no_grad():
        assert (_native_logits(ref.eval(), batch.inputs) - native).abs().max() <= 1e-6
    # image-only / text-only batches give normalised embeddings
    img, txt = m.run(m.prepare(images=batch.images)).logits, m.run(m.prepare(text=PROMPTS)).logits
    assert img.shape == (2, 32) and txt.shape == (3, 32)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(m.encode_images(batch), img, rtol=0, atol=1e-6)
    torch.testing.assert_close(m.encode_text(batch), txt, rtol=0, atol=1e-6)
    assert (m.backend.logit_scale() * img @ txt.T - native).abs().max() <= 1e-5


def test_seq_first_open_clip_is_made_batch_first(pil_image):
    model, _ = build_tiny_open_clip()
    trs = [model.visual.transformer, model.transformer]
    for tr in trs:  # simulate an open_clip build that runs its stack seq-first
        tr.batch_first = False
        for blk in tr.resblocks:
            blk.attn.batch_first = False
    a = ClipAdapter(model)  # processor built from the model's own preprocess config
    assert all(tr.batch_first and tr.resblocks[0].attn.batch_first for tr in trs)
    b = a.prepare(images=[pil_image], text=PROMPTS)
    ref = ClipAdapter(*build_tiny_open_clip())
    out = a.run(b, capture="vision.blocks.0.attn")
    assert out.cache["vision.blocks.0.attn"].shape == (1, 17, 64)
    assert (out.logits - ref.run(b).logits).abs().max() <= 1e-6


# ------------------------------------------------------------------ capture
def test_capture_shapes(m, batch):
    out = m.run(batch, capture=["vision.blocks.*.resid", "vision.embed", "text.blocks.1.{attn,mlp}", "*.post"])
    T = batch.inputs["input_ids"].shape[1]
    assert out.cache["vision.blocks.0.resid"].shape == (2, 17, 64)
    assert out.cache["vision.embed"].shape == (2, 17, 64)
    assert out.cache["text.blocks.1.attn"].shape == (3, T, 64) and out.cache["text.blocks.1.mlp"].shape == (3, T, 64)
    assert out.cache["vision.post"].shape == (2, 32) and out.cache["text.post"].shape == (3, 32)
    torch.testing.assert_close(torch.nn.functional.normalize(out.cache["vision.post"], dim=-1), out.raw["image_embeds"])
    torch.testing.assert_close(torch.nn.functional.normalize(out.cache["text.post"], dim=-1), out.raw["text_embeds"])
    assert m.sites("vision.blocks.*.resid") == ["vision.blocks.0.resid", "vision.blocks.1.resid"]
    assert m.sites("text.blocks.*.attn") == ["text.blocks.0.attn", "text.blocks.1.attn"]
    assert m.num_layers() == 2 and m.num_layers("text") == 2
    assert out.cache.stack("vision.blocks.*.resid").shape == (2, 2, 17, 64)
    sel = m.run(batch, capture="vision.blocks.1.resid", positions=lambda L: L.image_positions(0))
    assert sel.cache["vision.blocks.1.resid"].shape == (2, 16, 64)
    with pytest.raises(UnknownSiteError, match="vision.blocks.0.attn"):
        m.run(batch, capture="vision.blocks.0.atn")


# -------------------------------------------------------------------- edits
def test_edits(m, batch):
    base, emb0 = m.run(batch).logits, m.encode_images(batch)
    n0 = count_hooks(m.model)
    seen = []

    def zero(t, layout):
        seen.append(layout.shape)
        return torch.zeros_like(t)

    for site in ("vision.blocks.0.mlp", "vision.blocks.1.attn", "text.blocks.0.resid", "text.post", "vision.embed"):
        assert not torch.allclose(m.run(batch, edits={site: zero}).logits, base), site
    assert (2, 17) in seen and (3, batch.inputs["input_ids"].shape[1]) in seen
    with m.edits({"vision.blocks.0.mlp": lambda t, L: t * 0.5}):
        assert count_hooks(m.model) == n0 + 1
        assert not torch.allclose(m.run(batch).logits, base)
        assert not torch.allclose(m.encode_images(batch), emb0)  # encode_* honour active edits
    assert torch.equal(m.run(batch).logits, base) and count_hooks(m.model) == n0

    def boom(t, layout):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        m.run(batch, edits={"text.blocks.1.mlp": boom}, capture="**")
    assert count_hooks(m.model) == n0 and torch.equal(m.run(batch).logits, base)


SITES = ["vision.embed", "vision.blocks.0.attn", "vision.blocks.1.mlp", "vision.blocks.*.resid", "vision.post",
         "text.blocks.0.mlp", "text.blocks.1.resid", "text.post"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["capture", "edit"]), st.sampled_from(SITES), st.booleans()), min_size=1, max_size=4),
       raise_at=st.integers(min_value=-1, max_value=3))
def test_hooks_never_leak(m, batch, base, ops, raise_at):
    n0 = count_hooks(m.model)
    try:
        with contextlib.ExitStack() as stack:
            for k, (kind, site, scale) in enumerate(ops):
                if kind == "capture":
                    stack.enter_context(m.capture(site))
                else:
                    stack.enter_context(m.edits({site: (lambda t, L: t * 1.5) if scale else (lambda t, L: -t)}))
                m.run(batch, capture=site if scale else None)
                if k == raise_at:
                    raise KeyError("inside")
    except KeyError:
        pass
    assert count_hooks(m.model) == n0
    assert torch.equal(m.run(batch).logits, base)


# ---------------------------------------------------------------- attention
def test_attention_matches_eager(saved, m, batch):
    variant, d = saved
    att = m.attention(batch, layers=[0])
    assert set(att) == {0} and att[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(att[0].sum(-1), torch.ones(2, 2, 17))
    T = batch.inputs["input_ids"].shape[1]
    tatt = m.attention(batch, layers=[1], stream="text")[1]
    assert tatt.shape == (3, 2, T, T) and torch.all(tatt.triu(1) == 0)  # causal
    if variant == "clip":  # manual eager: the same MHA called with need_weights=True on the same inputs
        ref = {}
        for name, mod in (("v", m.model.visual.transformer.resblocks[0].attn), ("t", m.model.transformer.resblocks[1].attn)):
            def hook(module, args, kwargs, out, name=name):
                ref[name] = module.forward(*args, need_weights=True, average_attn_weights=False, attn_mask=kwargs.get("attn_mask"))[1]
            h = mod.register_forward_hook(hook, with_kwargs=True)
            try:
                m.run(batch)
            finally:
                h.remove()
        v_ref, t_ref = ref["v"], ref["t"]
    else:  # transformers: the same weights loaded with eager attention, output_attentions=True
        from transformers import CLIPModel

        assert m.model.config._attn_implementation == "sdpa"
        eager = CLIPModel.from_pretrained(d, local_files_only=True, attn_implementation="eager").eval()
        with torch.no_grad():
            o = eager(**batch.inputs, output_attentions=True)
        v_ref, t_ref = o.vision_model_output.attentions[0], o.text_model_output.attentions[1]
    assert (att[0] - v_ref).abs().max() <= 1e-5
    assert (tatt - t_ref).abs().max() <= 1e-5
    with pytest.raises(LayerRangeError):
        m.attention(batch, layers=[99])


# ---------------------------------------------------------------- bad input
def test_bad_input(m, tmp_path):
    with pytest.raises(ImageError, match="too small"):
        m.prepare(images=[np.zeros((1, 1, 3), np.uint8)], text=["a"])
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError):
        m.prepare(images=[str(bad)])
    with pytest.raises(PromptError, match="neither"):
        m.prepare()
    with pytest.raises(PromptError, match="string"):
        m.prepare(text=[3])
    with pytest.raises(PromptError, match="no text"):
        m.encode_text(m.prepare(images=[_image()]))
    long = m.prepare(text=["word " * 40])
    assert long.meta["truncated"] == [True]
    assert long.layouts["text"].counts(0)["pad"] == 0
