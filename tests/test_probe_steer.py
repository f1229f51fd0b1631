"""Probe steering (vlinterp.steering.probe): held-out effect on the organism, the protection of the
other answer groups, save/load, hooks, named errors, and a tiny LLaVA."""
import pytest
import torch

from vlinterp.core.errors import LayerRangeError, ShapeMismatchError
from vlinterp.core.hooks import count_hooks


@pytest.fixture(scope="module")
def fitted(shapes_llava):
    from vlinterp.eval import steer

    return steer.fit("probe", shapes_llava, alpha=0.2)  # the default fit; alpha as "auto" picks on the probe split


@pytest.mark.slow
def test_probe_steer_halves_false_yes_and_chair_on_held_out(shapes_llava, fitted):
    """Held-out scenes (seed 11, never fitted on): adversarial false-yes at most half, CHAIR_S at most
    0.7x the unsteered organism's, random accuracy within a point, colour and count answers unchanged;
    steering the other way hallucinates more."""
    from vlinterp.data.shapes import make_split
    from vlinterp.eval.chair import shapes_chair as chair
    from vlinterp.eval.pope import pope
    from vlinterp.eval.steer import captions, evaluate

    m = shapes_llava
    before = count_hooks(m.model)
    base = evaluate(m, None, 256, 11)
    steered = evaluate(m, fitted, 256, 11)
    with fitted.replace(alpha=-0.2).applied(m):
        wrong = pope(m, "adversarial", "test", 256, 11)["false_yes"]
    assert count_hooks(m.model) == before
    fy = (base["adversarial"]["false_yes"], steered["adversarial"]["false_yes"], wrong)
    assert fy[0] >= 0.1 and fy[1] <= 0.5 * fy[0] and fy[2] > fy[0], fy
    assert steered["adversarial"]["accuracy"] >= base["adversarial"]["accuracy"] + 0.03
    assert steered["random"]["accuracy"] >= base["random"]["accuracy"] - 0.01
    assert steered["colour"] == base["colour"] and steered["count"] == base["count"]
    scenes = make_split("chair", 256, 11)
    ch = [chair(captions(s, m, [x.pil() for x in scenes]), scenes) for s in (None, fitted)]
    assert ch[0]["chair_s"] > 0 and ch[1]["chair_s"] <= 0.7 * ch[0]["chair_s"], ch
    assert ch[1]["mentions"] >= ch[0]["mentions"] - 0.05, ch  # not by naming fewer objects (CHAIR ignores omissions)
    # another fresh seed (37): the false-yes cut is smaller there (-46% with 256 per split in the README run)
    base37 = pope(m, "adversarial", "test", 256, 37)["false_yes"]
    with fitted.applied(m):
        steered37 = pope(m, "adversarial", "test", 256, 37)["false_yes"]
    assert base37 >= 0.1 and steered37 <= 0.6 * base37, (base37, steered37)


@pytest.mark.slow
def test_probe_heads_leave_other_answer_groups_alone(shapes_llava, fitted):
    """The question head cannot change colour, count or shape choices at the last layer; the caption
    head cannot change yes/no. The caption head's gate is near 1 where a shape follows a colour only."""
    from vlinterp.data.questions import pope_split
    from vlinterp.data.shapes import COLOURS, NUM_WORDS, SHAPES, make_split
    from vlinterp.metrics.pope import choose
    from vlinterp.steering import ProbeSteer
    from vlinterp.steering.meandiff import readout_basis

    m = shapes_llava
    q = ProbeSteer({"question": fitted.heads["question"]}, fitted.config, alpha=3.0)
    c = ProbeSteer({"caption": fitted.heads["caption"]}, fitted.config, alpha=3.0)
    Q = readout_basis(m, (COLOURS, NUM_WORDS, SHAPES))
    assert float((fitted.heads["question"][2] @ Q).abs().max()) < 1e-5
    Qc = readout_basis(m, (COLOURS, NUM_WORDS, ("yes", "no")))
    assert float((fitted.heads["caption"][2] @ Qc).abs().max()) < 1e-5
    scenes = make_split("test", 24, 11)
    col = [(s.pil(), f"what color is the {s.objects[0].shape}?") for s in scenes]
    cnt = [(s.pil(), f"how many {s.objects[0].shape}s are there?") for s in scenes]
    shp = [(s.pil(), f"what shape is the {s.objects[0].colour} object?") for s in scenes]
    yn = [(s.pil(), qa.question) for s, qa in pope_split("test", 48, 11, "adversarial")]
    plain = (choose(m, col, COLOURS), choose(m, cnt, NUM_WORDS), choose(m, shp, SHAPES), choose(m, yn, ["yes", "no"]))
    with q.applied(m):
        after_q = (choose(m, col, COLOURS), choose(m, cnt, NUM_WORDS), choose(m, shp, SHAPES), choose(m, yn, ["yes", "no"]))
    with c.applied(m):
        after_c = choose(m, yn, ["yes", "no"])
    assert after_q[:3] == plain[:3] and after_c == plain[3]
    assert sum(a != b for a, b in zip(after_q[3], plain[3])) >= 3


