"""DINOv2 (+ registers) in the ViT family, on tiny random models of the real transformers classes
with DINOv2's own ``BitImageProcessor``: layouts (CLS and registers special), loading, the explained
score (classifier / prototypes / feature norm), leak-free hooks, attention parity, every ``vit``
saliency method, and ``vlinterp explain`` on a saved directory."""
import contextlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp as vi
from vlinterp import saliency
from vlinterp.adapters.vit import VitAdapter, save_tiny
from vlinterp.adapters.vit_dinov2 import Dinov2Adapter
from vlinterp.core.errors import PromptError, UnsupportedError
from vlinterp.core.hooks import count_hooks

VARIANTS = ["dinov2", "dinov2-reg"]
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


# ------------------------------------------------------------------ loading, layout
def test_load_layout_and_feature_norm(saved, m):
    variant, d = saved
    assert isinstance(m, Dinov2Adapter) and VitAdapter.can_load(d) and m.kind == "vit"
    assert type(m.processor).__name__.startswith("BitImageProcessor")
    n_reg = 4 if variant == "dinov2-reg" else 0
    b = m.prepare(images=[_image(), _image(100, 30, 1)])
    lay = b.layout
    assert lay.shape == (2, 1 + n_reg + 16) and lay.grid(0) == lay.grid(1) == (4, 4)
    for r in range(2):
        assert lay.counts(r) == {"pad": 0, "text": 0, "image": 16, "special": 1 + n_reg}
        assert lay.span("cls", r).tolist() == [0]
        assert (lay.span("registers", r).tolist() if n_reg else []) == list(range(1, 1 + n_reg))
    assert lay.image_positions(1).tolist() == list(range(1 + n_reg, 17 + n_reg))
    # the explained score of a headless checkpoint: the CLS norm entering the final LayerNorm
    assert m.score_kind == "feature_norm" and m.class_names() == ["feature_norm"]
    out = m.run(b, capture="vision.blocks.1.resid")
    pre = out.cache["vision.blocks.1.resid"][:, 0]
    torch.testing.assert_close(out.logits, pre.norm(dim=-1, keepdim=True), rtol=1e-6, atol=1e-6)
    # same weights, same scores as the tiny model it was saved from
    tiny = vi.load(f"tiny:{variant}")
    assert torch.equal(tiny.prepare(images=[_image()]).inputs["pixel_values"], m.prepare(images=[_image()]).inputs["pixel_values"])
    torch.testing.assert_close(tiny.run(tiny.prepare(images=[_image()])).logits, m.run(m.prepare(images=[_image()])).logits,
                               rtol=0, atol=1e-6)


def test_faithfulness_score_is_the_explained_score(m):
    from vlinterp.metrics.faithfulness import vit_score_fn

    imgs = np.stack([np.asarray(_image()), np.asarray(_image(seed=4))])
    want = m.run(m.prepare(images=list(imgs))).logits[:, 0].numpy()  # not a softmax over one "class" (always 1)
    np.testing.assert_allclose(vit_score_fn(m, "feature_norm")(imgs), want, rtol=1e-5)


def test_box_follows_resize_and_centre_crop():
    """A marker pixel: where the processor puts it on the crop equals where the box maps it."""
    m = vi.load("tiny:dinov2")
    for h, w in ((48, 120), (150, 60)):
        a = np.zeros((h, w, 3), np.uint8)
        y, x = int(h * 0.55), int(w * 0.4)
        a[y - 2 : y + 3, x - 2 : x + 3] = 255
        b = m.prepare(images=[Image.fromarray(a)])
        px = b.inputs["pixel_values"][0].mean(0)
        H, W = px.shape
        py, pxx = np.unravel_index(int(px.argmax()), (H, W))
        x0, y0, x1, y1 = b.layout.images[0].tiles[0].box
        assert abs(x0 + (pxx + 0.5) * (x1 - x0) / W - x) <= 2.5 and abs(y0 + (py + 0.5) * (y1 - y0) / H - y) <= 2.5


