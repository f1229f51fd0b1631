"""Loading dtypes: ``dtype="auto"`` (the checkpoint's, never fp16 on a CPU), open_clip in a low
precision, Stable Diffusion pipelines saved in fp16, and ``--dtype`` / ``--device`` on every command
that loads a model."""
import argparse
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp
from cli_util import assert_bad_input, run_cli
from vlinterp.adapters.dtypes import parse_dtype, resolve_dtype, safetensors_dtype, stored_dtype
from vlinterp.core.errors import ConfigError, LoadError


def _img(seed=0, size=64):
    return Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8"))


def _dtypes(module):
    return {p.dtype for p in module.parameters()}


# ------------------------------------------------------------------- open_clip
@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory):
    from vlinterp.adapters.clip import save_tiny

    return save_tiny("clip", str(tmp_path_factory.mktemp("oc")))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_open_clip_loads_in_one_low_precision_dtype_and_runs(open_clip_dir, dtype):
    """open_clip's own "bf16"/"fp16" keep LayerNorms and embeddings fp32; the pixels were then cast to
    fp32 (the first parameter's dtype) and the bf16 convolution refused them."""
    m = vlinterp.load(open_clip_dir, dtype=dtype)
    assert _dtypes(m.model) == {dtype}
    assert m.dtype == dtype
    ref = vlinterp.load(open_clip_dir, dtype=torch.float32)
    b = m.prepare(images=[_img()], text=["a red circle", "a blue square"])
    assert b.inputs["pixel_values"].dtype == dtype
    out = m.run(b, capture=["vision.blocks.*.resid"])
    want = ref.run(ref.prepare(images=[_img()], text=["a red circle", "a blue square"])).logits
    assert torch.isfinite(out.logits.float()).all()
    assert torch.allclose(out.logits.float(), want, atol=0.15 * float(want.abs().max()) + 0.05)


def test_adapter_dtype_is_the_matrices_dtype_under_mixed_precision(open_clip_dir):
    """A model built in open_clip's mixed precision (norms fp32) reports its matrices' dtype, and
    inputs reach the first convolution in that dtype."""
    import open_clip

    from vlinterp.adapters.clip import ClipAdapter

    model, _, pre = open_clip.create_model_and_transforms("local-dir:" + os.path.abspath(open_clip_dir), precision="bf16",
                                                          weights_only=True)
    assert {p.dtype for p in model.parameters()} == {torch.float32, torch.bfloat16}
    m = ClipAdapter(model, {"image": pre, "tokenizer": open_clip.get_tokenizer("local-dir:" + os.path.abspath(open_clip_dir))})
    assert m.dtype == torch.bfloat16
    assert m.prepare(images=[_img()]).inputs["pixel_values"].dtype == torch.bfloat16


# ------------------------------------------------------------ Stable Diffusion
@pytest.fixture(scope="module")
def sd_fp16_dir(tmp_path_factory):
    """A tiny SD-1.5-layout pipeline saved with every part in fp16 (``pipe.to(fp16).save_pretrained``)."""
    m = vlinterp.load("tiny:diffusion", dtype=torch.float16)
    return m.save(str(tmp_path_factory.mktemp("sd") / "sd16"))


@pytest.mark.slow
def test_stable_diffusion_saved_in_fp16_loads_in_one_dtype(sd_fp16_dir):
    """transformers loads the text encoder in fp16 and diffusers the UNet/VAE in fp32: run and
    sample failed with a dtype mismatch. Now every part shares one dtype (bf16 on a CPU: auto)."""
    assert stored_dtype(sd_fp16_dir) == torch.float16
    m = vlinterp.load(sd_fp16_dir)
    parts = {n: _dtypes(c) for n, c in m.model.named_children() if c is not None}
    assert parts == {"unet": {torch.bfloat16}, "text_encoder": {torch.bfloat16}, "vae": {torch.bfloat16}}, parts
    b = m.prepare(text=["a red circle"])
    assert torch.isfinite(m.run(b).logits.float()).all()
    assert len(m.sample(b, steps=2)) == 1
    m32 = vlinterp.load(sd_fp16_dir, dtype="float32")
    assert {d for c in m32.model.children() if c is not None for d in _dtypes(c)} == {torch.float32}
    assert torch.isfinite(m32.run(m32.prepare(text=["a red circle"])).logits).all()


def test_diffusion_components_of_two_dtypes_are_refused_with_the_fix():
    from vlinterp.adapters.diffusion import DiffusionAdapter
    from vlinterp.adapters.diffusion_tiny import build_components

    c = build_components()
    c["text_encoder"].to(torch.float16)
    with pytest.raises(LoadError, match=r"cast both to one dtype.*dtype="):
        DiffusionAdapter.from_components(c["unet"], c["text_encoder"], c["tokenizer"], c["scheduler"], c["vae"])


