import torch

from vlinterp.core.hooks import count_hooks


def test_meandiff_direction_and_sanity(shapes_llava, tmp_path):
    from vlinterp.metrics.pope import pope
    from vlinterp.steering.meandiff import MeanDiff

    m = shapes_llava
    md = MeanDiff.fit(m, n=192)
    base = pope(m, "adversarial", "test", 192, 11)["false_yes"]
    before = count_hooks(m.model)
    with md.applied(m, 0.2):
        toward_right = pope(m, "adversarial", "test", 192, 11)["false_yes"]
    with md.applied(m, -0.2):  # toward the hallucination direction: worse
        toward_wrong = pope(m, "adversarial", "test", 192, 11)["false_yes"]
    assert count_hooks(m.model) == before
    assert toward_right < base < toward_wrong, (toward_right, base, toward_wrong)
    md.save(str(tmp_path / "md"))
    back = MeanDiff.load(str(tmp_path / "md.safetensors"))
    assert back.alpha == md.alpha and all(torch.allclose(back.vectors[l], md.vectors[l], atol=1e-6) for l in md.vectors)


def test_meandiff_protect_leaves_colour_and_count_answers(shapes_llava):
    """``protect``: at the last layer the protected direction cannot change which colour word or which
    count word wins, however strong; it still moves yes/no answers."""
    import pytest

    from vlinterp.data.questions import pope_split
    from vlinterp.data.shapes import COLOURS, NUM_WORDS, make_split
    from vlinterp.metrics.pope import choose
    from vlinterp.steering.meandiff import MeanDiff, readout_basis

    m = shapes_llava
    last = m.num_layers("lm") - 1
    md = MeanDiff.fit(m, n=96, layers=[last], protect=(COLOURS, NUM_WORDS))
    Q = readout_basis(m, (COLOURS, NUM_WORDS))
    assert Q.shape[1] == len(COLOURS) + len(NUM_WORDS) - 2
    assert float((Q.T @ md.vectors[last]).abs().max()) < 1e-5
    assert md.meta["protect"] == [list(COLOURS), list(NUM_WORDS)]
    scenes = make_split("test", 24, 11)
    col = [(s.pil(), f"what color is the {s.objects[0].shape}?") for s in scenes]
    cnt = [(s.pil(), f"how many {s.objects[0].shape}s are there?") for s in scenes]
    yn = [(s.pil(), qa.question) for s, qa in pope_split("test", 48, 11, "adversarial")]
    before = (choose(m, col, COLOURS), choose(m, cnt, NUM_WORDS), choose(m, yn, ["yes", "no"]))
    with md.applied(m, 1.5):
        after = (choose(m, col, COLOURS), choose(m, cnt, NUM_WORDS), choose(m, yn, ["yes", "no"]))
    assert after[0] == before[0] and after[1] == before[1]
    assert sum(a != b for a, b in zip(after[2], before[2])) >= 3
    with pytest.raises(ValueError, match="at least two words"):
        readout_basis(m, (["red"],))