def test_classifier_checkpoint_and_prototypes(tmp_path):
    head = Dinov2Adapter.tiny("dinov2-reg", id2label=["cat", "dog", "bird"])
    assert head.has_classifier and head.class_names() == ["cat", "dog", "bird"] and head.sites()[-1] == "logits"
    b = head.prepare(images=[_image()])
    with torch.no_grad():
        native = head.model(pixel_values=b.inputs["pixel_values"]).logits
    assert torch.equal(head.run(b).logits, native)
    head.save_pretrained(str(tmp_path / "h"))
    loaded = vi.load(str(tmp_path / "h"))
    assert type(loaded.model).__name__ == "Dinov2WithRegistersForImageClassification" and loaded.class_names() == ["cat", "dog", "bird"]
    torch.testing.assert_close(loaded.run(loaded.prepare(images=[_image()])).logits, native, rtol=0, atol=1e-6)
    with pytest.raises(UnsupportedError, match="has a classifier"):
        head.set_prototypes(torch.zeros(1, 64))
    # headless: cosine similarity to reference images
    m = vi.load("tiny:dinov2")
    m.set_references([_image(), _image(seed=5)], ["ref_a", "ref_b"])
    assert m.score_kind == "prototypes" and m.class_names() == ["ref_a", "ref_b"]
    s = m.run(m.prepare(images=[_image(), _image(seed=5)])).logits
    torch.testing.assert_close(torch.diagonal(s), torch.ones(2), rtol=0, atol=1e-5)
    assert float(s[0, 1]) < 0.9999
    with pytest.raises(PromptError, match="prototypes must be"):
        m.set_prototypes(torch.zeros(2, 7))
    m.set_prototypes(None)
    assert m.class_names() == ["feature_norm"]


# ------------------------------------------------------------- hooks, attention
def test_capture_and_edits_leave_no_trace(m):
    b = m.prepare(images=[_image()])
    base = m.run(b).logits
    n0 = count_hooks(m.model)
    out = m.run(b, capture=["vision.embed", "vision.blocks.*.attn", "vision.norm"])
    T = b.layout.shape[1]
    assert all(out.cache[s].shape == (1, T, 64) for s in out.cache) and len(out.cache) == 4
    with m.edits({"vision.blocks.0.mlp": lambda t, lay: t * 5}):
        assert not torch.equal(m.run(b).logits, base)
    with contextlib.suppress(KeyError), m.capture("vision.blocks.*.resid"), m.edits({"vision.embed": lambda t, lay: -t}):
        m.run(b)
        raise KeyError("inside")
    assert count_hooks(m.model) == n0 and torch.equal(m.run(b).logits, base)


def test_attention_matches_eager(saved, m):
    _, d = saved
    assert m.model.config._attn_implementation == "sdpa"
    b = m.prepare(images=[_image(), _image(seed=2)])
    eager = type(m.model).from_pretrained(d, local_files_only=True, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = eager(pixel_values=b.inputs["pixel_values"], output_attentions=True).attentions
    att = m.attention(b)
    assert sorted(att) == [0, 1]
    for l in att:
        assert att[l].shape == ref[l].shape and (att[l] - ref[l]).abs().max() <= 1e-5


# -------------------------------------------------------------------- saliency
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_vit_method_runs(variant):
    m = vi.load(f"tiny:{variant}")
    b = m.prepare(images=[_image(48, 64, seed=3)])
    n0 = count_hooks(m.model)
    names = saliency.names("vit")
    assert {"relevancy", "attention", "rollout", "gradcam", "ig", "occlusion", "msea"} <= set(names)
    for name in names:
        res = saliency.get(name)(m, **FAST.get(name, {})).attribute(b)
        json.dumps(res.to_json())
        assert res.targets == ["feature_norm"] and res.scores.shape == (1, 16), name  # patches only, no CLS/registers
        assert np.all(np.isfinite(res.scores)) and np.abs(res.scores).max() > 0, name
        assert res.heatmap(0).shape == (48, 64), name
    assert count_hooks(m.model) == n0


@pytest.mark.parametrize("method", ["clip_text", "tam", "daam"])
def test_inapplicable_methods_say_why(method):
    with pytest.raises(UnsupportedError, match=f"'{method}' does not support vit"):
        saliency.get(method)(vi.load("tiny:dinov2"))


# ------------------------------------------------------------------------ CLI
def test_explain_cli_on_saved_dir(saved, tmp_path):
    from vlinterp.cli import main

    variant, d = saved
    p = tmp_path / "img.png"
    _image(48, 64).save(p)
    out = tmp_path / "ex"
    assert main(["explain", str(p), "--model", d, "--out", str(out), "--compare", "rollout"]) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["answer"] == "feature_norm" and r["score"] == "feature_norm" and r["value"] > 0
    assert len(r["scores"][0]) == 16 and r["layout"]["grid"] == [[4, 4]]
    assert (out / "overlay.png").is_file() and (out / "report.html").is_file()
