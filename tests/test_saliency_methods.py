"""Saliency methods on tiny models: shapes, planted signals, completeness, leaks, MSEA, DAAM."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp as vi
from vlinterp import saliency
from vlinterp.core.errors import ConfigError, LayerRangeError, PromptError, ShapeMismatchError, UnsupportedError, VlinterpError
from vlinterp.core.hooks import count_hooks
from vlinterp.saliency.base import SaliencyMethod, attention_with_grad, pool_pixels
from vlinterp.saliency.msea import cell_means

FAST = {"ig": {"n_steps": 4}, "msea": {"scales": (0.5, 1.0)}, "daam": {"steps": 2}}
TEXTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def img():  # non-square: heat maps must come back 48 x 64
    a = np.full((48, 64, 3), 40, np.uint8)
    a[8:24, 8:28], a[28:44, 36:60] = (220, 40, 40), (40, 80, 220)
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def models():
    return {name: vi.load(f"tiny:{name}") for name in ("vit", "vit-hf", "clip", "clip-hf", "llava")}


def _batch(m, img, **kw):
    extra = {"clip": {"text": TEXTS}, "vlm": {"text": "what color is the circle?", **kw}}.get(m.kind, {})
    return m.prepare(images=[img], **extra)


# ------------------------------------------------------- registry, bad input
def test_registry_and_bad_arguments(models, img):
    assert {"attention", "rollout", "relevancy", "gradcam", "ig", "occlusion", "tam", "clip_text", "daam", "msea"} <= set(saliency.names())
    assert saliency.names("diffusion") == ["daam"] and "tam" in saliency.names("vlm") and "tam" not in saliency.names("vit")
    with pytest.raises(VlinterpError, match="unknown saliency method 'nope'; known: attention"):
        saliency.get("nope")
    assert saliency.MSEA is saliency.get("msea")
    v = models["vit"]
    with pytest.raises(ConfigError, match="unknown option.*layer; options: max_new_tokens, layers, heads"):
        saliency.get("attention")(v, layer=1)
    with pytest.raises(UnsupportedError, match="'tam' does not support vit"):
        saliency.get("tam")(v)
    b = _batch(v, img)
    with pytest.raises(LayerRangeError, match="layer 7 out of range"):
        saliency.get("rollout")(v, layers=[7]).attribute(b)
    with pytest.raises(PromptError, match="unknown class"):
        saliency.get("attention")(v).attribute(b, target="zebra")
    with pytest.raises(PromptError, match="images and texts"):
        saliency.get("relevancy")(models["clip"]).attribute(models["clip"].prepare(images=[img]))


# ------------------------------------------------- every method, every family
@pytest.mark.parametrize("family", ["vit", "vit-hf", "clip", "clip-hf", "llava"])
def test_every_method_returns_result(models, img, family):
    m = models[family]
    b = _batch(m, img)
    n_hooks = count_hooks(m.model)
    for name in saliency.names(m.kind):
        res = saliency.get(name)(m, **FAST.get(name, {})).attribute(b)
        json.dumps(res.to_json())
        assert res.meta["method"] == name and len(res.targets) == res.scores.shape[0] >= 1, name
        assert np.all(np.isfinite(res.scores)), name
        if name == "clip_text":
            assert res.layout is None and res.scores.shape == (1, b.layouts["text"].shape[1])
            continue
        assert res.scores.shape == (len(res.targets), len(res.layout.image_positions(res.image_index))), name
        assert res.heatmap(0).shape == (48, 64), name
        assert name == "tam" or np.abs(res.scores).max() > 0, name  # tam clips negative logits (may be all 0)
    assert count_hooks(m.model) == n_hooks


def test_llava_targets_per_answer_token(models, img):
    m = models["llava"]
    b = _batch(m, img)
    rel = saliency.get("relevancy")(m)
    two = rel.attribute(b, target="red circle")
    assert two.targets == ["red", "circle"] and two.scores.shape == (2, 16) and two.meta["answer"] == "red circle"
    one = rel.attribute(b, target="red")  # causal LM: token 0's relevancy ignores later tokens
    np.testing.assert_allclose(one.scores[0], two.scores[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rel.attribute(b, target=two.meta["answer_ids"]).scores, two.scores, rtol=1e-5, atol=1e-7)
    greedy = rel.attribute(b)  # target None: greedy answer, teacher-forced
    assert greedy.meta["answer"] and len(greedy.targets) == len(greedy.meta["answer_ids"]) >= 1
    tf = m.prepare(images=[img], text="what color is the circle?", answer="red circle")
    np.testing.assert_allclose(rel.attribute(tf).scores, two.scores, rtol=1e-5, atol=1e-7)


def test_clip_text_scores_words_only(models, img):
    m = models["clip"]
    b = _batch(m, img)
    res = saliency.get("clip_text")(m).attribute(b, target=[0, 1])
    text = b.layouts["text"]
    for k in range(2):
        words = text.span("prompt", k).numpy()
        assert res.meta["positions"][k] == words.tolist() and len(res.meta["tokens"][k]) == len(words)
        off = np.setdiff1d(np.arange(text.shape[1]), words)
        assert np.all(res.scores[k, off] == 0) and res.scores[k, words].max() > 0


# ---------------------------------------------------- attention with gradients
@pytest.mark.parametrize("family", ["vit", "vit-hf", "clip", "llava"])
def test_attention_with_grad_is_the_models_own(models, img, family):
    m = models[family]
    b = _batch(m, img, answer="red")
    stream = "lm" if family == "llava" else "vision"
    ref_probs, ref_logits = m.attention(b, stream=stream), m.run(b).logits
    n_hooks = count_hooks(m.model)
    layers = sorted(ref_probs)
    with attention_with_grad(m, layers, stream) as probs:
        out = m.run(b, grad=True)
    torch.testing.assert_close(out.logits.detach(), ref_logits, rtol=1e-4, atol=1e-5)
    for l in layers:
        torch.testing.assert_close(probs[l].detach(), ref_probs[l], rtol=1e-4, atol=1e-5)
    grads = torch.autograd.grad(out.logits.flatten()[0], [probs[l] for l in layers])
    assert all(g.abs().sum() > 0 for g in grads)
    with pytest.raises(RuntimeError, match="boom"), attention_with_grad(m, layers, stream):
        raise RuntimeError("boom")
    assert count_hooks(m.model) == n_hooks  # and the switches are restored:
    assert (family != "vit" or m.model.blocks[0].attn.fused_attn) and (family != "llava" or m.model.config.text_config._attn_implementation == "sdpa")


# ------------------------------------------------------------ planted signals
def _plant_attention(m, j: int, alpha: float = 40.0, lam: float = 1e3):
    """Tiny timm ViT where every query of every block attends to patch ``j``: queries are a constant
    ``u`` per head, keys ``(alpha / scale) cos(d, x) u`` with ``d`` = the block's norm of a vector ``v``
    that an edit adds (times ``lam``) to patch ``j``'s embedding: logit ``alpha`` at ``j``, ~N(0, alpha/8) elsewhere."""
    v = torch.randn(m.model.embed_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for blk in m.model.blocks:
            a, D = blk.attn, m.model.embed_dim
            d = blk.norm1(v[None])[0]
            q_b, k_w = torch.zeros(D), torch.zeros(D, D)
            for h in range(a.num_heads):
                q_b[h * a.head_dim] = 1.0
                k_w[h * a.head_dim] = alpha / a.scale * d / D
            a.qkv.weight[:D], a.qkv.bias[:D], a.qkv.weight[D : 2 * D], a.qkv.bias[D : 2 * D] = 0, q_b, k_w, 0

    def edit(t, layout):
        t = t.clone()
        t[:, layout.image_positions(0)[j]] += lam * v.to(t)
        return t

    return {"vision.embed": edit}


def test_attention_rollout_relevancy_find_planted_patch(img):
    m, j = vi.load("tiny:vit"), 9
    edits = _plant_attention(m, j)
    b = m.prepare(images=[img])
    with m.edits(edits):
        A = m.attention(b, layers=[0, 1])
        assert all(float(A[l][0, :, :, 1 + j].min()) > 0.99 for l in A)  # the plant works: all rows -> j
        for name in ("attention", "rollout"):
            s = saliency.get(name)(m).attribute(b).scores[0]
            assert s.argmax() == j and s[j] > 0.7 and np.delete(s, j).max() < 0.01, name  # rollout: 1 - 0.5**2 on j
        rel = saliency.get("relevancy")(m).attribute(b, target=list(range(10))).scores
    lit = rel.max(1) > 1e-6
    assert lit.any()  # classes whose logit grows with attention to j light it, and only it
    assert np.all(rel[lit].argmax(1) == j) and np.all(np.delete(rel[lit], j, axis=1) < 1e-3 * rel[lit].max(1, keepdims=True))


def test_tam_finds_planted_logit(models, img):
    m, j = models["llava"], 5
    b = m.prepare(images=[img], text="what color is the circle?", answer="red")
    w = m.model.lm_head.weight[m.token_id("red")].detach()
    last = f"blocks.{m.num_layers() - 1}.resid"

    def edit(t, layout):
        return t + torch.zeros_like(t).index_fill(1, layout.image_positions(0)[j : j + 1], 1) * 50 * w / w.norm()

    tam = saliency.get("tam")(m, denoise=False)
    plain = tam.attribute(b)
    assert np.all(plain.scores >= 0) and np.all(plain.scores <= plain.arrays["raw"] + 1e-6)
    assert all(a >= 0 for a in plain.meta["alpha"])
    with m.edits({last: edit}):
        res = tam.attribute(b)
    assert res.arrays["raw"][0].argmax() == j and res.scores[0].argmax() == j
    assert saliency.get("tam")(m, layer=0).attribute(b).scores.shape == (1, 16)


def _only_patch(j):
    def edit(t, layout):  # the classifier sees patch j (and CLS) only
        keep = torch.zeros(t.shape[1], dtype=t.dtype)
        keep[layout.span("cls", 0)], keep[layout.image_positions(0)[j]] = 1, 1
        return t * keep[None, :, None].to(t.device)

    return {"vision.embed": edit}


def test_occlusion_and_ig_light_the_only_patch_that_matters(models, img):
    m, j = models["vit"], 6
    b = _batch(m, img)
    with m.edits(_only_patch(j)):
        occ = saliency.get("occlusion")(m).attribute(b).scores[0]
        ig = saliency.get("ig")(m, n_steps=8).attribute(b).scores[0]
    for s in (occ, ig):
        assert s.argmax() == j and s[j] > 0 and np.allclose(np.delete(s, j), 0, atol=1e-7)


def test_ig_completeness(models, img):
    m = models["vit"]
    b = _batch(m, img)
    res = saliency.get("ig")(m, n_steps=64, absolute=False).attribute(b)
    c = res.meta["target"][0]
    with torch.no_grad():
        x = b.inputs["pixel_values"]
        gap = float(m.model(x)[0, c] - m.model(torch.zeros_like(x))[0, c])
    delta = float(res.arrays["convergence_delta"][0])
    assert abs(delta) < 0.01 * abs(gap) + 1e-4
    # signed patch means x cell size sum to the attributions' total = f(x) - f(0) - delta
    cells = res.scores[0].sum() * 3 * (x.shape[-2] // 4) * (x.shape[-1] // 4)
    assert cells == pytest.approx(gap + delta, rel=1e-3, abs=1e-4)


def test_gradcam_releases_hooks_and_grads(models, img):
    m = models["vit"]
    b = _batch(m, img)
    n_hooks = count_hooks(m.model)
    assert all(p.grad is None for p in m.model.parameters())
    meth = saliency.get("gradcam")(m, layer=0)
    res = meth.attribute(b, target=[0, 1])
    assert res.meta["site"] == "vision.blocks.0.resid" and res.scores.shape == (2, 16) and np.all(res.scores >= 0)
    assert count_hooks(m.model) == n_hooks and all(p.grad is None for p in m.model.parameters())
    with pytest.raises(ShapeMismatchError, match=r"not \[B, T, D\]"):
        saliency.get("gradcam")(m, site="logits").attribute(b)
    assert count_hooks(m.model) == n_hooks


@pytest.mark.parametrize("family", ["llava-next", "qwen2.5-vl"])
def test_gradcam_on_tiled_and_packed_vlms_is_gradcam_at_the_first_lm_block(family, img):
    """Where the image reaches the LM as tiles or packed patches, Grad-CAM runs at ``blocks.0.resid``
    over every tile's image tokens: each row equals a from-scratch Grad-CAM there (ReLU of the
    activations weighted by the gradient's mean over the image's tokens), hooks and grads left as found."""
    m = vi.load(f"tiny:{family}")
    b = m.prepare(images=[img], text=["what is in the image?"])
    n_hooks = count_hooks(m.model)
    meth = saliency.create("gradcam", m)
    res = meth.attribute(b, target=[0, 1])
    assert res.meta["site"] == "blocks.0.resid" and count_hooks(m.model) == n_hooks
    assert all(p.grad is None for p in m.model.parameters())
    t = meth.resolve(b, [0, 1], 0)   # the teacher-forced batch and the explained logits
    pos = res.layout.image_positions(0)
    assert res.scores.shape == (2, len(pos)) and res.scores.max() > 0
    for k in range(2):
        got = {}
        with m.raw_hooks() as h:
            h.forward("blocks.0.resid", lambda mod, a, out: got.__setitem__("x", out[0] if isinstance(out, tuple) else out))
            act_out = m.run(t.batch, grad=True)
            act = got["x"]
            act.retain_grad()
            t.select(act_out.logits)[0, k].backward()
        a, g = act[0, pos].detach(), act.grad[0, pos]
        want = torch.relu((a * g.mean(0)).sum(-1)).numpy()
        assert np.allclose(res.scores[k], want, rtol=1e-4, atol=1e-6 * float(np.abs(want).max())), k
        m.model.zero_grad(set_to_none=True)


def _first_layer_input(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava-next", "qwen2.5-vl", "internvl"])
def test_ig_on_tiled_and_packed_vlms_integrates_over_the_image_tokens(family, img):
    """Where no single crop exists, ``ig`` integrates over the image-token rows of the first decoder
    layer's input, from the rows of the baseline image to the image's own. Each row equals a
    from-scratch IG (captum's Gauss-Legendre points, rows written by a plain pre-hook, gradients by
    autograd, summed over D; the first target), and the scores add up to f(image) - f(baseline image)
    run as pixels, up to captum's convergence delta."""
    m = vi.load(f"tiny:{family}")
    b = m.prepare(images=[img], text=["what is in the image?"])
    n_hooks = count_hooks(m.model)
    meth = saliency.create("ig", m, n_steps=12, baseline=0.5)
    res = meth.attribute(b, target=[0, 1])
    assert res.meta["ig_space"] == "tokens" and count_hooks(m.model) == n_hooks
    assert all(p.grad is None for p in m.model.parameters())
    t = meth.resolve(b, [0, 1], 0)
    pos = res.layout.image_positions(0)
    assert res.scores.shape == (2, len(pos)) and np.abs(res.scores).max() > 0

    def rows_of(pixel_values):
        got = {}
        inputs = {**t.batch.inputs, "pixel_values": pixel_values}
        bb = vi.adapters.base.Batch(inputs, t.batch.layouts, t.batch.main, t.batch.images, t.batch.text, t.batch.meta)
        with m.raw_hooks() as h, torch.no_grad():
            h.pre("inputs_embeds", lambda mod, a, kw: got.__setitem__("x", _first_layer_input(a, kw)[0, pos].clone()), with_kwargs=True)
            score = t.select(m.run(bb).logits)[0]
        return got["x"], score

    px = t.batch.inputs["pixel_values"]
    x, fx = rows_of(px)
    x0, f0 = rows_of(torch.full_like(px, 0.5))
    u, w = np.polynomial.legendre.leggauss(12)
    for k in range(2):
        gap = float(fx[k] - f0[k])  # completeness, up to captum's convergence delta
        assert res.scores[k].sum() == pytest.approx(gap + float(res.arrays["convergence_delta"][k]), rel=1e-4, abs=1e-7)
        if k:
            continue
        grads = torch.zeros_like(x)
        for alpha, weight in zip(0.5 * (u + 1), 0.5 * w):
            e = (x0 + float(alpha) * (x - x0)).requires_grad_(True)

            def put(mod, a, kw, e=e):
                h = _first_layer_input(a, kw).clone()
                h[0, pos] = e
                return ((h,) + tuple(a[1:]), kw) if a else (a, {**kw, "hidden_states": h})

            with m.raw_hooks() as hk:
                hk.pre("inputs_embeds", put, with_kwargs=True)
                g, = torch.autograd.grad(t.select(m.run(t.batch, grad=True).logits)[0, k], e)
            grads += float(weight) * g
        want = ((x - x0) * grads).sum(-1).numpy()
        assert np.allclose(res.scores[k], want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max())), k


def test_ig_space_option(models, img):
    """``space=pixels`` keeps the one-crop refusal on a tiled VLM; ``space=tokens`` on a one-crop
    LLaVA gives the token path there too; encoders have no image tokens; a bad value is refused
    before any work. SmolVLM drops an all-zero image as padding: the zero baseline still runs there."""
    nxt = vi.load("tiny:llava-next")
    b = nxt.prepare(images=[img], text="what color is the circle?")
    with pytest.raises(UnsupportedError, match="one crop per image"):
        saliency.get("ig")(nxt, space="pixels").attribute(b, target="red")
    m = models["llava"]
    r = saliency.get("ig")(m, space="tokens", n_steps=4).attribute(_batch(m, img), target="red")
    assert r.meta["ig_space"] == "tokens" and r.scores.shape == (1, 16)
    with pytest.raises(UnsupportedError, match="no.*image tokens|has none"):
        saliency.get("ig")(models["vit"], space="tokens").attribute(_batch(models["vit"], img))
    with pytest.raises(ConfigError, match="auto, pixels or tokens"):
        saliency.get("ig")(m, space="latent")
    smol = vi.load("tiny:smolvlm")
    r = saliency.get("ig")(smol, n_steps=16).attribute(smol.prepare(images=[img], text="what color is the circle?"), target="red")
    assert r.meta["ig_space"] == "tokens" and np.abs(r.scores).max() > 0
    assert abs(r.meta["convergence_delta"][0]) < 0.05 * abs(float(r.scores.sum())) + 1e-6


def test_occlusion_on_a_packed_vlm_occludes_the_original_image(img):
    """Qwen2.5-VL packs its patches (no [3, H, W] crop): occlusion fills windows of the original image
    with the processor's mean colour and re-runs the processor. With one-cell windows that do not
    overlap, each token's attribution is exactly the drop of the explained score when its own cell
    is occluded (from scratch here, on the teacher-forced answer)."""
    from vlinterp.saliency.occlusion_image import fill_colour, windows
    from vlinterp.saliency.targets import _teacher_force

    m = vi.load("tiny:qwen2.5-vl")
    b = m.prepare(images=[img], text=["what is in the image?"])
    meth = saliency.create("occlusion", m)
    res = meth.attribute(b, target=[0])
    assert res.meta["occlusion_space"] == "original image"
    t = meth.resolve(b, [0], 0)
    x = np.asarray(img.convert("RGB"))
    H, W = x.shape[:2]

    def score(a):
        with torch.no_grad():
            tb = _teacher_force(m, [a], t.batch.meta["formatted"][0], t.meta["answer_ids"])
            return float(t.select(m.run(tb).logits)[0, 0])

    g = res.layout.images[0]
    rows, cols = g.tiles[0].grid
    wins = windows(t, 1, 1, H, W)
    assert len(wins) == rows * cols and g.tiles[0].box == (0.0, 0.0, float(W), float(H))
    want = []
    for y0, y1, x0, x1 in wins:
        o = x.copy()
        o[y0:y1, x0:x1] = fill_colour(m, 0.0)
        want.append(score(x) - score(o))
    assert np.allclose(res.scores[0], want, rtol=1e-4, atol=1e-6) and np.abs(want).max() > 0


# ---------------------------------------------------------------------- MSEA
class _PatchColour(SaliencyMethod):
    """Scale-invariant toy: each patch's mean red value (the target is ignored)."""

    name = "patch_colour"
    kinds = ("vit",)

    def compute(self, t):
        return pool_pixels(t.batch.inputs["pixel_values"][0, :1], t, absolute=False)[None].repeat(t.n, 0) + 3.0


def test_msea_of_scale_invariant_method_is_the_method(models):
    m = models["vit"]
    a = np.zeros((128, 128, 3), np.uint8)
    a[:64, :64, 0], a[64:, 64:, 0] = 255, 128
    b = m.prepare(images=[Image.fromarray(a)])
    meth = _PatchColour(m)
    base = meth.attribute(b)
    one = saliency.MSEA(meth, scales=(1.0,)).attribute(b)
    np.testing.assert_allclose(one.scores[0], cell_means(base.heatmap(0), base.layout, 0), rtol=1e-6)
    multi = saliency.MSEA(meth, scales=(0.5, 1.0, 2.0)).attribute(b)
    assert multi.scores.shape == base.scores.shape and multi.meta["scales"] == [0.5, 1.0, 2.0]
    np.testing.assert_allclose(multi.arrays["heatmap"][0], base.heatmap(0), rtol=0.03)
    np.testing.assert_allclose(multi.scores, one.scores, rtol=0.03)


def test_llava_msea_and_next_tiles(models, img):
    m = models["llava"]
    res = saliency.get("msea")(m, method="attention", scales=(0.5, 1.0)).attribute(_batch(m, img), target="red circle")
    assert res.targets == ["red", "circle"] and res.scores.shape == (2, 16) and res.arrays["heatmap"].shape == (2, 48, 64)
    nxt = vi.load("tiny:llava-next")  # base 4x4 tile + 6x8 high-resolution tile for a 48x64 image
    b = nxt.prepare(images=[img], text="what color is the circle?")
    for name in ("relevancy", "tam"):
        r = saliency.get(name)(nxt).attribute(b, target="red")
        assert r.scores.shape == (1, 16 + 48) and r.heatmap(0).shape == (48, 64)
    r = saliency.get("ig")(nxt, n_steps=4).attribute(b, target="red")
    assert r.scores.shape == (1, 16 + 48) and r.heatmap(0).shape == (48, 64) and r.meta["ig_space"] == "tokens"


# ---------------------------------------------------------------------- DAAM
@pytest.mark.slow
def test_daam_grid_and_word_response():
    m = vi.load("tiny:diffusion")
    b = m.prepare(text=["a red circle and a blue square"], seed=0)
    n_hooks = count_hooks(m.model)
    daam = saliency.get("daam")(m, steps=2)
    res = daam.attribute(b)
    h, w = b.layouts["unet"].grid(0)
    assert res.targets == ["a", "red", "circle", "and", "blue", "square"] and res.scores.shape == (6, h * w)
    assert res.heatmap(0).shape == (m.image_size, m.image_size) and res.arrays["image"].shape == (m.image_size, m.image_size, 3)
    assert np.all(res.scores >= 0) and not np.allclose(res.scores[1], res.scores[2])
    with pytest.raises(PromptError, match="'zebra' is not in prompt"):
        daam.attribute(b, target="zebra")

    def boost(t, layout):  # make "red"'s text embedding dominate its keys
        t = t.clone()
        t[:, layout.span("word:red", 0)] *= 30
        return t

    with m.edits({"text.final": boost}):
        boosted = daam.attribute(b, target=["red", "circle"])
    red = res.targets.index("red")
    assert boosted.scores[0].mean() > 2 * res.scores[red].mean()
    assert count_hooks(m.model) == n_hooks