@pytest.mark.slow
def test_probe_steer_save_load_and_errors(shapes_llava, fitted, tmp_path):
    from vlinterp.data.questions import pope_split
    from vlinterp.eval import steer
    from vlinterp.steering import ProbeSteer

    m = shapes_llava
    hooks = count_hooks(m.model)
    fitted.save(tmp_path / "ps")
    back = ProbeSteer.load(tmp_path / "ps")
    assert back.config == fitted.config and set(back.heads) == {"question", "caption"}
    assert all(torch.equal(x, y) for h in fitted.heads for x, y in zip(fitted.heads[h], back.heads[h]))
    s, qa = pope_split("test", 1, 11, "adversarial")[0]
    b = m.prepare(images=[s.pil()], text=[qa.question])
    plain = m.run(b).logits
    with back.applied(m):
        steered = m.run(b).logits
        g = m.generate(b, max_new_tokens=2)
    last = int(b.layout.span("last", 0)[0])
    assert len(g.texts) == 1 and not torch.allclose(plain[0, last], steered[0, last])
    assert torch.allclose(plain[0, :last], steered[0, :last], atol=1e-5)  # only the last position moves
    W, bb, R = fitted.heads["question"][:3]
    with pytest.raises(ShapeMismatchError, match="must be"):
        ProbeSteer({"q": (W, bb, R[:, :5])}, layer=3, alpha=0.1)
    with pytest.raises(ShapeMismatchError, match="width"):
        with ProbeSteer({"q": (torch.zeros(1, 64), bb, torch.zeros(1, 64))}, layer=3, alpha=0.1).applied(m):
            m.run(b)
    assert count_hooks(m.model) == hooks  # the edit raised inside the block: nothing left behind
    with pytest.raises(LayerRangeError, match="out of range"):
        ProbeSteer({"q": (W, bb, R)}, layer=99, alpha=0.1).edits(m)
    with pytest.raises(LayerRangeError, match="out of range"):
        steer.fit("probe", m, n=32, n_captions=0, layer=-1, alpha=0.1)
    from vlinterp.core.errors import NaNError
    from vlinterp.steering.probe import fit_logistic

    X = torch.randn(20, 8)
    X[3, 2] = float("nan")
    with pytest.raises(NaNError, match="NaN"):
        fit_logistic(X, (torch.arange(20) % 2)[:, None].float())


def test_probe_steer_on_tiny_llava():
    """A random tiny LLaVA: the question head fits and steers generation; its greedy captions name no
    colour-shape objects, so asking for a caption head is a named error."""
    import vlinterp as vi
    from vlinterp.core.errors import DataError
    from vlinterp.eval import steer

    m = vi.load("tiny:llava")
    before = count_hooks(m.model)
    ps = steer.fit("probe", m, n=32, n_captions=0, alpha=0.5)
    assert set(ps.heads) == {"question"} and ps.heads["question"][0].shape == (1, m.model.config.text_config.hidden_size)
    from vlinterp.data.shapes import make_split

    b = m.prepare(images=[make_split("test", 1, 3)[0].pil()], text=["is there a red circle?"])
    g = ps.generate(m, b, max_new_tokens=2)
    assert len(g.texts) == 1 and count_hooks(m.model) == before
    with pytest.raises(DataError, match="caption"):
        steer.fit("probe", m, n=32, n_captions=16, alpha=0.5)
