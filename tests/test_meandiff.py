import pytest
import torch

from vlinterp.core.hooks import count_hooks


@pytest.mark.slow
def test_meandiff_direction_and_sanity(shapes_llava, tmp_path):
    """Steering along the fitted direction lowers held-out false yeses, against it raises them; a saved
    and loaded fit gives bit-identical generations."""
    from vlinterp import steering
    from vlinterp.eval import shapes, steer
    from vlinterp.eval.pope import pope

    m = shapes_llava
    md = steer.fit("meandiff", m, n=192, alpha=0.1)
    base = pope(m, "adversarial", "test", 192, 11)["false_yes"]
    before = count_hooks(m.model)
    with md.replace(alpha=0.2).applied(m):
        toward_right = pope(m, "adversarial", "test", 192, 11)["false_yes"]
    with md.replace(alpha=-0.2).applied(m):  # toward the hallucination direction: worse
        toward_wrong = pope(m, "adversarial", "test", 192, 11)["false_yes"]
    assert count_hooks(m.model) == before
    assert toward_right < base < toward_wrong, (toward_right, base, toward_wrong)
    md.save(tmp_path / "md")
    back = steering.load(tmp_path / "md")
    assert back.config == md.config and all(torch.equal(back.vectors[l], md.vectors[l]) for l in md.vectors)
    items = shapes.captions("chair", 8, 23)
    b = m.prepare(images=[it.image for it in items], text=[it.prompt for it in items])
    strong = (md.replace(alpha=0.3), back.replace(alpha=0.3))  # strong enough to change the captions
    g = [s.generate(m, b, max_new_tokens=16) for s in strong]
    assert torch.equal(g[0].sequences, g[1].sequences) and g[0].texts != m.generate(b, max_new_tokens=16).texts


@pytest.mark.slow
def test_meandiff_protect_leaves_colour_and_count_answers(shapes_llava):
    """``protect``: at the last layer the protected direction cannot change which colour word or which
    count word wins, however strong; it still moves yes/no answers."""
    import pytest

    from vlinterp.core.errors import ConfigError
    from vlinterp.data.questions import pope_split
    from vlinterp.data.shapes import COLOURS, NUM_WORDS, make_split
    from vlinterp.eval import steer
    from vlinterp.metrics.pope import choose
    from vlinterp.steering.meandiff import readout_basis

    m = shapes_llava
    last = m.num_layers("lm") - 1
    md = steer.fit("meandiff", m, n=96, layers=(last,), protect=(tuple(COLOURS), tuple(NUM_WORDS)), alpha=0.1)
    Q = readout_basis(m, (COLOURS, NUM_WORDS))
    assert Q.shape[1] == len(COLOURS) + len(NUM_WORDS) - 2
    assert float((Q.T @ md.vectors[last]).abs().max()) < 1e-5
    assert md.config.protect == (tuple(COLOURS), tuple(NUM_WORDS))
    scenes = make_split("test", 24, 11)
    col = [(s.pil(), f"what color is the {s.objects[0].shape}?") for s in scenes]
    cnt = [(s.pil(), f"how many {s.objects[0].shape}s are there?") for s in scenes]
    yn = [(s.pil(), qa.question) for s, qa in pope_split("test", 48, 11, "adversarial")]
    before = (choose(m, col, COLOURS), choose(m, cnt, NUM_WORDS), choose(m, yn, ["yes", "no"]))
    with md.replace(alpha=1.5).applied(m):
        after = (choose(m, col, COLOURS), choose(m, cnt, NUM_WORDS), choose(m, yn, ["yes", "no"]))
    assert after[0] == before[0] and after[1] == before[1]
    assert sum(a != b for a, b in zip(after[2], before[2])) >= 3
    with pytest.raises(ConfigError, match="at least two words"):
        readout_basis(m, (["red"],))


@pytest.mark.parametrize("family", ["llava", "gemma3", "paligemma"])
def test_effective_readouts_use_the_norms_real_gain(family):
    """The effective readout is lm_head row x the final norm's gain as the norm applies it: LLaMA's
    ``weight * x`` and Gemma's ``(1 + weight) * x`` (zero-initialised weights: the raw weight gave a
    zero readout, so probe steering and grounding did nothing on Gemma 3 / PaliGemma)."""
    import vlinterp
    from vlinterp.steering.meandiff import effective_readouts

    m = vlinterp.load(f"tiny:{family}")
    lm = getattr(m.model, "model", m.model)
    norm = getattr(lm, "language_model", lm).norm
    with torch.no_grad():
        norm.weight.normal_(generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, norm.weight.shape[0], generator=torch.Generator().manual_seed(1))
    x = x / x.pow(2).mean(-1, keepdim=True).sqrt()   # unit RMS: the norm leaves the scale alone
    with torch.no_grad():
        gain = (norm(x) / x).mean(0)
    R = effective_readouts(m, ["yes"])[0]
    W = m.model.get_output_embeddings().weight[m.token_id("yes")].detach()
    assert torch.allclose(R, W * gain, rtol=1e-4, atol=1e-6)
