"""Prototype heads: push lands exactly on stored training patches, save/load is exact, a head refuses
another backbone, features come from any image stream (ViT, CLIP, LLaVA's vision tower), CLI."""
import json

import numpy as np
import pytest
import torch

import vlinterp as vi
from vlinterp.core.errors import BackboneMismatchError, ShapeMismatchError, UnknownSiteError
from vlinterp.data.shapes import make_split
from vlinterp.eval import shapes
from vlinterp.eval.protos import CLASSES, evaluate_shapes, fit_shapes
from vlinterp.prototypes import ProtoModel
from vlinterp.prototypes.features import patch_features
from vlinterp.prototypes.metrics import labels_for


@pytest.fixture(scope="module")
def vit():
    return vi.load("shapes-vit")


@pytest.fixture(scope="module")
def small(vit):
    """A quickly trained head (few steps): enough to test mechanics, not quality."""
    return fit_shapes(vit, site="vision.blocks.2.resid", n=96, warm_steps=40, last_steps=20, progress=False)


@pytest.fixture(scope="module")
def small_nearest(vit):
    return fit_shapes(vit, site="vision.blocks.2.resid", n=96, warm_steps=40, last_steps=20, push_mode="nearest", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["discriminative", "nearest"])
def test_push_puts_every_prototype_on_a_training_patch(small, small_nearest, vit, mode):
    pm = small if mode == "discriminative" else small_nearest
    assert pm.info["push"] == mode
    items = shapes.scenes("train", 96, 0)
    pf = patch_features(vit, [it.image for it in items], pm.site)
    y = labels_for(items, CLASSES)
    head = pm.head
    with torch.no_grad():
        for j in range(head.n_prototypes):
            i = int(pm.sources["image"][j])
            r, c = pm.sources["cell"][j].tolist()
            s = int(pm.sources["scale"][j])
            assert y[i, head.proto_class[j]] == 1, "pushed onto an image of another class"
            z = head.pooled(head.embed(pf.feats[i:i + 1]), s)[0]
            assert torch.allclose(head.prototypes[j], z[r, c], atol=1e-6, rtol=0)
            if mode == "nearest":  # and that patch is the nearest one of its class's images
                d2 = (head.pooled(head.embed(pf.feats[y[:, head.proto_class[j]].bool()]), s) - head.prototypes[j]).pow(2).sum(-1)
                assert float(d2.min()) <= 1e-10
    assert pm.sources["crop"].shape == (head.n_prototypes, 48, 48, 3)
    assert ("auroc" in pm.sources) == (mode == "discriminative")


def test_own_class_weights_stay_non_negative(small, small_nearest):
    for pm in (small, small_nearest):
        W = pm.head.last.weight.detach()
        assert float(W[pm.head.proto_class, torch.arange(pm.head.n_prototypes)].min()) >= 0


def test_saved_head_reloads_to_identical_outputs(small, vit, tmp_path):
    pm = small
    pm.save(str(tmp_path / "p"))
    again = ProtoModel.load(str(tmp_path / "p"), vit)
    feats = patch_features(vit, [s.pil() for s in make_split("test", 6, 3)], pm.site).feats
    a, b = pm.run(feats), again.run(feats)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(pm.thresholds, again.thresholds)
    assert torch.equal(pm.sources["crop"], again.sources["crop"])
    assert torch.equal(pm.probe.weight, again.probe.weight)
    assert again.classes == pm.classes and again.site == pm.site


def test_pruning_drops_only_unused_prototypes(vit, small):
    """After the sparse last layer, prototypes with own-class weight <= min_weight go; every class
    keeps one; the pruned head's logits equal the unpruned head with those columns zeroed; the
    push sources follow the kept prototypes; the saved shape rebuilds."""
    from vlinterp.prototypes.head import ProtoHead
    from vlinterp.prototypes.train import prune_unused

    head = ProtoHead(8, 3, per_class=2, scales=(1, 2), dim=4, seed=0)
    with torch.no_grad():
        head.last.weight.zero_()
        own = torch.tensor([0.9, 0.01, 0.02, 0.6, 0.03, 0.04, 0.5, 0.0, 0.7, 0.01, 0.02, 0.03])  # P = 3 classes x 2 x 2 scales
        head.last.weight[head.proto_class, torch.arange(12)] = own
        head.last.weight[1, 1] = 0.3  # an off-class weight on a dropped prototype (class 0)
    feats = torch.randn(5, 4, 4, 8)
    before = head(feats)
    full_w = head.last.weight.detach().clone()
    kept = prune_unused(head, 0.05)
    # class 2 (prototypes 4, 5, 10, 11: all weak) keeps its strongest, 5 (0.04), alongside 0, 3, 6, 8
    assert kept == [0, 3, 5, 6, 8] and head.kept == kept and head.n_prototypes == 5
    assert sorted(set(head.proto_class.tolist())) == [0, 1, 2]
    after = head(feats)
    assert torch.allclose(after["logits"], before["score"][:, kept] @ full_w[:, kept].T, atol=1e-6)
    assert torch.allclose(after["sim"], before["sim"][:, kept], atol=1e-6)
    again = ProtoHead.from_config(head.config())
    again.load_state_dict(head.state_dict())
    assert torch.equal(again(feats)["logits"], after["logits"])
    # the fitted model was pruned the same way, its sources with it
    assert small.head.kept is not None and small.info["prototypes_kept"] == small.head.n_prototypes <= small.info["prototypes_trained"]
    assert len(small.sources["image"]) == small.head.n_prototypes


