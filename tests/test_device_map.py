"""A model dispatched by accelerate (``vi.load(path, device_map="auto", max_memory=...)``) that does
not fit its memory budget: the layers past the budget are offloaded to disk and streamed in on
each forward. Captures, edits, tracing, generation and the capture budget work on it exactly as on
the plainly loaded model, and no hook is left behind. (No GPU here: the budget is the CPU's, so
the split is CPU + disk; on a GPU machine the same path splits GPU + CPU.)"""
import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp as vi

pytest.importorskip("accelerate")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from vlinterp.adapters.llava import save_tiny

    d = tmp_path_factory.mktemp("dm")
    path = save_tiny("llava", str(d / "model"))
    ref = vi.load(path)
    size = sum(p.numel() * p.element_size() for p in ref.model.parameters())
    off = vi.load(path, device_map="auto", max_memory={"cpu": int(size * 0.6)}, offload_folder=str(d / "offload"))
    return ref, off


def _batch(m, seed=0):
    img = Image.fromarray((np.random.RandomState(seed).rand(64, 64, 3) * 255).astype("uint8"))
    return m.prepare(images=[img], text=["is there a red circle?"])


def _hook_counts(model):
    return [(len(mod._forward_hooks), len(mod._forward_pre_hooks)) for mod in model.modules()]


def test_offloaded_model_is_split_and_inputs_go_to_the_execution_device(pair):
    ref, off = pair
    placed = set(off.model.hf_device_map.values())
    assert "disk" in placed and "cpu" in placed, off.model.hf_device_map
    assert any(p.device.type == "meta" for p in off.model.parameters())  # weights really live on disk
    assert off.device == torch.device("cpu")


def test_captures_and_edits_equal_the_plain_model(pair):
    ref, off = pair
    b = _batch(ref)
    off.run(b)  # transformers installs its own output-recording hooks on the first forward; they stay
    before = _hook_counts(off.model)
    r1 = ref.run(b, capture=["blocks.*.resid", "vision.blocks.*.resid", "projector"])
    r2 = off.run(b, capture=["blocks.*.resid", "vision.blocks.*.resid", "projector"])
    assert torch.equal(r1.logits, r2.logits)
    assert set(r1.cache) == set(r2.cache) and len(r1.cache) > 3
    for k in r1.cache:
        assert torch.equal(r1.cache[k], r2.cache[k]), k

    def push(t, layout):  # an edit on a disk-offloaded layer
        return t + 0.5

    e1 = ref.run(b, edits={"blocks.1.resid": push}).logits
    e2 = off.run(b, edits={"blocks.1.resid": push}).logits
    assert torch.equal(e1, e2) and not torch.equal(e1, r1.logits)
    with pytest.raises(RuntimeError, match="boom"):
        def bad(t, layout):
            raise RuntimeError("boom")
        off.run(b, edits={"blocks.1.resid": bad})
    assert _hook_counts(off.model) == before  # nothing leaked, after an exception too
    with off.capture("blocks.*.resid", budget_mb=0) as cache:  # budgeted capture on the offloaded model
        off.run(b)
        assert cache.n_spilled == sum(k.startswith("blocks.") for k in r1.cache)
        assert torch.equal(cache["blocks.1.resid"], r1.cache["blocks.1.resid"])


def test_tracing_and_generation_equal_the_plain_model(pair):
    from vlinterp.tracing import trace

    ref, off = pair
    b = _batch(ref, 1)
    t1 = trace(ref, b, "yes", components=("resid", "attn"), samples=2, seed=3, object_mask=(0, 0, 32, 32))
    t2 = trace(off, b, "yes", components=("resid", "attn"), samples=2, seed=3, object_mask=(0, 0, 32, 32))
    assert np.allclose(t1.arrays["p_patch"], t2.arrays["p_patch"], rtol=1e-6, atol=1e-9)
    g1, g2 = ref.generate(b, max_new_tokens=4), off.generate(b, max_new_tokens=4)
    assert torch.equal(g1.sequences, g2.sequences) and g1.texts == g2.texts
