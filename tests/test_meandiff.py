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
