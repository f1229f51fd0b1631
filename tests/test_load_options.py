"""Every tiny model takes the loader's ``device`` and ``dtype`` options and runs with them."""
import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp
from vlinterp.adapters.registry import TINY


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(TINY))
def test_tiny_models_take_device_and_dtype(variant):
    m = vlinterp.load(f"tiny:{variant}", device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in m.model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in m.model.parameters()} == {"cpu"}
    img = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))
    if m.kind == "vlm":
        b = m.prepare(images=[img], text=["is there a red circle?"])
    elif m.kind == "diffusion":
        b = m.prepare(text=["a red circle"])
    else:
        b = m.prepare(images=[img])
    out = m.run(b, capture=["**"])
    assert out.cache and all(torch.isfinite(v.float()).all() for v in out.cache.values())