def test_head_refuses_another_backbone(small, tmp_path):
    small.save(str(tmp_path / "p"))
    with pytest.raises(BackboneMismatchError, match="different backbone"):
        ProtoModel.load(str(tmp_path / "p"), vi.load("shapes-clip"))  # has the same site name, other weights
    with pytest.raises(BackboneMismatchError, match="no such site"):
        ProtoModel.load(str(tmp_path / "p"), vi.load("tiny:llava"))
    with pytest.raises(ShapeMismatchError, match="width"):
        small.head.embed(torch.zeros(1, 8, 8, 7))


def test_patch_features_on_every_image_stream(shapes_llava):
    imgs = [s.pil() for s in make_split("test", 2, 1)]
    pf = patch_features(shapes_llava, imgs, "vision.blocks.4.resid")
    assert pf.feats.shape == (2, 10, 10, 128) and pf.grid == (10, 10)
    clip = vi.load("shapes-clip")
    assert patch_features(clip, imgs, "vision.blocks.1.resid").feats.shape == (2, 8, 8, 128)
    noisy = patch_features(clip, imgs, "vision.blocks.1.resid", noise=0.2)
    assert not torch.allclose(noisy.feats, patch_features(clip, imgs, "vision.blocks.1.resid").feats)
    with pytest.raises(UnknownSiteError):
        patch_features(clip, imgs, "vision.blocks.99.resid")


def test_metrics_are_measured(small):
    """On 24 held-out scenes the small head (96 scenes, 40 warm-up steps) measured: pointing game 0.78
    against 0.095 for a random map, stability 0.947 under pixel noise 0.2, 6 of 9 evaluated prototypes
    consistent. Asserted against the baselines with room for seeds and threads."""
    res = evaluate_shapes(small, 24, 5)
    assert res["n_images"] == 24 and res["localisation"]["pairs"] > 0
    loc = res["localisation"]
    assert loc["pointing_game"] >= 4 * loc["random_map_baseline"], loc
    assert res["stability"]["mean"] >= 0.85 and res["stability"]["prototypes"] > 0
    assert res["consistency"]["evaluated"] > 0 and res["consistency"]["share_consistent"] >= 0.5, res["consistency"]
    assert set(res["probe"]) == set(res["head"]) == {"mean_label_accuracy", "exact_match"}


@pytest.mark.slow
def test_cli_train_explain_eval(tmp_path, capsys):
    from vlinterp.cli import main

    out = tmp_path / "protos"
    assert main(["protos", "train", "--model", "shapes-vit", "--site", "vision.blocks.2.resid", "--n", "48", "--warm-steps", "20",
                 "--last-steps", "10", "--out", str(out)]) == 0
    img = tmp_path / "scene.png"
    make_split("test", 1, 2)[0].pil().save(img)
    assert main(["protos", "explain", str(img), "--protos", str(out), "--out", str(tmp_path / "ex")]) == 0
    ex = json.loads((tmp_path / "ex" / "explanation.json").read_text())
    assert ex["rows"] and all(r["prototype"] >= 0 for r in ex["rows"])
    from PIL import Image

    assert np.asarray(Image.open(tmp_path / "ex" / "explanation.png")).shape[2] in (3, 4)
    js = tmp_path / "eval.json"
    assert main(["protos", "eval", "--protos", str(out), "--n", "12", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["localisation"]["pairs"] > 0
    assert main(["protos", "eval", "--protos", str(out), "--model", "shapes-clip", "--n", "4"]) == 2
