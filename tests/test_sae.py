import json
import os

import numpy as np
import pytest
import torch

import vlinterp
from vlinterp.core.errors import OutputError, LoadError, NaNError, PromptError, ShapeMismatchError
from vlinterp.core.hooks import count_hooks
from vlinterp.core.items import Item
from vlinterp.eval.sae_data import shapes_items
from vlinterp.sae import ActivationStore
from vlinterp.sae.analysis import auroc, cross_modal_weights, reference_activations, sample_scores
from vlinterp.sae.attach import feature_edit, load_sae, save_sae, splice_edit
from vlinterp.sae.quality import reconstruction
from vlinterp.sae.train import _checkpoints, train_sae

SITE = "blocks.1.resid"


@pytest.fixture(scope="module")
def llava():
    return vlinterp.load("tiny:llava")


@pytest.fixture(scope="module")
def items():
    return shapes_items("sae-test", 20, 0, "mixed")


@pytest.fixture(scope="module")
def store(llava, items):
    return ActivationStore.harvest(llava, SITE, items, batch_size=8, progress=False, tokens="content")


def test_harvest_rows_and_resume_equals_uninterrupted(llava, items, store, tmp_path):
    full = ActivationStore.harvest(llava, SITE, items, out_dir=str(tmp_path / "a"), batch_size=4, shard_samples=8,
                                   progress=False, tokens="content")
    part = ActivationStore.harvest(llava, SITE, items, out_dir=str(tmp_path / "b"), batch_size=4, shard_samples=8,
                                   progress=False, tokens="content", stop_after=1)
    assert part.meta["samples_done"] == 8 and not part.meta.get("complete")
    open(tmp_path / "b" / ".tmp-shard_00001-x.safetensors", "wb").write(b"half-written")  # a killed write
    open(tmp_path / "b" / "notes.txt", "w").write("mine")  # the user's files in the store stay,
    open(tmp_path / "b" / ".tmp-notes.txt", "w").write("mine")  # even one named like our temp files
    res = ActivationStore.harvest(llava, SITE, items, out_dir=str(tmp_path / "b"), batch_size=4, shard_samples=8,
                                  progress=False, tokens="content")
    assert res.meta["complete"] and len(res.meta["shards"]) == 3
    assert sorted(os.listdir(tmp_path / "b")) == [".tmp-notes.txt", ".vlinterp-manifest.json", "manifest.json", "notes.txt"] + \
        [f"shard_{k:05d}.safetensors" for k in range(3)]
    for k in full.rows:
        assert torch.equal(full.rows[k], res.rows[k]), k
    assert sorted(set(res.rows["sample"].tolist())) == list(range(len(items)))  # none lost, none twice
    # modality, grid positions and tokens are consistent with the layout
    img = res.rows["modality"] == 2
    assert img.any() and (~img).any()
    assert (res.rows["row"][img] >= 0).all() and (res.rows["row"][~img] == -1).all()
    assert (res.rows["token"][img] == -1).all() and (res.rows["token"][~img] >= 0).all()
    assert len(store) == len(full)  # in memory (batch 8) == on disk (batch 4) row count
    with pytest.raises(LoadError):  # a different harvest in the same directory
        ActivationStore.harvest(llava, "blocks.0.resid", items, out_dir=str(tmp_path / "b"), progress=False, tokens="content")
    # a shard file vlinterp did not write is never removed: the harvest stops and names it
    part = str(tmp_path / "c")
    ActivationStore.harvest(llava, SITE, items, out_dir=part, batch_size=4, shard_samples=8, progress=False, tokens="content", stop_after=1)
    open(os.path.join(part, "shard_00001.safetensors"), "wb").write(b"someone else's")
    with pytest.raises(OutputError, match="shard_00001"):
        ActivationStore.harvest(llava, SITE, items, out_dir=part, batch_size=4, shard_samples=8, progress=False, tokens="content")
    assert open(os.path.join(part, "shard_00001.safetensors"), "rb").read() == b"someone else's"


