"""Diffusion adapter on the tiny SD-1.5-layout pipeline (latent) and the pixel-space variant."""
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

import vlinterp as vi
from vlinterp.adapters.diffusion import DiffusionAdapter, save_tiny
from vlinterp.core.errors import (ImageError, LayerRangeError, PromptError, ShapeMismatchError, UnknownSiteError,
                                  UnsupportedError)
from vlinterp.core.hooks import count_hooks

PROMPTS = ["a red circle and the blue square", "a zebra"]  # "zebra" is not in the tiny vocabulary


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("sd")
    save_tiny("diffusion", d)
    return str(d)


@pytest.fixture(scope="module")
def m(saved):
    return vi.load(saved)


@pytest.fixture(scope="module")
def pipe(saved):
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(saved, local_files_only=True)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def b(m):
    return m.prepare(text=PROMPTS, seed=1)


@pytest.fixture(scope="module")
def b1(m):
    return m.prepare(text=["a red circle"], seed=2)


def _ref_noise_pred(pipe, b):
    with torch.no_grad():
        ctx = pipe.text_encoder(b.inputs["input_ids"])[0]
        return pipe.unet(b.inputs["latents"], b.inputs["timestep"], encoder_hidden_states=ctx).sample


# ---------------------------------------------------------------- loading
def test_load_native_pipeline_dir(saved, m, tmp_path):
    assert os.path.isfile(os.path.join(saved, "model_index.json"))
    assert isinstance(m, DiffusionAdapter) and m.vae is not None and m.main_stream == "text"
    assert DiffusionAdapter.can_load(saved) and not DiffusionAdapter.can_load(str(tmp_path))
    assert m.image_size == m.unet.config.sample_size * 2 ** (len(m.vae.config.block_out_channels) - 1)


# ----------------------------------------------------------------- layout
def test_text_layout(m, b):
    lay = b.layouts["text"]
    L = m.model.text_encoder.config.max_position_embeddings
    assert lay.shape == (2, L) and b.layout is lay
    n_words = len(PROMPTS[0].split())
    assert lay.counts(0) == {"special": 2, "text": n_words, "pad": L - n_words - 2, "image": 0}
    mods = lay.modalities(0)
    assert mods[0] == "special" and mods[n_words + 1] == "special" and set(mods[n_words + 2:]) == {"pad"}
    ids = b.inputs["input_ids"][0]
    assert ids[0] == m.processor.bos_token_id and ids[n_words + 1] == m.processor.eos_token_id
    assert (b.inputs["attention_mask"][0] == 0).sum() == lay.counts(0)["pad"]
    assert lay.span("prompt", 0).tolist() == list(range(1, n_words + 1))
    assert lay.span("word:red", 0).tolist() == [2] and lay.span("word:square", 0).tolist() == [7]
    assert lay.span("word:zebra", 1).tolist() == [2] and lay.counts(1)["text"] == 2  # unknown word is still text
    assert lay.span("word:red", 1).numel() == 0


