"""Word grounding (phase 2 of ``shapes-diffusion``): the token loss, the attention tap, and that
the phase really moves an object word's cross-attention onto its object."""
import pytest
import torch

from vlinterp.zoo import recipe_diffusion as recipe
from vlinterp.zoo.diffusion_data import CaptionPool
from vlinterp.zoo.diffusion_ground import WORD_POSITIONS, CrossAttentionTap, inside_fraction, token_loss


def _masks(B=2, S=8):
    m = torch.zeros(B, 2, S, S)
    m[:, 0, :4, :4] = 1          # object 0: top-left quarter
    m[:, 1, 4:, 4:] = 1          # object 1: bottom-right quarter
    return m


def test_token_loss_is_one_minus_the_share_inside_the_mask():
    B, L, N = 2, 10, 16
    m = _masks(B)
    n_obj = torch.tensor([1, 2])
    keep = torch.ones(B, dtype=torch.bool)
    flat = torch.full((B, 1, N, L), 1.0 / L)                      # same attention everywhere
    assert float(token_loss([flat], m, n_obj, keep)) == pytest.approx(0.75)  # a quarter of the mass inside
    # all of each word's mass on its own object's cells -> 0; on the other object's cells -> 1
    on = torch.zeros(B, 1, N, L)
    cells = torch.arange(N).view(4, 4)
    in0, in1 = cells[:2, :2].flatten(), cells[2:, 2:].flatten()
    for o, cells_o in ((0, in0), (1, in1)):
        for j in WORD_POSITIONS[o]:
            on[:, :, cells_o, j] = 1.0
    assert float(token_loss([on], m, n_obj, keep)) == pytest.approx(0.0, abs=1e-5)
    swapped = on.clone()
    swapped[..., [2, 3, 6, 7]] = on[..., [6, 7, 2, 3]]
    assert float(token_loss([swapped], m, torch.tensor([2, 2]), keep)) == pytest.approx(1.0, abs=1e-5)


def test_token_loss_skips_dropped_captions_and_absent_objects():
    B, L, N = 2, 10, 16
    m = _masks(B)
    p = torch.rand(B, 1, N, L, requires_grad=True)
    only0 = token_loss([p], m, torch.tensor([2, 1]), torch.tensor([True, False]))
    ref = token_loss([p[:1]], m[:1], torch.tensor([2]), torch.tensor([True]))
    assert only0.item() == pytest.approx(ref.item())
    none = token_loss([p], m, torch.tensor([1, 1]), torch.tensor([False, False]))
    assert float(none) == 0.0
    only0.backward()  # grad only reaches the kept sample
    assert p.grad[1].abs().sum() == 0 and p.grad[0].abs().sum() > 0


def test_tap_collects_every_cross_attention_with_grad_and_leaves_no_hooks():
    c = recipe.build_components(0)
    unet, te, tok = c["unet"], c["text_encoder"], c["tokenizer"]
    ids = tok(["a red circle."], padding="max_length", max_length=tok.model_max_length, return_tensors="pt")["input_ids"]
    n_attn2 = sum(n.endswith(".attn2") for n, _ in unet.named_modules())
    x = torch.randn(1, 3, recipe.IMAGE_SIZE, recipe.IMAGE_SIZE)
    with CrossAttentionTap(unet) as tap:
        unet(x, torch.tensor([500]), encoder_hidden_states=te(ids)[0])
    assert len(tap.probs) == n_attn2 > 0
    assert all(torch.allclose(p.sum(-1), torch.ones(())) for p in tap.probs)
    tap.probs[0][..., 3].sum().backward()
    assert any(m.to_k.weight.grad is not None for n, m in unet.named_modules() if n.endswith(".attn2"))
    assert all(not m._forward_hooks for m in unet.modules())


@pytest.mark.slow
def test_grounding_phase_moves_word_attention_onto_the_object(tmp_path):
    # phase 1: 2 steps from scratch; phase 2: 40 steps of token loss only (weight high) on a small pool
    kw = dict(progress=False, eval_n=4, pool=64, eval_steps=2, batch=8)
    base = tmp_path / "p1"
    recipe.train(str(base), seed=0, steps=2, ground_steps=0, **kw)
    out = tmp_path / "p2"
    card = recipe.train(str(out), seed=0, steps=2, init=str(base), ground_steps=40, ground_weight=1.0, ground_lr=3e-3,
                        ground_warmup=1, **kw)
    assert card["steps"] == 40 and card["phase1_from"] == str(base)
    import vlinterp as vi

    pool = CaptionPool(32, 3, recipe.IMAGE_SIZE, "val", 30, 0.2)
    tok = recipe.build_components(0)["tokenizer"]
    ids = tok(pool.captions, padding="max_length", max_length=tok.model_max_length, return_tensors="pt")["input_ids"]
    sched = recipe.build_components(0)["scheduler"]

    def share(d):
        a = vi.load(str(d))
        g = torch.Generator().manual_seed(0)
        t = torch.randint(0, 1000, (pool.n,), generator=g)
        return inside_fraction(a.model.unet, a.model.text_encoder, pool.x, ids, pool.masks.float() / 255, pool.n_obj, sched, t, g)

    before, after = share(base), share(out)
    assert after > before + 0.1, (before, after)
