"""SAEs vlinterp trains load and attach in SAELens as they do in vlinterp: the inference SAE that
``train_sae`` returns is the saved one, and SAELens's ``SAETransformerBridge.add_sae`` splices a saved
SAE at the hook its ``cfg.json`` names, changing the logits exactly as vlinterp's own splice does."""
import json
import os

import pytest
import torch

import vlinterp
from vlinterp.eval.sae_data import shapes_items
from vlinterp.sae import ActivationStore
from vlinterp.sae.attach import load_sae, save_sae, splice_edit, tl_hook_name
from vlinterp.sae.train import train_sae

SITE = "blocks.1.resid"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny LLaVA saved to disk (SAELens's bridge reads its config.json) and loaded from there."""
    from vlinterp.adapters.llava import save_tiny

    path = save_tiny("llava", str(tmp_path_factory.mktemp("tiny") / "llava"))
    m = vlinterp.load(path)
    items = shapes_items("sae-interop", 12, 0, "mixed")
    store = ActivationStore.harvest(m, SITE, items, batch_size=6, progress=False, tokens="content")
    return path, m, items, store


def test_tl_hook_names():
    assert tl_hook_name("blocks.3.resid") == "blocks.3.hook_resid_post"
    assert tl_hook_name("blocks.0.attn") == "blocks.0.hook_attn_out" and tl_hook_name("blocks.2.mlp") == "blocks.2.hook_mlp_out"
    assert tl_hook_name("embed") == "hook_embed" and tl_hook_name("vision.blocks.1.resid") is None


def test_batchtopk_returned_equals_saved(tiny, tmp_path):
    """A batchtopk SAE trains with a batch-dependent top-k; SAELens saves the JumpReLU SAE with the learned
    threshold. ``train_sae`` returns that same inference SAE: same class, same features as its saved copy,
    and a row's features do not depend on the rows beside it."""
    from sae_lens import SAE

    _, _, _, store = tiny
    sae = train_sae(store, arch="batchtopk", d_sae=48, k=4, steps=30, batch_size=32, progress=False)
    save_sae(sae, str(tmp_path / "bt"))
    saved = SAE.load_from_disk(str(tmp_path / "bt"))
    assert type(sae) is type(saved) and type(sae).__name__ == "JumpReLUSAE"
    x = store.acts[:64]
    with torch.no_grad():
        f, g = sae.encode(x), saved.encode(x)
        assert torch.equal(f, g) and (f > 0).any()
        alone = sae.encode(x[:5])  # no batch dependence left (a batch top-k would choose other features here)
        assert torch.equal(alone > 0, f[:5] > 0) and torch.allclose(alone, f[:5], atol=1e-6)
    for name, p in saved.state_dict().items():
        assert torch.equal(sae.state_dict()[name], p), name
    assert json.load(open(tmp_path / "bt" / "cfg.json"))["architecture"] == "jumprelu"


def test_saelens_bridge_attaches_a_saved_sae_like_vlinterp(tiny, tmp_path):
    from sae_lens import SAE
    from sae_lens.analysis.sae_transformer_bridge import SAETransformerBridge

    path, m, items, store = tiny
    sae = train_sae(store, d_sae=48, k=4, steps=20, batch_size=32, progress=False)
    save_sae(sae, str(tmp_path / "sae"))
    md = json.load(open(tmp_path / "sae" / "cfg.json"))["metadata"]
    assert md["hook_name"] == "blocks.1.hook_resid_post" and md["model_name"] == m.name and md["vlinterp_site"] == SITE
    bridge = SAETransformerBridge.boot_transformers(path, hf_model=m.model, tokenizer=m.tokenizer, device="cpu")
    b = m.prepare(images=[items[0].image], text=[items[0].prompt])
    kw = {"pixel_values": b.inputs["pixel_values"], "attention_mask": b.inputs["attention_mask"]}
    with torch.no_grad():
        clean = bridge(b.inputs["input_ids"], **kw)
        bridge.add_sae(SAE.load_from_disk(str(tmp_path / "sae")))  # SAELens alone reads the directory
        assert list(bridge.acts_to_saes) == ["blocks.1.hook_resid_post"]
        attached = bridge(b.inputs["input_ids"], **kw)
        bridge.reset_saes()
    plain = m.run(b).logits
    with m.edits({SITE: splice_edit(load_sae(str(tmp_path / "sae")), SITE)}):
        ours = m.run(b).logits
    assert (clean - plain).abs().max() <= 1e-5
    assert (attached - clean).abs().max() > 0.05  # the SAE really acts ...
    assert (attached - ours).abs().max() <= 1e-5  # ... exactly where and as vlinterp's splice does