@pytest.mark.slow
def test_cli_explain_on_an_fp16_pipeline_runs(sd_fp16_dir, tmp_path, capsys, monkeypatch):
    """The CLI gave a raw traceback on this directory."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["explain", "--model", sd_fp16_dir, "--prompt", "a red circle", "--word", "circle",
                              "--steps", "2", "--out", str(tmp_path / "ex")], capsys)
    assert code == 0, err
    assert os.path.isfile(tmp_path / "ex" / "report.html")


# ----------------------------------------------------------------------- auto
@pytest.fixture(scope="module")
def llava_fp16_dir(tmp_path_factory):
    """A tiny LLaVA saved as the published llava-hf checkpoints are: fp16 weights, ``torch_dtype: float16``."""
    from vlinterp.adapters.llava_tiny import build_tiny

    model, proc = build_tiny("llava")
    model.to(torch.float16)
    d = str(tmp_path_factory.mktemp("llava16"))
    model.save_pretrained(d, safe_serialization=True)
    proc.save_pretrained(d)
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert "float16" in (cfg.get("dtype"), cfg.get("torch_dtype"))
    return d


def test_auto_never_loads_fp16_on_a_cpu(llava_fp16_dir):
    """The published configs say float16; on a CPU that is 4-40x slower than bf16."""
    for kw in ({}, {"dtype": "auto"}, {"dtype": None}, {"device": "cpu"}):
        m = vlinterp.load(llava_fp16_dir, **kw)
        assert _dtypes(m.model) == {torch.bfloat16}, kw
    b = m.prepare(images=[_img()], text=["is there a red circle?"])
    assert torch.isfinite(m.run(b).logits.float()).all()
    assert _dtypes(vlinterp.load(llava_fp16_dir, dtype=torch.float16).model) == {torch.float16}  # asked for: honoured
    assert _dtypes(vlinterp.load(llava_fp16_dir, dtype="float32").model) == {torch.float32}


def test_auto_keeps_the_checkpoint_dtype_elsewhere(tmp_path, open_clip_dir):
    from vlinterp.adapters.llava_tiny import save_tiny

    d = save_tiny("llava", str(tmp_path / "l32"))
    assert _dtypes(vlinterp.load(d).model) == {torch.float32}
    assert stored_dtype(open_clip_dir) == torch.float32 and _dtypes(vlinterp.load(open_clip_dir).model) == {torch.float32}
    assert resolve_dtype("auto", d, "cpu") == torch.float32
    assert resolve_dtype("auto", tmp_path / "nothing-here") is None
    assert _dtypes(vlinterp.load("tiny:llava", dtype="auto").model) == {torch.float32}


def test_stored_dtype_reads_configs_and_safetensors_headers(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(10, dtype=torch.float16), "b": torch.zeros(100, dtype=torch.bfloat16),
               "n": torch.zeros(1000, dtype=torch.long)}, str(tmp_path / "w.safetensors"))
    assert safetensors_dtype(str(tmp_path / "w.safetensors")) == torch.bfloat16
    assert stored_dtype(tmp_path) == torch.bfloat16
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "x", "text_config": {"torch_dtype": "float16"}}))
    assert stored_dtype(tmp_path) == torch.float16
    assert resolve_dtype(None, tmp_path, "cpu") == torch.bfloat16
    assert resolve_dtype(None, tmp_path, "cuda") == torch.float16
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("torch.float32") is torch.float32
    with pytest.raises(ConfigError, match="unknown dtype"):
        parse_dtype("float8")
    with pytest.raises(ConfigError, match="unknown dtype"):
        vlinterp.load("tiny:vit", dtype="int8")


# ------------------------------------------------------------------------ CLI
def _leaves(p, path=()):
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), p
    for a in subs:
        for name, sp in a.choices.items():
            yield from _leaves(sp, path + (name,))


# the commands that load a model without a --model flag (a positional model or organism)
LOADS_WITHOUT_MODEL_FLAG = {"info", "zoo eval"}


def test_every_model_loading_command_takes_dtype_and_device():
    from vlinterp.cli import build_parser

    loading = []
    for name, p in _leaves(build_parser()):
        opts = {o: a for a in p._actions for o in a.option_strings}
        if "--model" in opts or name in LOADS_WITHOUT_MODEL_FLAG:
            loading.append(name)
            assert "--dtype" in opts and "--device" in opts, f"vlinterp {name} loads a model but has no --dtype/--device"
            assert opts["--dtype"].default == "auto" and "float16" in opts["--dtype"].choices
    assert {"ask", "explain", "trace", "steer generate", "prune bench", "sae harvest", "serve", "zoo eval"} <= set(loading)


@pytest.mark.parametrize("argv,match", [
    (["info", "tiny:llava", "--device", "gpu0"], "not a device"),
    (["info", "tiny:llava", "--device", "cuda:7"], "CUDA device"),
    (["info", "tiny:llava", "--dtype", "float8"], "invalid choice"),
    (["ask", "IMG", "--prompt", "q", "--device", "tpu"], "not a device"),
    (["zoo", "eval", "shapes-llava", "--device", "cuda:9"], "CUDA device"),
])
def test_bad_load_options_are_refused_before_loading(argv, match, tmp_path, capsys, monkeypatch):
    if "IMG" in argv:
        _img().save(tmp_path / "img.png")
        argv = [str(tmp_path / "img.png") if a == "IMG" else a for a in argv]
    assert_bad_input(argv, tmp_path, capsys, monkeypatch, match=match)


def test_load_options_reach_the_loader(tmp_path, capsys, monkeypatch):
    import vlinterp.adapters.registry as registry

    seen = []
    real = registry.load

    def spy(name, **kw):
        seen.append(kw)
        return real(name, **kw)

    monkeypatch.setattr(vlinterp, "load", spy)
    monkeypatch.setattr(registry, "load", spy)
    code, out, err = run_cli(["info", "tiny:vit", "--dtype", "bfloat16", "--device", "cpu"], capsys)
    assert code == 0, err
    assert seen and seen[-1]["dtype"] is torch.bfloat16 and seen[-1]["device"] == "cpu"