def test_keep_answer_is_image_plus_the_answer_tokens(llava, items, store):
    """``tokens="answer"``: the image patches and exactly the teacher-forced answer's tokens, with the same
    activations as in the ``content`` store (the instruction's tokens are left out)."""
    ans = ActivationStore.harvest(llava, SITE, items[:6], batch_size=3, progress=False, tokens="answer")
    for i, it in enumerate(items[:6]):
        b = llava.prepare(images=[it.image], text=[it.prompt], answer=[it.answer])
        want = b.inputs["input_ids"][0, b.layout.span("answer", 0)].tolist()
        got = ans.rows["sample"] == i
        txt = got & (ans.rows["modality"] != 2)
        assert ans.rows["token"][txt].tolist() == want  # exactly the answer's tokens, in order
        assert int((got & (ans.rows["modality"] == 2)).sum()) == len(b.layout.span("image", 0))
        full = (store.rows["sample"] == i) & (store.rows["modality"] != 2)  # prompt text, then the answer
        assert torch.allclose(ans.acts[txt], store.acts[full][-len(want):], atol=1e-5)
    with pytest.raises(PromptError, match="answer"):
        ActivationStore.harvest(llava, SITE, [Item(it.image, it.prompt) for it in items[:2]], progress=False, tokens="answer")


def test_training_resume_equals_uninterrupted(store, tmp_path):
    kw = dict(d_sae=48, k=4, steps=30, batch_size=32, checkpoint_every=10, progress=False)
    full = train_sae(store, checkpoint_dir=str(tmp_path / "a"), **kw)
    train_sae(store, checkpoint_dir=str(tmp_path / "b"), stop_after=17, **kw)  # killed after step 17
    assert [s for s, _ in _checkpoints(str(tmp_path / "b"))] == [10]
    res = train_sae(store, checkpoint_dir=str(tmp_path / "b"), resume=True, **kw)
    for k, v in full.state_dict().items():
        assert torch.equal(v, res.state_dict()[k]), k


def test_nan_stops_training_and_keeps_last_good_checkpoint(store, tmp_path):
    good = lambda i: store.acts[torch.arange(32) + i].float()  # noqa: E731
    bad = lambda i: good(i) if i < 25 else good(i) * float("nan")  # noqa: E731
    ck = str(tmp_path / "ck")
    with pytest.raises(NaNError):
        train_sae(store, d_sae=48, k=4, steps=40, batch_size=32, checkpoint_every=10, progress=False, checkpoint_dir=ck, data=bad)
    steps = _checkpoints(ck)
    assert [s for s, _ in steps] == [10, 20]
    last = load_sae(steps[-1][1])
    assert all(torch.isfinite(p).all() for p in last.parameters())


def test_saelens_round_trip_both_ways(llava, store, tmp_path):
    from sae_lens import SAE, TopKSAE, TopKSAEConfig

    ours = train_sae(store, d_sae=48, k=4, steps=20, batch_size=32, progress=False)
    save_sae(ours, str(tmp_path / "ours"))
    theirs = SAE.load_from_disk(str(tmp_path / "ours"))
    x = store.acts[:50]
    with torch.no_grad():
        assert torch.allclose(theirs.encode(x), ours.encode(x), atol=1e-6)
    assert json.load(open(tmp_path / "ours" / "vlinterp.json"))["site"] == SITE
    # an SAE made and saved by SAELens loads into vlinterp and attaches to a site
    torch.manual_seed(0)
    native = TopKSAE(TopKSAEConfig(d_in=store.d, d_sae=40, k=3, dtype="float32", device="cpu"))
    native.save_model(str(tmp_path / "native"))
    sae = load_sae(str(tmp_path / "native"))
    b = llava.prepare(images=[shapes_items("sae-test", 1)[0].image], text=["is there a red circle?"])
    plain = llava.run(b).logits
    before = count_hooks(llava.model)
    with llava.edits({SITE: splice_edit(sae, SITE)}):
        spliced = llava.run(b).logits
    assert count_hooks(llava.model) == before
    assert not torch.allclose(plain, spliced) and torch.allclose(llava.run(b).logits, plain)
    with pytest.raises(LoadError):
        load_sae(str(tmp_path))


def test_wrong_width_is_a_named_error(llava, store):
    from sae_lens import TopKSAE, TopKSAEConfig

    wrong = TopKSAE(TopKSAEConfig(d_in=store.d + 8, d_sae=16, k=2, dtype="float32", device="cpu"))
    b = llava.prepare(images=[shapes_items("sae-test", 1)[0].image], text=["is there a red circle?"])
    with pytest.raises(ShapeMismatchError, match="width"):
        llava.run(b, edits={SITE: splice_edit(wrong, SITE)})
    with pytest.raises(ShapeMismatchError, match="width"):
        reconstruction(wrong, store.acts)


