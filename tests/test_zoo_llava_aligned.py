"""shapes-llava-aligned: shapes-llava plus the align stage. The shipped weights keep every shapes-llava
floor; the stage's loss does what it says; the stage runs on saved weights and in the full recipe."""
import json
import os

import pytest
import torch

import vlinterp as vi
from vlinterp import zoo
from vlinterp.zoo import llava_align as A
from vlinterp.zoo.common import check_floor

from conftest import load_shipped
from test_zoo_llava import N_EVAL, _tree_hash

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def organism():
    return load_shipped(A.NAME)


def test_registered_with_its_card(organism):
    assert zoo.recipe(A.NAME) is A and A.NAME in zoo.names()
    card = zoo.card(A.NAME)
    assert card["name"] == A.NAME and card["floors"] == {k: list(v) for k, v in A.FLOORS.items()}
    assert card["command"].startswith(f"vlinterp zoo train {A.NAME} --out ")
    assert all(card["floors_met"].values()), card["metrics"]
    assert card["align"]["steps"] == A.ALIGN["steps"] and card["align"]["last_direction_cos"] > 0.9
    # the same architecture as shapes-llava: only the projector and LM weights moved
    base = vi.load("shapes-llava").model.state_dict()
    mine = organism.model.state_dict()
    assert base.keys() == mine.keys()
    assert all(torch.equal(base[k], mine[k]) for k in base if "vision_tower" in k)
    assert any(not torch.equal(base[k], mine[k]) for k in base if "language_model" in k)


@pytest.mark.slow
def test_shipped_meets_the_shapes_llava_floors(organism):
    """Measured (seed 7, n=160): presence 0.969, colour 0.972, count 0.931, text 0.994, rendered 0.975,
    prior ratio 11 (false-yes 0.138 vs 0.013)."""
    m = A.evaluate(organism, "test", n=N_EVAL, seed=7)
    failed = {k: (m.get(k), op, v) for k, (op, v) in A.FLOORS.items() if not check_floor(m.get(k), op, A.REACHED.get(k, v))}
    assert not failed, f"levels missed: {failed}; all metrics: {m}"


def test_alignment_loss_by_hand():
    """Direction loss 0 when each class's centred image and text directions coincide; the shared-prototype
    term is lower when the prototypes point along the classes; gradients reach the states."""
    D = 8
    e = torch.eye(D)
    # two classes; image tokens = offset + class direction, text tokens = another offset + the same direction
    lab = torch.tensor([[0, 1, 0, 1, 0, 1]])
    is_img = torch.tensor([[True, True, True, False, False, False]])
    h = torch.stack([e[0] + 3 * e[2 + c] if i else -e[1] + 3 * e[2 + c] for c, i in zip(lab[0].tolist(), is_img[0].tolist())])[None]
    h.requires_grad_(True)
    good = torch.stack([e[2] - e[3], e[3] - e[2]])
    loss_good, cos = A.alignment_loss(h, lab, is_img, good, tau=0.1)
    assert cos == pytest.approx(1.0, abs=1e-6)
    loss_bad, _ = A.alignment_loss(h, lab, is_img, good.flip(0), tau=0.1)
    assert loss_good < loss_bad
    loss_good.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()
    # text directions swapped between the classes: cosine -1, the direction loss is 2
    h2 = h.detach().clone()
    h2[0, 3:] = torch.stack([-e[1] + 3 * e[2], -e[1] + 3 * e[3], -e[1] + 3 * e[2]])
    _, cos2 = A.alignment_loss(h2, lab, is_img, good, tau=0.1)
    assert cos2 == pytest.approx(-1.0, abs=1e-6)
    # nothing labelled in one modality: no loss, no NaN
    z, c = A.alignment_loss(h.detach(), torch.full_like(lab, -1), is_img, good, tau=0.1)
    assert float(z) == 0.0 and c != c


@pytest.mark.slow
def test_align_stage_on_saved_weights_cli(tmp_path):
    """``python -m vlinterp.zoo.llava_align IN OUT``: aligns saved shapes-llava weights, writes a card, leaves IN alone."""
    src = zoo.weights_dir("shapes-llava")
    before = _tree_hash(src)
    card = A.main([src, str(tmp_path / "a"), "--steps", "2"])
    assert card["name"] == A.NAME and card["align"]["steps"] == 2 and "llava_align" in card["command"]
    assert card["train_seconds"] > zoo.card("shapes-llava")["train_seconds"]
    assert card["shapes_llava_metrics"] == zoo.card("shapes-llava")["metrics"]
    with open(tmp_path / "a" / "card.json") as f:
        assert json.load(f)["metrics"] == card["metrics"]
    assert vi.load(str(tmp_path / "a")).kind == "vlm"
    assert _tree_hash(src) == before


@pytest.mark.slow
def test_full_recipe_smoke(tmp_path):
    """``vlinterp zoo train shapes-llava-aligned``: the four shapes-llava stages, then align (2 steps each)."""
    card = A.train(str(tmp_path / "full"), seed=3, steps=2, progress=False)
    assert card["command"].startswith(f"vlinterp zoo train {A.NAME} --out ") and "--steps 2" in card["command"]
    assert card["align"]["steps"] == 2 and card["tune"]["steps"] == 2
    assert (tmp_path / "full" / "model.safetensors").is_file()
