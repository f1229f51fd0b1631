import pytest
import torch

from vlinterp.core.errors import ShapeMismatchError
from vlinterp.core.hooks import count_hooks


@pytest.mark.slow
def test_save_fit_apply_round_trip(shapes_llava, tmp_path):
    from sae_lens import TopKSAE, TopKSAEConfig

    from vlinterp import steering
    from vlinterp.data.questions import pope_split
    from vlinterp.eval import shapes, steer
    from vlinterp.steering import SAVE

    m = shapes_llava
    sae = SAVE.default_sae(m, "blocks.2.resid", steer.save_sae_items(120), steps=300)
    probe = shapes.pope("steer-probe", 128, 0, "adversarial")
    sv = SAVE.fit(m, probe, SAVE.Config(site="blocks.2.resid", n_features=3, alpha=0.3), sae=sae)
    assert len(sv.features) == 3 and sv.scores == sorted(sv.scores, reverse=True) and sv.scores[0] > 0
    assert abs(float(sv.direction.norm()) - 1) < 1e-5
    s, qa = pope_split("test", 1, 11, "adversarial")[0]
    b = m.prepare(images=[s.pil()], text=[qa.question])
    plain = m.run(b).logits
    before = count_hooks(m.model)
    with sv.applied(m):
        steered = m.run(b).logits
        g = m.generate(b, max_new_tokens=2)
    assert count_hooks(m.model) == before and len(g.texts) == 1
    last = int(b.layout.span("last", 0)[0])
    assert not torch.allclose(plain[0, last], steered[0, last])
    assert torch.allclose(plain[0, :last - 1], steered[0, :last - 1], atol=1e-5)  # only the last position moves
    sv.save(tmp_path / "sv")
    back = steering.load(tmp_path / "sv")
    assert back.config == sv.config and back.features == sv.features and torch.equal(back.direction, sv.direction)
    wrong = TopKSAE(TopKSAEConfig(d_in=64, d_sae=16, k=2, dtype="float32", device="cpu"))
    with pytest.raises(ShapeMismatchError, match="width"):
        SAVE.fit(m, probe[:32], SAVE.Config(site="blocks.2.resid"), sae=wrong)
