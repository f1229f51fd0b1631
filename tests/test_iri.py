import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp
from vlinterp.core.errors import LayerRangeError, UnsupportedError
from vlinterp.core.hooks import count_hooks
from vlinterp.steering import IRI


@pytest.fixture(scope="module")
def llava():
    m = vlinterp.load("tiny:llava")
    img = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))
    return m, m.prepare(images=[img, img], text=["is there a red circle?", "is there a blue square here?"])


def test_injection_is_norm_preserving_and_only_at_last(llava):
    m, b = llava
    iri = IRI([("attn", 0, 1.0)], [("attn", 1)], lam=2.0)
    clean = m.run(b, capture=["blocks.1.attn", "blocks.0.attn"]).cache
    before = count_hooks(m.model)
    with iri.applied(m):
        out = m.run(b, capture=["blocks.1.attn"]).cache
    assert count_hooks(m.model) == before
    x, y = clean["blocks.1.attn"], out["blocks.1.attn"]
    for r in range(2):
        last = int(b.layout.span("last", r)[0])
        other = [p for p in range(x.shape[1]) if p != last]
        assert torch.allclose(x[r, other], y[r, other])  # only the last position changes
        assert not torch.allclose(x[r, last], y[r, last])
        assert abs(float(x[r, last].norm() - y[r, last].norm())) <= 1e-4 * float(x[r, last].norm())
        # the injected direction: y is x + lam * a_src rescaled
        want = x[r, last] + 2.0 * clean["blocks.0.attn"][r, last]
        want = want * x[r, last].norm() / want.norm()
        assert torch.allclose(y[r, last], want, atol=1e-5)


def test_decoding_step_injects_like_the_prompt_pass(llava):
    """The one-position (KV-cache decoding) path of the edit equals the prompt-pass path at the last
    position, for one source and for two weighted sources."""
    m, _ = llava
    g = torch.Generator().manual_seed(0)
    for sources in ([("attn", 0, 1.0)], [("attn", 0, 1.0), ("mlp", 0, 3.0)]):
        iri = IRI(sources, [("attn", 1)], lam=1.5)
        ed = iri.edits(m)
        src = {f"blocks.{l}.{c}": torch.randn(2, 5, 16, generator=g) for c, l, _ in sources}
        tgt = torch.randn(2, 5, 16, generator=g)
        for site, t in src.items():  # prompt pass (no layout: last position = T - 1)
            ed[site](t, None)
        full = ed["blocks.1.attn"](tgt, None)
        assert torch.equal(full[:, :4], tgt[:, :4])
        for site, t in src.items():  # decoding step with the same last states
            ed[site](t[:, 4:].clone(), None)
        step = ed["blocks.1.attn"](tgt[:, 4:].clone(), None)
        assert step.shape == (2, 1, 16)
        assert torch.allclose(step[:, 0], full[:, 4], atol=1e-6)
        assert torch.allclose(step.norm(dim=-1), tgt[:, 4:].norm(dim=-1), atol=1e-5)


def test_zero_lambda_is_identity_and_generate_works(llava):
    m, b = llava
    iri = IRI([("attn", 0, 1.0), ("mlp", 0, 1.0)], [("attn", 1), ("mlp", 1)], lam=0.0)
    plain = m.run(b).logits
    with iri.applied(m):
        assert torch.allclose(m.run(b).logits, plain, atol=1e-6)
    g0 = m.generate(b, max_new_tokens=4)
    assert iri.generate(m, b, max_new_tokens=4).texts == g0.texts  # lam=0: unchanged
    with iri.replace(lam=5.0).applied(m):
        g1 = m.generate(b, max_new_tokens=4)
        l1 = m.run(b).logits
    assert g1.new_tokens.shape == g0.new_tokens.shape
    assert not torch.allclose(l1, plain)
    assert torch.allclose(m.run(b).logits, plain)  # nothing left behind


def test_hooks_removed_after_an_error(llava):
    m, b = llava
    before = count_hooks(m.model)
    with pytest.raises(RuntimeError):
        with IRI([("attn", 0, 1.0)], [("attn", 1)], lam=1.0).applied(m):
            m.run(b)
            raise RuntimeError("boom")
    assert count_hooks(m.model) == before