def test_quality_and_feature_scaling(llava, store):
    sae = train_sae(store, d_sae=64, k=8, steps=150, batch_size=64, progress=False)
    q = reconstruction(sae, store.acts, store.rows["modality"])
    assert q["l0"] == pytest.approx(8.0) and 0 <= q["dead_fraction"] <= 1 and "fvu_image" in q
    assert q["fvu"] < 0.9  # it learned something (a fresh SAE is at ~1 or above)
    fresh = train_sae(store, d_sae=64, k=8, steps=1, batch_size=64, progress=False)
    assert reconstruction(fresh, store.acts)["fvu"] > q["fvu"]
    # scaling a feature by 1 changes nothing; by 0 removes its decoder contribution
    b = llava.prepare(images=[shapes_items("sae-test", 1)[0].image], text=["is there a red circle?"])
    cap = llava.run(b, capture=[SITE]).cache[SITE]
    k = int(torch.argmax((sae.encode(store.acts) > 0).sum(0)))
    same = llava.run(b, capture=[SITE], edits={SITE: feature_edit(sae, {k: 1.0}, SITE)}).cache[SITE]
    assert torch.allclose(same, cap, atol=1e-5)
    off = llava.run(b, capture=[SITE], edits={SITE: feature_edit(sae, {k: 0.0}, SITE, positions="content")}).cache[SITE]
    assert not torch.allclose(off, cap)


def test_analysis_on_synthetic_codes():
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([1, 1, 1, 1], [True, False, True, False]) == pytest.approx(0.5)
    # feature 0 fires on both image and text rows whose inputs point the same way; feature 1 only on text
    acts = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    modality = torch.tensor([2, 1, 1, 1], dtype=torch.int8)
    F = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    om = cross_modal_weights(F, acts, modality, top=2)
    assert om[1] == 0 and om[0] == pytest.approx(float(torch.nn.functional.cosine_similarity(acts[0], acts[1], dim=0)), abs=1e-6)
    sc = sample_scores(F, modality, torch.tensor([0, 0, 1, 1]), om)
    assert sc[0] == pytest.approx(om[0]) and sc[1] == 0.0


