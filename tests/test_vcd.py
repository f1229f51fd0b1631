import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp
from vlinterp.core.errors import UnsupportedError
from vlinterp.metrics.pope import choose
from vlinterp.steering.vcd import VCD


def test_vcd_reduces_to_plain_at_alpha_zero_and_contrasts_otherwise():
    m = vlinterp.load("tiny:llava")
    imgs = [Image.fromarray((np.random.RandomState(i).rand(48, 48, 3) * 255).astype("uint8")) for i in range(6)]
    items = [(im, "is there a red circle?") for im in imgs]
    plain = choose(m, items, ["yes", "no"])
    assert VCD(alpha=0.0, beta=0.0).choose(m, items, ["yes", "no"]) == plain
    v = VCD(alpha=1.0, beta=0.3)  # p(token 1) / p(token 0) = e^-1 = 0.37 >= 0.3; token 2 far below
    clean = torch.tensor([[2.0, 1.0, -3.0]])
    noisy = torch.tensor([[1.0, 1.5, 0.0]])
    out = v.contrast(clean, noisy)
    assert torch.isinf(out[0, 2]) and out[0, 2] < 0  # below the plausibility cutoff
    assert torch.allclose(out[0, :2], torch.tensor([3.0, 0.5]))
    b = m.prepare(images=imgs[:2], text=["describe the image.", "what color is the circle?"])
    texts = v.generate(m, b, max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    px = b.inputs["pixel_values"]
    assert torch.equal(v.noised(px), v.noised(px)) and not torch.allclose(v.noised(px), px)
    with pytest.raises(UnsupportedError):
        v.last_logits(vlinterp.load("tiny:vit"), vlinterp.load("tiny:vit").prepare(images=imgs[:1]))