def test_from_rr_and_errors(llava, tmp_path):
    from vlinterp import steering
    from vlinterp.core.errors import ConfigError

    m, b = llava
    rr = {"attn": np.array([0.1, 0.5, 0.2, 0.3]), "mlp": np.array([-0.1, 0.0, 0.4, 0.9])}
    iri = IRI.from_rr(rr, n_sources=1, n_targets=1)
    assert iri.sources == [("attn", 1, 1.0), ("mlp", 2, 1.0)]
    assert iri.targets == [("attn", 3), ("mlp", 3)]
    iri.save(tmp_path / "iri")
    back = steering.load(tmp_path / "iri")
    assert back.sources == iri.sources and back.targets == iri.targets and back.config == iri.config
    with pytest.raises(LayerRangeError):
        IRI([("attn", 2, 1.0)], [("attn", 1)])
    with pytest.raises(LayerRangeError):  # tiny:llava has 2 layers
        IRI([("attn", 0, 1.0)], [("attn", 5)], lam=1.0).edits(m)
    with pytest.raises(ValueError):
        IRI([("norm", 0, 1.0)], [("attn", 1)])
    with pytest.raises(UnsupportedError):
        IRI([("attn", 0, 1.0)], [("attn", 1)], lam=1.0).edits(vlinterp.load("tiny:vit"))
    with pytest.raises(ConfigError, match="auto"):  # a strength still to be chosen is not applied
        with IRI([("attn", 0, 1.0)], [("attn", 1)]).applied(m):
            m.run(b)


def test_fit_on_tiny_llava_chooses_lam_by_the_calibration_numbers():
    """The calibration grid is recorded, and the chosen strength is the one its numbers say is best:
    the highest adversarial accuracy with random accuracy within the tolerance (0 when none beats off)."""
    from vlinterp.eval import steer
    from vlinterp.steering.select import best_accuracy

    m = vlinterp.load("tiny:llava")
    iri = steer.fit("iri", m, n=2, n_calib=16, lambdas=(0.5, 4.0, 32.0))
    cal = iri.meta["calibration"]
    assert list(cal["unsteered"]) == ["adversarial", "random"] and set(cal["grid"]) == {"0.5", "4.0", "32.0"}
    assert iri.lam == best_accuracy(cal["unsteered"], cal["grid"], iri.config.max_random_drop)
    assert len(iri.meta["rr"]["attn"]) == m.num_layers()


def test_best_accuracy_rule():
    """The selection rule itself, on numbers where it has to choose: the best adversarial accuracy is
    taken only with random accuracy within the tolerance; nothing better than off gives 0."""
    from vlinterp.steering.select import best_accuracy

    base = {"adversarial": 0.80, "random": 0.95}
    grid = {"0.5": {"adversarial": 0.82, "random": 0.95}, "1.0": {"adversarial": 0.90, "random": 0.93},
            "2.0": {"adversarial": 0.85, "random": 0.945}, "4.0": {"adversarial": 0.85, "random": 0.95}}
    assert best_accuracy(base, grid, 0.01) == 2.0   # 1.0 is better but costs 2 points of random
    assert best_accuracy(base, grid, 0.05) == 1.0
    assert best_accuracy(base, {"1.0": {"adversarial": 0.80, "random": 0.99}}, 0.01) == 0.0


class _Layout:
    """Just enough of a TokenLayout for the edit: its shape and each row's last prompt position."""

    def __init__(self, last, T):
        self.last, self.shape = last, (len(last), T)

    def span(self, name, r):
        assert name == "last"
        return torch.tensor([self.last[r]])


@pytest.mark.parametrize("last", [[4, 4], [2, 4]])  # one shared last position (a view), or a gather per row
def test_prompt_pass_edits_each_rows_last_position(llava, last):
    m, _ = llava
    iri = IRI([("attn", 0, 1.0)], [("attn", 1)], lam=1.5)
    ed = iri.edits(m)
    g = torch.Generator().manual_seed(1)
    lay = _Layout(last, 5)
    src, tgt = torch.randn(2, 5, 16, generator=g), torch.randn(2, 5, 16, generator=g)
    assert ed["blocks.0.attn"](src, lay) is src  # a source only reads
    out = ed["blocks.1.attn"](tgt, lay)
    for r, p in enumerate(last):
        want = tgt[r, p] + 1.5 * src[r, p]
        want = want * tgt[r, p].norm() / want.norm()
        assert torch.allclose(out[r, p], want, atol=1e-6)
        other = [q for q in range(5) if q != p]
        assert torch.equal(out[r, other], tgt[r, other])