def test_clip_bpe_tokenizer_layout(tmp_path):
    """Real SD tokenizers: CLIP BPE with pad == eos == unk and words split into several tokens."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from vlinterp.adapters.diffusion_tiny import build_components

    chars = "abcdefghijklmnopqrstuvwxyz"
    merges = ["r e", "re d</w>", "c i", "ci r", "cir c", "circ l", "circl e</w>"]
    toks = list(chars) + [c + "</w>" for c in chars] + [m_.replace(" ", "") for m_ in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(toks)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=12)
    assert tok.pad_token_id == tok.eos_token_id == tok.unk_token_id
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(toks), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=12, eos_token_id=tok.eos_token_id))
    c = build_components()
    m = DiffusionAdapter.from_components(c["unet"], te, tok, c["scheduler"], c["vae"])
    lay = m.prepare(text=["red circle xy", "red"]).layouts["text"]
    assert lay.modalities(0)[:7] == ["special", "text", "text", "text", "text", "special", "pad"]
    assert lay.counts(1) == {"special": 2, "text": 1, "pad": 9, "image": 0}
    assert lay.span("word:xy", 0).tolist() == [3, 4] and lay.span("word:circle", 0).tolist() == [2]
    assert lay.span("last", 0).tolist() == [5]


def test_unet_layout_and_heatmap(m, b):
    lay = b.layouts["unet"]
    h = m.unet.config.sample_size
    assert lay.shape == (2, h * h) and lay.num_images == 2 and lay.grid(1) == (h, h)
    assert lay.counts(0)["image"] == h * h == len(lay.image_positions(0))
    assert lay.image_row(1) == 1 and lay.images[0].size == (m.image_size, m.image_size)
    img = Image.fromarray(np.full((100, 160, 3), 120, np.uint8))  # H=100, W=160
    bi = m.prepare(images=[img], text=["a red circle"])
    g = bi.layouts["unet"].images[0]
    assert g.size == (100, 160) and np.allclose(g.tiles[0].box, (30, 0, 130, 100), atol=1)
    scores = np.zeros((h, h), np.float32)
    scores[0, 0] = 1.0
    heat = bi.layouts["unet"].to_heatmap(scores)
    assert heat.shape == (100, 160)
    assert heat[:, :29].max() == 0 and heat[:, 131:].max() == 0
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert y < 100 / h * 1.5 and 30 <= x < 30 + 100 / h * 1.5


def test_prepare_noise_and_images(m, pipe):
    b1, b2, b3 = (m.prepare(text=["a red circle"], seed=s) for s in (0, 0, 1))
    assert torch.equal(b1.inputs["latents"], b2.inputs["latents"]) and not torch.equal(b1.inputs["latents"], b3.inputs["latents"])
    assert int(b1.inputs["timestep"]) == m.scheduler.config.num_train_timesteps // 2
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    bi = m.prepare(images=[img], text=["a red circle"], timestep=300, seed=0)
    x = torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mode() * pipe.vae.config.scaling_factor
    assert torch.allclose(bi.inputs["clean"], z, atol=1e-6)
    ref = pipe.scheduler.add_noise(z, b1.inputs["noise"], torch.tensor([300]))
    assert torch.allclose(bi.inputs["latents"], ref, atol=1e-6)


# ----------------------------------------------------------------- parity
@pytest.mark.parametrize("capture", [None, "**"])
def test_parity_with_diffusers(m, pipe, b, capture):
    out = m.run(b, capture=capture)
    ref = _ref_noise_pred(pipe, b)
    assert out.logits.shape == (2, 4, 16, 16)
    assert (out.logits - ref).abs().max().item() < 1e-6
    if capture:
        assert len(out.cache) == len(m.sites())


# ---------------------------------------------------------------- capture
def test_capture_shapes(m, b):
    out = m.run(b, capture=["unet.down.0", "unet.xattn.*", "text.blocks.*.resid", "unet.mid.0"])
    c = out.cache
    assert c["unet.down.0"].shape == (2, 32, 8, 8)  # hidden of (hidden, skips); downsampled once
    assert c["unet.mid.0"].shape == (2, 64, 8, 8)
    assert c["unet.xattn.0"].shape == (2, 16 * 16, 32)
    for k in range(len(m.sites("unet.xattn.*"))):
        hh, ww = m.xattn_grid(k, b)
        assert c[f"unet.xattn.{k}"].shape[1] == hh * ww
    assert c["text.blocks.1.resid"].shape == (2, 16, 32)
    assert m.sites("text.blocks.*.resid") == ["text.blocks.0.resid", "text.blocks.1.resid"]
    n_attn2 = sum(n.endswith("attn2") for n, _ in m.unet.named_modules())
    assert len(m.sites("unet.xattn.*")) == n_attn2 == len(m.sites("unet.sattn.*")) == 4
    assert m.site_table["unet.xattn.2"].layer == 2 and m.site_table["unet.xattn.2"].stream == "unet"
    with pytest.raises(UnknownSiteError, match="unet.xattn.0"):
        m.run(b, capture="unet.xatn.0")


# ------------------------------------------------------------------ edits
@pytest.mark.slow
def test_edits_apply_and_leave_no_trace(m, b):
    base = m.run(b).logits
    n0 = count_hooks(m.model)
    seen = {}

    def zero(t, layout):
        seen["shape"] = layout.shape
        return torch.zeros_like(t)

    assert not torch.equal(m.run(b, edits={"unet.xattn.0": zero}).logits, base)
    assert seen["shape"] == b.layouts["unet"].shape
    with m.edits({"unet.mid.0": zero, "text.blocks.0.mlp": zero}):
        assert count_hooks(m.model) == n0 + 2
        assert not torch.equal(m.run(b).logits, base)
    assert count_hooks(m.model) == n0 and torch.equal(m.run(b).logits, base)

    def boom(t, layout):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        m.run(b, edits={"unet.up.0": boom}, capture="**")
    with pytest.raises(ShapeMismatchError):
        m.run(b, edits={"unet.down.1": lambda t, l: t[:, :1]})
    assert count_hooks(m.model) == n0 and torch.equal(m.run(b).logits, base)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["capture", "edit"]),
                          st.sampled_from(["unet.down.0", "unet.xattn.*", "text.blocks.*.attn", "unet.mid.0", "logits"]),
                          st.booleans()), min_size=1, max_size=4))
@pytest.mark.slow
def test_hypothesis_no_leaks(m, b1, ops):
    b = b1
    base = m.run(b).logits
    n0 = count_hooks(m.model)
    for kind, site, fail in ops:
        try:
            ctx = m.capture(site) if kind == "capture" else m.edits({site: lambda t, l: t * 0.5})
            with ctx:
                m.run(b)
                if fail:
                    raise ValueError("inside")
        except ValueError:
            pass
    assert count_hooks(m.model) == n0
    assert torch.equal(m.run(b).logits, base)


# -------------------------------------------------------------- attention
def test_xattn_probs_match_diffusers_attn_processor(m, b):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet, rec = m.unet, {}

    class Recording(AttnProcessor):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def __call__(self, attn, *args, **kwargs):
            own = attn.get_attention_scores

            def grab(q, k, mask=None):
                p = own(q, k, mask)
                rec[self.name] = p
                return p

            attn.get_attention_scores = grab
            try:
                return super().__call__(attn, *args, **kwargs)
            finally:
                del attn.get_attention_scores

    orig = unet.attn_processors
    unet.set_attn_processor({k: Recording(k[: -len(".processor")]) for k in orig})
    try:
        with torch.no_grad():
            eager = m.run(b).logits
    finally:
        unet.set_attn_processor(orig)
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())
    assert (eager - m.run(b).logits).abs().max() < 1e-5  # eager processor = sdpa output
    for stream in ("xattn", "sattn"):
        probs = m.attention(b, stream=stream)  # model runs its default sdpa processors
        assert sorted(probs) == list(range(4))
        for k, p in probs.items():
            path = m.site_table[f"unet.{stream}.{k}"].module[len("unet."):]
            hh, ww = m.xattn_grid(k, b, stream=stream)
            heads = unet.get_submodule(path).heads
            n_key = 16 if stream == "xattn" else hh * ww
            assert p.shape == (2, heads, hh * ww, n_key)
            assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5)
            assert (p - rec[path].view(p.shape)).abs().max() < 1e-5
    with pytest.raises(LayerRangeError):
        m.attention(b, layers=[99], stream="xattn")


def test_text_attention_matches_eager(m, b, saved):
    from transformers import CLIPTextModel

    te = CLIPTextModel.from_pretrained(os.path.join(saved, "text_encoder"), attn_implementation="eager")
    with torch.no_grad():
        ref = te(b.inputs["input_ids"], output_attentions=True).attentions
    probs = m.attention(b, layers=[0, 1])
    assert sorted(probs) == [0, 1]
    for l in (0, 1):
        assert probs[l].shape == (2, 4, 16, 16)
        assert (probs[l] - ref[l]).abs().max() < 1e-5
    assert probs[0][0, :, 0, 1:].abs().max() == 0  # causal
    with pytest.raises(LayerRangeError):
        m.attention(b, layers=[99])


# --------------------------------------------------------------- sampling
@pytest.mark.slow
def test_sample_matches_pipeline_and_captures_per_step(m, pipe, b):
    with m.capture(["unet.down.0", "text.final"]) as c:
        ims, x = m.sample(b, steps=2, progress=False, return_tensor=True)
    assert len(ims) == 2 and all(isinstance(i, Image.Image) and i.size == (32, 32) and i.mode == "RGB" for i in ims)
    assert len(c.steps["unet.down.0"]) == 2 and len(c.steps["text.final"]) == 1
    for g in (1.0, 3.0):
        x = m.sample(b, steps=2, guidance_scale=g, progress=False, return_tensor=True)[1]
        ref = pipe(prompt=PROMPTS, height=32, width=32, num_inference_steps=2, guidance_scale=g,
                   latents=b.inputs["noise"].clone(), output_type="pt").images
        assert (x - ref).abs().max() < 1e-5
    calls = []
    with m.capture("unet.xattn.0") as c2, m.edits({"unet.mid.0": lambda t, l: calls.append(l.shape) or t * 0}):
        edited = m.sample(b, steps=2, guidance_scale=3.0, progress=False, return_tensor=True)[1]
    assert calls == [(4, 256)] * 2 and c2["unet.xattn.0"].shape[0] == 4  # cfg: 2B rows, layouts follow
    assert not torch.equal(edited, m.sample(b, steps=2, guidance_scale=3.0, progress=False, return_tensor=True)[1])
    with pytest.raises(UnsupportedError, match="sample"):
        m.generate(b)


# -------------------------------------------------------------- bad input
def test_bad_input(m):
    with pytest.raises(ImageError):
        m.prepare(images=[Image.new("RGB", (1, 1))], text=["a"])
    with pytest.raises(PromptError):
        m.prepare()
    with pytest.raises(PromptError):
        m.prepare(images=[Image.new("RGB", (32, 32))] * 3, text=["a", "b"])
    with pytest.raises(PromptError):
        m.prepare(text=["a"], timestep=5000)
    with pytest.raises(PromptError):
        m.prepare(text=[3])
    with pytest.warns(UserWarning, match="truncated"):
        bt = m.prepare(text=["red " * 40])
    assert bt.layouts["text"].counts(0)["pad"] == 0


# ------------------------------------------------------------ pixel space
@pytest.mark.slow
def test_pixel_space_round_trip(tmp_path):
    tiny = DiffusionAdapter.tiny("diffusion-pixel")
    m = DiffusionAdapter.from_components(tiny.unet, tiny.model.text_encoder, tiny.processor, tiny.scheduler, vae=None)
    assert m.vae is None and m.image_size == 32 and m.latent_size == 32
    save_tiny("diffusion-pixel", tmp_path)
    assert not (tmp_path / "model_index.json").exists()
    assert json.loads((tmp_path / "vlinterp_diffusion.json").read_text())["pixel_space"] is True
    m2 = vi.load(str(tmp_path))
    assert isinstance(m2, DiffusionAdapter) and m2.vae is None
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 32, 3), dtype=np.uint8))
    b = m.prepare(images=[img], text=["a red circle"], timestep=100)
    assert b.inputs["latents"].shape == (1, 3, 32, 32) and b.layouts["unet"].grid(0) == (32, 32)
    assert b.inputs["clean"].min() >= -1 and b.inputs["clean"].max() <= 1
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(tmp_path, subfolder="unet")
    te = CLIPTextModel.from_pretrained(tmp_path / "text_encoder")
    with torch.no_grad():
        ref = unet(b.inputs["latents"], b.inputs["timestep"], encoder_hidden_states=te(b.inputs["input_ids"])[0]).sample
    assert (m2.run(b).logits - ref).abs().max() < 1e-6
    assert (m2.run(b).logits - m.run(b).logits).abs().max() < 1e-5  # in-memory vs reloaded weights: kernel noise only
    with m2.capture("unet.up.1") as c:
        ims = m2.sample(b, steps=2, progress=False)
    assert ims[0].size == (32, 32) and len(c.steps["unet.up.1"]) == 1  # img2img: only steps <= t=100
    with pytest.raises(ShapeMismatchError):
        DiffusionAdapter.from_components(DiffusionAdapter.tiny().unet, m.model.text_encoder, m.processor, m.scheduler)
