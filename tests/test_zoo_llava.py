"""shapes-llava organism: the shipped weights meet every floor on fresh held-out scenes, and the
recipe trains end to end from scratch (without touching the shipped weights)."""
import hashlib
import json
import os

import pytest

import vlinterp as vi
from vlinterp import zoo
from vlinterp.data.shapes import make_scene
from vlinterp.zoo import recipe_llava as R

from conftest import check_card, check_floors, load_shipped

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Held-out evaluation size for the floor test: large enough that each rate is stable to a few points,
# small enough to run in well under a minute on 2 CPU cores.
N_EVAL = 160


def _tree_hash(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            p = os.path.join(root, f)
            h.update(os.path.relpath(p, path).encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def organism():
    return load_shipped(R.NAME)


def test_shipped_structure(organism):
    from transformers import LlavaForConditionalGeneration

    m = organism.model
    assert isinstance(m, LlavaForConditionalGeneration)
    cfg = m.config
    assert cfg.vision_config.image_size // cfg.vision_config.patch_size == 10  # 10x10 = 100 image tokens
    assert cfg.vision_feature_layer == -2 and cfg.vision_feature_select_strategy == "default"
    n = sum(p.numel() for p in m.parameters())
    assert 1.5e6 <= n <= 3.2e6
    d = zoo.weights_dir(R.NAME)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    assert size < 15e6
    b = organism.prepare(images=[make_scene("test", 1, 0).pil()], text=["is there a red circle?"])
    assert b.layout.counts(0)["image"] == 100


def test_shipped_card(organism):
    card = check_card(R)
    assert card["train_seconds"] > 0


@pytest.mark.slow
def test_shipped_meets_floors(organism):
    check_floors(R, R.evaluate(organism, "test", n=N_EVAL, seed=7))


@pytest.mark.slow
def test_train_from_scratch_smoke(tmp_path):
    shipped = zoo.weights_dir(R.NAME)
    before = _tree_hash(shipped) if os.path.isdir(shipped) else None
    out = tmp_path / "llava"
    card = R.train(str(out), seed=3, steps=2, progress=False)
    assert (out / "card.json").is_file() and (out / "model.safetensors").is_file()
    with open(out / "card.json") as f:
        on_disk = json.load(f)
    assert on_disk["seed"] == 3 and "--seed 3" in on_disk["command"] and "--steps 2" in on_disk["command"]
    assert set(R.FLOORS) <= set(on_disk["metrics"]) and card["metrics"] == on_disk["metrics"]
    m = vi.load(str(out))
    assert m.kind == "vlm"
    b = m.prepare(images=None, text=["the image shows a red circle. is there a red circle?"])
    assert m.run(b).logits.shape[0] == 1
    if before is not None:
        assert _tree_hash(shipped) == before
    assert on_disk["tune"]["steps"] == 2 and on_disk["tune"]["pool_start"] == 12000


def test_tune_negatives_test_binding_not_the_prior():
    """The tune stage's "near" negatives: absent, sharing colour or shape with a present object, and
    never the absent partner of a present object (so the stage does not argue against the prior)."""
    import numpy as np

    from vlinterp.data.shapes import partner
    from vlinterp.zoo.llava_data import near_negative, sample_presence

    rng = np.random.default_rng(0)
    n_partner_scenes = 0
    for i in range(200):
        s = make_scene("train", 0, i)
        present = set(s.pairs())
        partners = {partner(*p) for p in present} - {None} - present
        n_partner_scenes += bool(partners)
        for _ in range(5):
            c, sh = near_negative(s, rng)
            assert (c, sh) not in present and (c, sh) not in partners
            assert any(c == pc or sh == ps for pc, ps in present)
    assert n_partner_scenes > 10
    # a dict of negative types reaches near_negative; the tuple form keeps the LM stage's POPE types
    qs = [sample_presence(make_scene("train", 0, 1), rng, {"near": 1.0}) for _ in range(20)]
    assert {a for _, a in qs} == {"yes", "no"}


@pytest.mark.slow
def test_tune_on_saved_weights_cli(tmp_path):
    """``python -m vlinterp.zoo.llava_tune IN OUT``: tunes saved weights, writes a new card, leaves IN as it was."""
    from vlinterp.zoo import llava_tune

    src = zoo.weights_dir(R.NAME)
    before = _tree_hash(src)
    card = llava_tune.main([src, str(tmp_path / "t"), "--steps", "2"])
    assert card["tune"]["steps"] == 2 and "llava_tune" in card["command"]
    assert card["train_seconds"] > zoo.card(R.NAME)["train_seconds"] - 1e-6
    assert (tmp_path / "t" / "model.safetensors").is_file()
    assert _tree_hash(src) == before
