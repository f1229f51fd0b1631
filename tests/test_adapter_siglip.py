"""SigLIP / SigLIP2 (NaFlex) in the CLIP family, on tiny random models of the real classes with
their real processors built offline: loading, layouts (no CLS, padding), parity with the library,
sigmoid scores, leak-free hooks, attention parity, every ``clip`` saliency method, the MAP probe."""
import contextlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp as vi
from vlinterp import saliency
from vlinterp.adapters.clip import ClipAdapter, save_tiny
from vlinterp.core.errors import UnsupportedError
from vlinterp.core.hooks import count_hooks
from vlinterp.saliency.base import attention_with_grad

VARIANTS = ["siglip", "siglip2"]
TEXTS = ["a red circle", "is there a blue square"]
FAST = {"ig": {"n_steps": 4}, "msea": {"scales": (0.5, 1.0)}}


def _image(h=48, w=64, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module", params=VARIANTS)
def saved(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    save_tiny(request.param, str(d))
    return request.param, str(d)


@pytest.fixture(scope="module")
def m(saved):
    return vi.load(saved[1])


@pytest.fixture(scope="module")
def batch(m):  # two images of different aspect ratios: different NaFlex grids
    return m.prepare(images=[_image(), _image(100, 30, seed=1)], text=TEXTS)


def _native(m, b):
    """The library's own call on the processor's own outputs: ``logits_per_image``."""
    proc = m.processor
    enc = {k: b.inputs[k] for k in ("input_ids", "attention_mask") if k in b.inputs}
    pix = proc.image_processor(images=b.images, return_tensors="pt")
    with torch.no_grad():
        return m.model(**pix, **enc).logits_per_image


# ------------------------------------------------------------------ loading
def test_save_load_parity_and_tokenizer(saved, m):
    variant, d = saved
    assert isinstance(m, ClipAdapter) and ClipAdapter.can_load(d) and m.backend.name == variant
    assert m.kind == "clip" and m.sigmoid_scores and m.pool_site == "vision.pool.attn"
    tok_cls = {"siglip": "SiglipTokenizer", "siglip2": "Siglip2Tokenizer"}[variant]
    assert type(m.processor.tokenizer).__name__ == tok_cls  # the real class, reloaded from the directory
    tiny = vi.load(f"tiny:{variant}")
    b, bt = m.prepare(images=[_image()], text=TEXTS), tiny.prepare(images=[_image()], text=TEXTS)
    assert b.inputs.keys() == bt.inputs.keys() and all(torch.equal(b.inputs[k], bt.inputs[k]) for k in b.inputs)
    sd, sdt = m.model.state_dict(), tiny.model.state_dict()
    assert sd.keys() == sdt.keys() and all(torch.equal(sd[k], sdt[k]) for k in sd)
    torch.testing.assert_close(m.run(b).logits, tiny.run(bt).logits, rtol=0, atol=2e-6)


def test_directory_without_processor_is_a_load_error(tmp_path):
    from vlinterp.adapters.clip_siglip import build_tiny
    from vlinterp.core.errors import LoadError

    model, _ = build_tiny("siglip2")
    model.save_pretrained(str(tmp_path))
    assert ClipAdapter.can_load(str(tmp_path))
    with pytest.raises(LoadError, match="no usable siglip2 processor"):
        vi.load(str(tmp_path))


def test_grid_not_covering_the_whole_input():
    """image_size 72 with 16 px patches: a 4x4 grid over the top-left 64x64 processed pixels
    (as so400m-patch14-384: 27 x 14 = 378 of 384); the box says so."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    from vlinterp.adapters.clip_siglip import siglip_tokenizer

    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg = SiglipConfig(text_config=dict(vocab_size=200, max_position_embeddings=16, **common),
                       vision_config=dict(image_size=72, patch_size=16, **common))
    proc = SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 72, "width": 72}), tokenizer=siglip_tokenizer(16))
    m = ClipAdapter(SiglipModel(cfg).eval(), proc)
    b = m.prepare(images=[_image(90, 180)], text=["a red circle"])
    assert b.layout.shape == (1, 16) and b.layout.grid(0) == (4, 4)
    np.testing.assert_allclose(b.layout.images[0].tiles[0].box, (0, 0, 180 * 64 / 72, 90 * 64 / 72))
    assert m.run(b, capture="vision.blocks.0.resid").cache["vision.blocks.0.resid"].shape == (1, 16, 32)


def test_parity_with_library_and_sigmoid_scores(m, batch):
    out = m.run(batch)
    assert out.logits.shape == (2, 2)
    assert torch.equal(out.logits, _native(m, batch))  # bit-identical to model(**processor outputs)
    img, txt = out.raw["image_embeds"], out.raw["text_embeds"]
    ref = img @ txt.T * m.model.logit_scale.exp() + m.model.logit_bias  # the learned bias is in
    torch.testing.assert_close(out.logits, ref, rtol=1e-6, atol=1e-6)
    assert float(m.model.logit_bias.detach()) != 0 and torch.equal(out.raw["logit_bias"], m.model.logit_bias.detach())


def test_faithfulness_score_is_the_sigmoid(m):
    from vlinterp.metrics.faithfulness import clip_score_fn

    imgs = np.stack([np.asarray(_image()), np.asarray(_image(seed=4))])
    b = m.prepare(images=list(imgs), text=["a red circle", "a blue square"])
    want = torch.sigmoid(m.run(b).logits[:, 0]).numpy()  # SigLIP's own match probability, not a softmax over texts
    np.testing.assert_allclose(clip_score_fn(m, "a red circle", ["a blue square"])(imgs), want, rtol=1e-5)
    np.testing.assert_allclose(clip_score_fn(m, "a red circle")(imgs), want, rtol=1e-5)


# ------------------------------------------------------------------ layouts
def test_vision_layout_no_cls_and_padding(saved, m, batch):
    variant, _ = saved
    lay = batch.layouts["vision"]
    assert "cls" not in lay.spans and lay.counts(0)["special"] == 0
    if variant == "siglip":
        assert lay.shape == (2, 16) and lay.grid(0) == lay.grid(1) == (4, 4) and lay.counts(1)["image"] == 16
        return
    shapes, mask = batch.inputs["spatial_shapes"], batch.inputs["pixel_attention_mask"]
    assert [lay.grid(i) for i in range(2)] == [tuple(s) for s in shapes.tolist()] == [(3, 4), (7, 2)]
    for i in range(2):
        rows, cols = lay.grid(i)
        assert lay.counts(i) == {"pad": 16 - rows * cols, "text": 0, "image": rows * cols, "special": 0}
        assert np.array_equal(lay.modality[i] == 0, mask[i].numpy() == 0)
    # pixels: each image folded back from its patches; the padding region is zero
    p = batch.inputs["pixel_values"]
    assert p.shape == (2, 3, 7 * 16, 4 * 16) and float(p[1, :, :, 32:].abs().max()) == 0


def test_text_layout(saved, m, batch):
    text = batch.layouts["text"]
    ids = batch.inputs["input_ids"]
    L = m.backend.max_length
    assert ids.shape == (2, L)  # padded to max_length, as SigLIP was trained
    tok = m.processor.tokenizer
    for r, t in enumerate(TEXTS):
        words = tok(t, add_special_tokens=False)["input_ids"]
        pos = text.span("prompt", r)
        assert ids[r, pos].tolist() == words
        assert text.span("last", r).tolist() == text.span("eot", r).tolist() == [L - 1]  # the position pooled
        assert text.counts(r)["pad"] == L - len(words) - text.counts(r)["special"]


@pytest.mark.parametrize("hw", [(60, 150), (150, 60)])
def test_heatmap_through_processor_resize(m, hw):
    """A bright rectangle: the patch the processed pixels say is brightest maps, through
    ``to_heatmap``, back onto the rectangle in the original image (its heat's centre of mass lies
    within half a patch of the rectangle)."""
    h, w = hw
    a = np.full((h, w, 3), 10, np.uint8)
    y0, x0, rh, rw = int(h * 0.6), int(w * 0.1), h // 4, w // 4
    a[y0 : y0 + rh, x0 : x0 + rw] = 250
    b = m.prepare(images=[Image.fromarray(a)])
    lay = b.layout
    rows, cols = lay.grid(0)
    px = b.inputs["pixel_values"][0].mean(0)[: rows * 16, : cols * 16]
    cell = px.reshape(rows, 16, cols, 16).mean(dim=(1, 3)).flatten()
    hm = lay.to_heatmap(np.eye(rows * cols)[int(cell.argmax())])
    assert hm.shape == (h, w) and hm.max() > 0
    ys, xs = np.mgrid[:h, :w]
    cy, cx = (hm * ys).sum() / hm.sum(), (hm * xs).sum() / hm.sum()
    ph, pw = h / rows, w / cols
    assert y0 - ph / 2 <= cy <= y0 + rh + ph / 2 and x0 - pw / 2 <= cx <= x0 + rw + pw / 2


# ------------------------------------------------------------- hooks, attention
def test_capture_and_edits_leave_no_trace(m, batch):
    base = m.run(batch).logits
    n0 = count_hooks(m.model)
    out = m.run(batch, capture=["vision.blocks.*.resid", "vision.pool.attn", "vision.post", "text.blocks.1.mlp", "text.post"])
    T, L = batch.layouts["vision"].shape[1], batch.layouts["text"].shape[1]
    assert out.cache["vision.blocks.1.resid"].shape == (2, T, 64) and out.cache["vision.pool.attn"].shape == (2, 1, 64)
    assert out.cache["vision.post"].shape == (2, 64) and out.cache["text.blocks.1.mlp"].shape == (2, L, 64)
    with m.edits({"vision.blocks.0.mlp": lambda t, lay: t * 3}):
        assert not torch.equal(m.run(batch).logits, base)
    with contextlib.suppress(KeyError), m.capture("vision.blocks.*.attn"), m.edits({"vision.pool.attn": lambda t, lay: -t}):
        m.run(batch)
        raise KeyError("inside")
    assert count_hooks(m.model) == n0 and torch.equal(m.run(batch).logits, base)


def test_attention_matches_eager(saved, m, batch):
    variant, d = saved
    assert m.model.config._attn_implementation == "sdpa"
    cls = type(m.model)
    eager = cls.from_pretrained(d, local_files_only=True, attn_implementation="eager").eval()
    native = m.backend.native_pixels(batch.inputs)
    enc = {k: batch.inputs[k] for k in ("input_ids", "attention_mask") if k in batch.inputs}
    with torch.no_grad():
        o = eager(**native, **enc, output_attentions=True)
    for l in (0, 1):
        v = m.attention(batch, layers=[l])[l]
        t = m.attention(batch, layers=[l], stream="text")[l]
        assert (v - o.vision_model_output.attentions[l]).abs().max() <= 1e-5
        assert (t - o.text_model_output.attentions[l]).abs().max() <= 1e-5
    # the MAP probe: our recomputation vs nn.MultiheadAttention's own weights on the same call
    ref, got = {}, {}
    mha = m.module("vision.pool.attn")

    def hook(module, args, kwargs, out):
        ref["w"] = module.forward(*args, **kwargs, need_weights=True, average_attn_weights=False)[1]
        got["w"] = m._attention_probs("vision.pool.attn", module, args, kwargs, out)

    with m.raw_hooks() as h:
        h.forward(mha, hook, with_kwargs=True)
        m.run(batch)
    assert got["w"].shape == (2, 2, 1, batch.layouts["vision"].shape[1])
    assert (got["w"] - ref["w"]).abs().max() <= 1e-5
    if variant == "siglip2":  # padding keys get no probe attention
        pad = batch.inputs["pixel_attention_mask"] == 0
        assert float(got["w"][:, :, 0][pad[:, None].expand(-1, 2, -1)].abs().max()) == 0


# -------------------------------------------------------------------- saliency
def test_every_clip_method_runs(m, saved):
    img = _image(48, 64, seed=3)
    b = m.prepare(images=[img], text=["a red circle", "a blue square"])
    n_patches = len(b.layouts["vision"].image_positions(0))
    n0 = count_hooks(m.model)
    names = saliency.names("clip")
    assert {"relevancy", "attention", "rollout", "gradcam", "ig", "occlusion", "clip_text", "msea"} <= set(names)
    for name in names:
        res = saliency.get(name)(m, **FAST.get(name, {})).attribute(b, target=[0, 1])
        json.dumps(res.to_json())
        assert np.all(np.isfinite(res.scores)) and np.abs(res.scores).max() > 0, name
        if name == "clip_text":
            assert res.scores.shape == (2, b.layouts["text"].shape[1])
            continue
        assert res.scores.shape == (2, n_patches), name
        assert res.heatmap(0).shape == (48, 64), name
    assert count_hooks(m.model) == n0


def test_relevancy_logprob_is_log_sigmoid(m):
    """SigLIP texts do not compete: ``score="logprob"`` explains log sigmoid(logit) (a softmax over
    the batch's texts would make one text's evidence another's counter-evidence)."""
    from vlinterp.saliency.relevancy import explained_scores
    from vlinterp.saliency.targets import resolve

    b = m.prepare(images=[_image(seed=6)], text=["a red circle", "a blue square"])
    t = resolve(m, b, [1, 0])
    assert t.meta["sigmoid"] and t.pool == "vision.pool.attn" and t.queries == [16, 16]  # the probe's virtual row
    logits = m.run(b).logits
    torch.testing.assert_close(explained_scores(t, logits, "logprob"), torch.nn.functional.logsigmoid(logits[:, [1, 0]]))
    torch.testing.assert_close(explained_scores(t, logits, "logit"), logits[:, [1, 0]])
    res = saliency.get("relevancy")(m, score="logprob").attribute(b, target=[0, 1])
    assert res.meta["score"] == "logprob" and np.all(np.isfinite(res.scores)) and np.abs(res.scores).max() > 0


@pytest.mark.parametrize("method", ["tam", "daam"])
def test_inapplicable_methods_say_why(m, method):
    with pytest.raises(UnsupportedError, match=f"'{method}' does not support clip"):
        saliency.get(method)(m)


def test_attention_with_grad_includes_the_probe(m, batch):
    ref = m.run(batch).logits
    n0 = count_hooks(m.model)
    with attention_with_grad(m, [0, 1], "vision", pool="vision.pool.attn") as probs:
        out = m.run(batch, grad=True)
    torch.testing.assert_close(out.logits.detach(), ref, rtol=1e-5, atol=1e-6)  # the model's own computation
    assert probs["pool"].shape == (2, 2, 1, batch.layouts["vision"].shape[1])
    g = torch.autograd.grad(out.logits[0, 0], [probs["pool"], probs[1]])
    assert all(float(x.abs().sum()) > 0 for x in g) and count_hooks(m.model) == n0


def _plant_probe(m, j: int, alpha: float = 40.0, lam: float = 1e3):
    """The MAP probe attends to patch ``j`` only: query = a constant ``u`` per head, keys
    ``(alpha / scale) cos(d, x) u`` with ``d`` the post-LayerNorm image of a vector ``v`` that an edit
    adds (times ``lam``) to patch ``j`` after the last block."""
    mha = m.module("vision.pool.attn")
    E, H = mha.embed_dim, mha.num_heads
    hd = E // H
    v = torch.randn(E, generator=torch.Generator().manual_seed(1))
    d = m.model.vision_model.post_layernorm(v[None])[0].detach()
    with torch.no_grad():
        mha.in_proj_weight[:E] = 0
        mha.in_proj_bias[: 2 * E] = 0
        mha.in_proj_weight[E : 2 * E] = 0
        for h in range(H):
            mha.in_proj_bias[h * hd] = 1.0
            mha.in_proj_weight[E + h * hd] = alpha * hd**0.5 * d / float(d @ d)
    last = f"vision.blocks.{m.num_layers('vision') - 1}.resid"

    def edit(t, layout):
        t = t.clone()
        t[:, layout.image_positions(0)[j]] += lam * v.to(t)
        return t

    return {last: edit}


@pytest.mark.parametrize("variant", VARIANTS)
def test_probe_readout_finds_planted_patch(variant):
    m, j = vi.load(f"tiny:{variant}"), 5
    edits = _plant_probe(m, j)
    b = m.prepare(images=[_image(48, 64, seed=2)], text=["a red circle", "a blue square"])
    with m.edits(edits):
        att = saliency.get("attention")(m).attribute(b, target=0)
        p = att.arrays["pool_attention"].mean(0)
        pos = b.layouts["vision"].image_positions(0).numpy()
        assert p[pos[j]] > 0.99  # the plant works
        A = m.attention(b)
        M = torch.stack([A[l][0] for l in A]).float().mean(dim=(0, 1))
        np.testing.assert_allclose(att.scores[0], (torch.as_tensor(p) @ M)[pos].numpy(), rtol=1e-5, atol=1e-7)
        roll = saliency.get("rollout")(m).attribute(b, target=0).scores[0]
        assert roll.argmax() == j and roll[j] > 0.2 and np.delete(roll, j).max() < 0.5 * roll[j]
        rel = saliency.get("relevancy")(m).attribute(b, target=[0, 1]).scores
    lit = rel.max(1) > 1e-6
    assert lit.any() and np.all(rel[lit].argmax(1) == j)
    assert np.all(np.delete(rel[lit], j, axis=1) < 0.2 * rel[lit].max(1, keepdims=True))


# ------------------------------------------------------------------------ CLI
def test_explain_cli_siglip(tmp_path):
    from vlinterp.cli import main

    p = tmp_path / "img.png"
    _image(48, 64).save(p)
    out = tmp_path / "ex"
    assert main(["explain", str(p), "--model", "tiny:siglip", "--text", "a red circle", "--text", "a blue square",
                 "--out", str(out)]) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["targets"] == ["a red circle", "a blue square"] and r["answer"] in r["targets"]
    assert r["probs_kind"] == "sigmoid"
    np.testing.assert_allclose(r["probs"], 1 / (1 + np.exp(-np.asarray(r["logits"]))), atol=1e-4)
    assert len(r["scores"][0]) == 16 and (out / "overlay.png").is_file() and (out / "report.html").is_file()
