"""LLaVA-OneVision, Gemma 3, PaliGemma, InternVL, SmolVLM and Idefics3 behave like the models they wrap:
capture and edit leave logits bit-identical, attention maps recomputed while the model runs sdpa
equal the eager kernel's weights (Gemma 3: its bidirectional image blocks), full restoration in
causal tracing recovers the clean run, teacher-forced answers stay invisible to the prompt
(PaliGemma's prefix is bidirectional: the answer is its causal suffix), and a saved tiny directory
reloads through ``from_pretrained`` with the same logits."""
import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp as vi
from vlinterp.adapters import families
from vlinterp.core.hooks import count_hooks
from vlinterp.core.layout import IMAGE

FAMILIES = ["llava-onevision", "gemma3", "paligemma", "internvl", "smolvlm", "idefics3"]
RUNTIME = FAMILIES[:-1]  # Idefics3 runs SmolVLM's code path: layouts, contract and save/load cover it


@pytest.fixture(scope="module", params=RUNTIME)
def vlm(request):
    return vi.load(f"tiny:{request.param}")


def _img(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _two_rows(vlm):
    return vlm.prepare(images=[[_img(40, 64), _img(64, 40, 1)], _img(24, 90, 2)], text=["compare the two images", "what is it?"])


def test_capture_and_edit_leave_no_trace(vlm):
    b = _two_rows(vlm)
    with torch.no_grad():
        ref = vlm.model(**b.inputs).logits
    n0 = count_hooks(vlm.model)
    out = vlm.run(b, capture="**")
    assert torch.equal(out.logits, ref) and count_hooks(vlm.model) == n0
    T, D = b.layout.shape[1], vlm.text_config.hidden_size
    assert out.cache["blocks.1.resid"].shape == (2, T, D)
    assert out.cache["vision.blocks.0.resid"].shape[:2] == b.layouts["vision"].shape
    assert out.cache["projector"].shape[:2] == b.layouts["projector"].shape
    zero = lambda t, layout: torch.zeros_like(t)  # noqa: E731
    for site in ("projector", "vision.blocks.0.mlp", "blocks.0.attn"):
        assert not torch.allclose(vlm.run(b, edits={site: zero}).logits, ref), site
        assert count_hooks(vlm.model) == n0
    with vlm.edits({"vision.embed": lambda t, layout: t * 0.5}):
        assert count_hooks(vlm.model) == n0 + 1
        assert not torch.allclose(vlm.run(b).logits, ref)
    assert count_hooks(vlm.model) == n0 and torch.equal(vlm.run(b).logits, ref)

    def boom(t, layout):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        vlm.run(b, edits={"vision.blocks.1.attn": boom})
    assert count_hooks(vlm.model) == n0 and torch.equal(vlm.run(b).logits, ref)
    seen = {}
    vlm.run(b, edits={"vision.blocks.0.resid": lambda t, layout: seen.setdefault("layout", layout) and t})
    assert seen["layout"] is b.layouts["vision"]


def test_position_ids_are_the_models_own(vlm):
    """``position_ids(batch)`` is what the rotary embedding receives (PaliGemma counts from 1);
    passing it back gives the same logits bit for bit."""
    b = _two_rows(vlm)
    got = []

    def grab(module, args, kwargs):
        got.append(kwargs["position_ids"] if "position_ids" in kwargs else args[1])

    with vlm.raw_hooks() as h:
        h.pre(vlm.lm.rotary_emb, grab, with_kwargs=True)
        ref = vlm.run(b).logits
    mine = vlm.position_ids(b)
    assert mine.shape == b.inputs["input_ids"].shape and got
    assert all(torch.equal(g.expand_as(mine), mine) for g in got)
    assert int(mine[0, 0]) == (1 if vlm.family == "paligemma" else 0)
    with torch.no_grad():
        again = vlm.model(**b.inputs, position_ids=mine).logits
    assert torch.equal(again, ref)


def _eager_weights(model, adapter):
    """The eager model's attention weights per layer, read from its attention modules' outputs."""
    rec = {}
    handles = []
    for stream in ("lm", "vision"):
        for layer, site in adapter.attention_sites(stream).items():
            mod = model.get_submodule(adapter.site_table[site].module)
            handles.append(mod.register_forward_hook(lambda m, a, o, k=(stream, layer): rec.__setitem__(k, o[1])))
    return rec, handles


@pytest.mark.parametrize("family", RUNTIME)
def test_attention_matches_eager_while_running_sdpa(family):
    from vlinterp.adapters.vlm import VlmAdapter

    spec = families.for_tiny(family)
    sdpa = VlmAdapter(*spec.build_tiny(family, attn_implementation="sdpa"))
    eager_model, _ = spec.build_tiny(family, attn_implementation="eager")
    assert sdpa.model.config.vision_config._attn_implementation == "sdpa"
    b = _two_rows(sdpa)
    rec, handles = _eager_weights(eager_model, sdpa)
    try:
        with torch.no_grad():
            eager_model(**b.inputs)
    finally:
        for h in handles:
            h.remove()
    mask = b.inputs["attention_mask"].bool()
    lm = sdpa.attention(b, layers=[0, 1])
    for l in (0, 1):
        ref = rec[("lm", l)]
        assert lm[l].shape == ref.shape
        assert (lm[l] - ref).abs()[mask[:, None, :, None].expand_as(ref)].max().item() <= 1e-5
    vis = sdpa.attention(b, layers=[0, 1], stream="vision")
    for l in (0, 1):
        ref = rec[("vision", l)]
        assert vis[l].shape == ref.shape and vis[l].shape[0] == b.layouts["vision"].shape[0]
        assert (vis[l] - ref).abs().max().item() <= 1e-5
    if family == "gemma3":  # image tokens attend to later tokens of their own image, never to a later image
        L = b.layout
        a, c = L.image_positions(0), L.image_positions(1)
        for l in (0, 1):
            p = lm[l][0]
            assert (p[:, a[0], a[1]] > 0).all() and (p[:, a[3], a[4]] > 0).all()
            assert (p[:, a[-1], c[0]] == 0).all() and (p[:, a[0], c] == 0).all()
        full = lm[1][0]  # the global layer: the first image token sees the whole image
        assert (full[:, a[0], a] > 0).all()
        text = torch.as_tensor(np.nonzero(L.modality[0] == 1)[0])
        first_text_after = text[text > a[-1]][0]
        assert (full[:, a[0], first_text_after] == 0).all()  # text after the image stays in the future


def test_trace_full_restoration_is_one(vlm):
    """Restoring the last LM layer's residual everywhere recovers the clean prediction exactly,
    restoring nothing leaves the corrupted one; restoring vision block 0 everywhere (every crop
    row) recovers it too."""
    from vlinterp.tracing import trace

    b = vlm.prepare(images=[_img(40, 64)], text=["is there a red circle?"])
    target = int(vlm.run(b).logits[0, int(b.layout.span("last", 0)[0])].argmax())
    L, T = vlm.num_layers(), b.layout.shape[1]
    r = trace(vlm, b, target, positions={"all": list(range(T)), "none": []}, layers=[L - 1], samples=1)
    assert abs(r.arrays["te"][0]) > 1e-6
    assert abs(r.arrays["rr"][0, 0, 0] - 1.0) <= 1e-6 and abs(r.arrays["rr"][0, 0, 1]) <= 1e-6
    V = b.layouts["vision"]
    vis = trace(vlm, b, target, stream="vision", positions={"all": list(range(V.shape[1]))}, layers=[0], samples=1)
    assert abs(vis.arrays["rr"][0, 0, 0] - 1.0) <= 1e-6


@pytest.mark.slow
def test_trace_batched_equals_naive(vlm):
    """Rows restoring different cells in one forward (resumed from a cached layer input where the
    LM allows it) give what one full forward per cell gives."""
    from vlinterp.tracing import trace, trace_naive

    b = vlm.prepare(images=[_img(40, 64)], text=["is there a red circle?"])
    target = int(vlm.run(b).logits[0, int(b.layout.span("last", 0)[0])].argmax())
    kw = dict(components=("resid", "attn"), positions="groups", samples=1)
    fast, slow = trace(vlm, b, target, batch_size=4, **kw), trace_naive(vlm, b, target, **kw)
    assert np.abs(fast.arrays["p_patch"] - slow.arrays["p_patch"]).max() <= 1e-5


def test_answers_prompts_and_generation(vlm):
    from vlinterp.core.errors import PromptError

    b = vlm.prepare(images=[_img(40, 64)], text=["what color is the square?"])
    with_answer = vlm.prepare(images=[_img(40, 64)], text=["what color is the square?"], answer="red")
    last = int(with_answer.layout.span("last", 0)[0])
    assert last == b.layout.shape[1] - 1 and len(with_answer.layout.span("answer", 0)) == 1
    # the answer is teacher-forced after the prompt: the prompt's positions never see it
    assert torch.allclose(vlm.run(with_answer).logits[0, last], vlm.run(b).logits[0, -1], atol=1e-5)
    if vlm.family == "paligemma":
        assert with_answer.inputs["token_type_ids"][0, -1] == 1 and with_answer.inputs["token_type_ids"][0, :-1].max() == 0
        assert "labels" not in with_answer.inputs
    g = vlm.generate(b, max_new_tokens=3)
    assert g.new_tokens.shape == (1, 3)
    calls = []
    with vlm.edits({"blocks.0.resid": lambda t, layout: calls.append(t.shape[1]) or t}):
        again = vlm.generate(b, max_new_tokens=3)
    assert torch.equal(g.new_tokens, again.new_tokens) and calls[1:] == [1, 1]
    raw = b.meta["formatted"][0]
    tok = vlm.spec.image_token
    assert raw.count(tok) == 1
    b2 = vlm.prepare(images=[_img(40, 64)], text=raw, chat=False)
    assert torch.equal(b2.inputs["input_ids"], b.inputs["input_ids"])
    with pytest.raises(PromptError, match="placeholder"):
        vlm.prepare(images=[_img(40, 64)], text="no placeholder here", chat=False)


# the CLI test saves and explains InternVL and Gemma 3 directories; PaliGemma (its processor edits the
# tokenizer) and SmolVLM (its processor needs num2words) stay in the fast lane
@pytest.mark.parametrize("family", [f if f in ("paligemma", "smolvlm") else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES])
def test_saved_tiny_loads_with_from_pretrained(family, tmp_path):
    """``vi.load(DIR)`` of a saved tiny model: ``AutoProcessor`` + the model class, same ids, same logits."""
    from vlinterp.adapters.vlm_tiny import save_tiny

    d = save_tiny(family, str(tmp_path / family))
    m = vi.load(d)
    spec = families.for_tiny(family)
    ref_model, ref_proc = spec.build_tiny(family)
    assert m.family == spec.name and type(m.model) is type(ref_model) and type(m.processor) is type(ref_proc)
    assert m.name == family
    images = [[_img(40, 64), _img(24, 90, 1)]]
    b = m.prepare(images=images, text=["compare the two images"])
    from vlinterp.adapters.vlm import VlmAdapter

    rb = VlmAdapter(ref_model, ref_proc).prepare(images=images, text=["compare the two images"])
    assert torch.equal(rb.inputs["input_ids"], b.inputs["input_ids"])
    with torch.no_grad():
        assert torch.equal(m.run(b).logits, ref_model(**rb.inputs).logits)
    assert int((b.layout.modality == IMAGE).sum()) == int((rb.layout.modality == IMAGE).sum()) > 0
