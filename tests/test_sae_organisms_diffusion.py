"""SAE steering on shapes-diffusion (issue 6; slow): h-space steering moves samples, a text-side
colour feature turns the generated colour, and the swap edit acts only where its feature fires.
(Apart from test_sae_organisms.py so two test workers can run them side by side.)"""
import pytest
import torch

import vlinterp
from vlinterp.core.hooks import count_hooks
from vlinterp.zoo import available


@pytest.mark.slow
def test_diffusion_hspace_steering_moves_samples():
    if not available("shapes-diffusion"):
        pytest.skip("shapes-diffusion weights not shipped")
    from vlinterp.eval.sae_diffusion import colour_feature, harvest_hspace, steer_colour
    from vlinterp.sae.train import train_sae

    m = vlinterp.load("shapes-diffusion")
    st = harvest_hspace(m, n=24, steps=4, progress=False)
    assert st.acts.shape[1] == m.unet.config.block_out_channels[-1]
    sae = train_sae(st, d_sae=128, k=8, steps=300, batch_size=256, image_fraction=None, progress=False)
    feats = colour_feature(sae, st)
    assert set(feats) == {"red", "green", "blue", "yellow", "purple", "orange"}
    prompts = [("blue", "circle"), ("blue", "square")]
    before = count_hooks(m.model)
    plain = steer_colour(m, sae, feats, "red", prompts, alpha=0.0, steps=4)
    steered = steer_colour(m, sae, feats, "red", prompts, alpha=30.0, steps=4)
    assert count_hooks(m.model) == before
    assert (steered - plain).abs().mean() > 1e-3


@pytest.mark.slow
def test_diffusion_text_side_colour_feature_turns_the_colour():
    """Issue 6 floor (>= 70% of samples turned to the steered colour, judged by shapes-vit): met on
    the text encoder's output, with one distinct feature per colour picked by firing-rate
    difference. ``benchmarks/diffusion_steering.py --sites text.final --modes swap --alphas 8
    --n-per-target 16 --seed 17``: 0.750 of 96 (unsteered 0.0; orange never turns, the others
    0.56-1.0); alpha 8 was chosen on seed 5. Here 24 samples of seed 5. In h-space (unet.mid.0) and
    at the cross-attention outputs it stays <= 0.17 (skip connections carry the colour)."""
    if not available("shapes-diffusion") or not available("shapes-vit"):
        pytest.skip("shapes-diffusion / shapes-vit weights not shipped")
    import torch

    from vlinterp.eval.sae_diffusion import colour_feature, harvest_hspace, steering_success
    from vlinterp.sae.train import train_sae
    from vlinterp.zoo import load_organism

    torch.manual_seed(0)
    m = vlinterp.load("shapes-diffusion")
    st = harvest_hspace(m, n=96, steps=1, site="text.final", progress=False)
    sae = train_sae(st, d_sae=256, k=8, steps=1500, batch_size=256, image_fraction=None, progress=False)
    feats = colour_feature(sae, st)
    before = count_hooks(m.model)
    assert len({f["feature"] for f in feats.values()}) == 6  # one feature per colour
    r = steering_success(m, sae, feats, load_organism("shapes-vit"), n_per_target=4, alpha=8.0, mode="swap",
                         site="text.final", seed=5, progress=False)
    assert count_hooks(m.model) == before
    assert r["unsteered"] == 0.0 and r["success"] >= 0.7, r


def test_swap_edit_replaces_the_source_feature_only_where_it_fires():
    import torch

    from vlinterp.sae.diffusion import swap_edit

    class Relu:  # a two-feature SAE whose codes are the first two channels, rectified
        W_dec = torch.eye(2, 3)

        def encode(self, x):
            return torch.relu(x[:, :2])

    t = torch.tensor([[[[2.0, -1.0]], [[0.5, 0.0]], [[7.0, 7.0]]]])     # [B=1, C=3, h=1, w=2]
    out = swap_edit(Relu(), src=0, tgt=1, gain=3.0)(t, None)
    # position 0: feature 0 fires at 2 -> channel 0 loses 2, channel 1 gains 3 * 2; position 1: untouched
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.0, 6.5, 7.0]))
    assert torch.equal(out[0, :, 0, 1], t[0, :, 0, 1])
