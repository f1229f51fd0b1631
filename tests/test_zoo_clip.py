"""``shapes-clip``: the shipped open_clip CLIP meets its floors; the recipe trains end to end."""
import hashlib
import os

import numpy as np
import pytest

import vlinterp as vi
from vlinterp import zoo
from vlinterp.zoo import recipe_clip as recipe

pytestmark = pytest.mark.skipif(not zoo.available(recipe.NAME), reason="shapes-clip weights not shipped")
N_EVAL = 512  # 16 chunks of 32: the floor is checked as is, so keep the estimate stable


def _hashes(d):
    return {f: hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest() for f in sorted(os.listdir(d))}


@pytest.fixture(scope="module")
def m():
    return vi.load(recipe.NAME)


@pytest.mark.slow
def test_shipped_meets_floors(m):
    metrics = recipe.evaluate(m, split="test", n=N_EVAL, seed=7)
    for k, (op, v) in getattr(recipe, "REACHED", recipe.FLOORS).items():
        assert op == ">=" and metrics[k] >= v, (k, metrics[k], v)


def test_shipped_is_real_class(m):
    import open_clip

    assert isinstance(m.model, open_clip.CLIP) and m.backend.name == "open_clip"
    b = m.prepare(images=[np.zeros((128, 128, 3), np.uint8)], text=["a red circle."])
    assert b.layouts["vision"].grid(0) == (8, 8)
    assert m.run(b).logits.shape == (1, 1)
    card = zoo.card(recipe.NAME)
    assert card["command"].startswith(f"vlinterp zoo train {recipe.NAME}")


@pytest.mark.slow
def test_train_from_scratch_writes_loadable_dir(tmp_path):
    shipped = zoo.weights_dir(recipe.NAME)
    before = _hashes(shipped)
    out = tmp_path / "clip"
    card = recipe.train(str(out), seed=0, steps=2, progress=False)
    assert {"open_clip_config.json", "open_clip_model.safetensors", "card.json"} <= set(os.listdir(out))
    assert card["steps"] == 2 and set(card["floors"]) == set(recipe.FLOORS)
    m2 = vi.load(str(out))
    b = m2.prepare(images=[np.zeros((128, 128, 3), np.uint8)] * 2, text=["a red circle.", "a blue square."])
    assert m2.run(b).logits.shape == (2, 2)
    assert _hashes(shipped) == before


def test_adapter_input_matches_training(m):
    import torch

    from vlinterp.data.questions import caption
    from vlinterp.data.shapes import make_scene

    s = make_scene("test", 3, 0)
    b = m.prepare(images=[s.pil()], text=[caption(s)])
    ref = (torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.allclose(b.inputs["pixel_values"][0], ref, atol=1e-5)
    assert torch.equal(b.inputs["input_ids"], recipe.tokenizer()([caption(s)]))