def test_balanced_omega_and_relative_activity_by_hand():
    """A feature firing hard on image rows and weakly on text: its plain top-2 is image only (omega 0);
    per modality it is cross-modal, with omega the mean cosine of its top text and top image inputs.
    With ``min_rel``, a sample whose image barely fires it no longer counts it."""
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(7, 3, generator=g)
    modality = torch.tensor([2, 2, 2, 2, 2, 1, 1], dtype=torch.int8)  # 5 image rows, 2 text rows
    F = torch.tensor([[10.0, 3.0], [9.0, 0.0], [8.0, 0.0], [7.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    assert cross_modal_weights(F, acts, modality, top=2).tolist() == [0.0, 0.0]
    om = cross_modal_weights(F, acts, modality, top=2, balanced=True)
    x = torch.nn.functional.normalize(acts, dim=-1)
    want = float((x[[5, 6]] @ x[[0, 1]].T).mean())
    assert om[0] == pytest.approx(want, abs=1e-6) and om[1] == 0.0  # feature 1 never fires on text
    ref_i, ref_t = reference_activations(F, modality, top=2)
    assert ref_i.tolist() == pytest.approx([9.5, 1.5]) and ref_t.tolist() == pytest.approx([0.75, 0.0])
    sample = torch.tensor([0, 2, 2, 2, 1, 0, 1])  # sample 0: rows 0 + 5; sample 1: rows 4 + 6; sample 2: image only
    loose = sample_scores(F, modality, sample, om)
    strict = sample_scores(F, modality, sample, om, (ref_i, ref_t), min_rel=0.5)
    assert loose == pytest.approx({0: want, 1: want, 2: 0.0})
    assert strict == pytest.approx({0: want, 1: 0.0, 2: 0.0})  # image max 1.0 < 0.5 * 9.5


def test_overlap_score_is_a_weighted_jaccard_index():
    """Overlap: omega of the features active on both sides over omega of those active on either."""
    modality = torch.tensor([2, 2, 1, 2, 1, 1], dtype=torch.int8)
    sample = torch.tensor([0, 0, 0, 1, 1, 1])
    # features 0..3; sample 0: image fires 0, 1, text fires 0, 2; sample 1: image fires 3, text fires 3
    F = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [3.0, 0, 1.0, 0], [0, 0, 0, 1.0], [0, 0, 0, 2.0], [0, 0, 0, 0]])
    om = np.array([0.5, 0.25, 0.25, 0.8])
    plain = sample_scores(F, modality, sample, om)
    over = sample_scores(F, modality, sample, om, overlap=True)
    assert plain == pytest.approx({0: 0.5, 1: 0.8})
    assert over == pytest.approx({0: 0.5 / (0.5 + 0.25 + 0.25), 1: 1.0})
    none = sample_scores(torch.zeros(6, 4), modality, sample, om, overlap=True)
    assert none == {0: 0.0, 1: 0.0}  # nothing active: 0, not a division by zero


def test_cli_round_trip(tmp_path, capsys):
    from vlinterp.cli import main

    st, sae = str(tmp_path / "st"), str(tmp_path / "sae")
    assert main(["sae", "harvest", "--model", "tiny:llava", "--site", SITE, "--dataset", "shapes:sae:mixed", "--n", "12", "--out", st]) == 0
    assert json.load(open(os.path.join(st, "manifest.json")))["dataset"] == "shapes:sae:12:0:mixed"
    assert main(["sae", "train", "--store", st, "--out", sae, "--d-sae", "48", "--k", "4", "--steps", "30", "--checkpoint-every", "10"]) == 0
    assert main(["sae", "eval", "--sae", sae, "--store", st, "--json", str(tmp_path / "q.json")]) == 0
    assert json.load(open(tmp_path / "q.json"))["reconstruction"]["l0"] == pytest.approx(4.0)
    assert main(["sae", "inspect", "--sae", sae, "--store", st, "--model", "tiny:llava", "--out", str(tmp_path / "dash"), "--top", "2"]) == 0
    pages = [p for p in os.listdir(tmp_path / "dash") if not p.startswith(".")]
    assert "index.html" in pages and len(pages) == 3
    page = open(tmp_path / "dash" / [p for p in pages if p.startswith("feature_")][0]).read()
    assert "top image patches" in page and "data:image/png;base64" in page
    assert main(["sae", "score-data", "--sae", sae, "--calib-store", st, "--store", st, "--json", str(tmp_path / "s.json")]) == 0
    assert len(json.load(open(tmp_path / "s.json"))["scores"]) == 12
    # the balanced score with a relative activity threshold, recorded in the output
    assert main(["sae", "score-data", "--sae", sae, "--calib-store", st, "--store", st, "--json", str(tmp_path / "b.json"),
                 "--balanced", "--min-rel", "0.5"]) == 0
    bal = json.load(open(tmp_path / "b.json"))
    assert bal["balanced"] and bal["min_rel"] == 0.5 and len(bal["scores"]) == 12 and not bal["overlap"]
    assert main(["sae", "score-data", "--sae", sae, "--calib-store", st, "--store", st, "--json", str(tmp_path / "o.json"),
                 "--balanced", "--min-rel", "0.5", "--overlap"]) == 0
    ov = json.load(open(tmp_path / "o.json"))
    assert ov["overlap"] and all(0.0 <= v <= 1.0 for v in ov["scores"].values())
    with pytest.raises(SystemExit):
        main(["sae", "score-data", "--sae", sae, "--calib-store", st, "--store", st, "--json", str(tmp_path / "c.json"), "--min-rel", "1.5"])
    assert not (tmp_path / "c.json").exists()
    st2 = str(tmp_path / "st2")
    assert main(["sae", "harvest", "--model", "tiny:llava", "--site", SITE, "--dataset", "shapes:sae:caption", "--n", "4", "--out", st2,
                 "--tokens", "answer"]) == 0
    assert main(["sae", "harvest", "--model", "tiny:llava", "--site", "blocks.99.resid", "--dataset", "shapes:sae", "--n", "2",
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown hook site" in capsys.readouterr().err
