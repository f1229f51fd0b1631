import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp
from vlinterp.core.errors import ConfigError, UnsupportedError, UsageError
from vlinterp.core.hooks import count_hooks
from vlinterp.metrics.pope import choose
from vlinterp.steering.vcd import VCD


@pytest.fixture(scope="module")
def tiny():
    return vlinterp.load("tiny:llava")


def _images(n, size=48):
    return [Image.fromarray((np.random.RandomState(i).rand(size, size, 3) * 255).astype("uint8")) for i in range(n)]


def old_last_logits(v, adapter, batch):
    """The contrasted last-position logits as the method computed them before it was an edit: two runs."""
    rows = torch.arange(batch.layout.shape[0])
    last = torch.tensor([int(batch.layout.span("last", r)[0]) for r in rows.tolist()])
    lc = adapter.run(batch).logits[rows, last]
    ln = adapter.run(batch.replace_inputs(pixel_values=v.noised(batch.inputs["pixel_values"]))).logits[rows, last]
    return v.contrast(lc, ln)


def old_greedy(v, adapter, batch, max_new_tokens=8):
    """The greedy VCD loop the method had before (full recompute of both branches per step): the reference."""
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    px = batch.inputs["pixel_values"]
    pxn = v.noised(px)
    eos = adapter.tokenizer.eos_token_id
    img_tok = getattr(adapter.config, "image_token_index", getattr(adapter.config, "image_token_id", None))
    new = []
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            kw = {k: x for k, x in batch.inputs.items() if k not in ("input_ids", "attention_mask", "pixel_values")}
            lc = adapter.model(input_ids=ids, attention_mask=mask, pixel_values=px, **kw).logits[:, -1]
            ln = adapter.model(input_ids=ids, attention_mask=mask, pixel_values=pxn, **kw).logits[:, -1]
            scores = v.contrast(lc, ln)
            if img_tok is not None:
                scores[:, img_tok] = float("-inf")
            scores[torch.isinf(scores).all(-1), 0] = 0.0
            nxt = scores.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, eos if eos is not None else 0), nxt)
            new.append(nxt)
            done |= nxt == eos
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], 1)
            if done.all():
                break
    toks = torch.stack(new, 1)
    return [adapter.tokenizer.decode(r, skip_special_tokens=True).strip() for r in toks]


def test_vcd_contrast_and_choose_as_before(tiny):
    m = tiny
    imgs = _images(6)
    items = [(im, "is there a red circle?") for im in imgs]
    plain = choose(m, items, ["yes", "no"])
    with VCD(alpha=0.0, beta=0.0).applied(m):
        assert choose(m, items, ["yes", "no"]) == plain
    v = VCD(alpha=1.0, beta=0.3)  # p(token 1) / p(token 0) = e^-1 = 0.37 >= 0.3; token 2 far below
    clean = torch.tensor([[2.0, 1.0, -3.0]])
    noisy = torch.tensor([[1.0, 1.5, 0.0]])
    out = v.contrast(clean, noisy)
    assert torch.isinf(out[0, 2]) and out[0, 2] < 0  # below the plausibility cutoff
    assert torch.allclose(out[0, :2], torch.tensor([3.0, 0.5]))
    # the logits edit gives the last-position logits the two-run form gave, bit for bit (and it bans
    # the image placeholder token, which a generated text must not hold)
    v = VCD(alpha=1.0, beta=0.05)
    b = m.prepare(images=imgs[:3], text=["is there a red circle?", "what color is the square?", "describe the image."])
    want = old_last_logits(v, m, b)
    want[:, m.config.image_token_id] = float("-inf")
    before = count_hooks(m.model)
    with v.applied(m):
        got = m.run(b).logits
    assert count_hooks(m.model) == before
    last = [int(b.layout.span("last", r)[0]) for r in range(3)]
    assert torch.equal(torch.stack([got[r, t] for r, t in enumerate(last)]), want)
    px = b.inputs["pixel_values"]
    assert torch.equal(v.noised(px), v.noised(px)) and not torch.allclose(v.noised(px), px)


def _generate_as_before(m, imgs):
    v = VCD(alpha=1.0, beta=0.1)
    before = count_hooks(m.model)
    for prompt in ("describe the image.", "is there a red circle?"):
        for im in imgs[:2]:
            b = m.prepare(images=[im], text=[prompt])
            assert v.generate(m, b, max_new_tokens=8).texts == old_greedy(v, m, b, 8), prompt
    b = m.prepare(images=imgs, text=["describe the image."] * len(imgs))
    assert v.generate(m, b, max_new_tokens=8).texts == old_greedy(v, m, b, 8)
    assert count_hooks(m.model) == before


@pytest.mark.slow
def test_vcd_generate_equals_the_old_greedy_loop_on_tiny(tiny):
    """``generate`` with the VCD edit (KV cache; the noised branch keeps its own cache) gives the texts of
    the full-recompute greedy loop, one image per call (no padding) and for a batch of equal prompts."""
    _generate_as_before(tiny, _images(3))


@pytest.mark.slow
def test_vcd_generate_equals_the_old_greedy_loop_on_the_organism(shapes_llava):
    from vlinterp.data.shapes import make_split

    _generate_as_before(shapes_llava, [s.pil() for s in make_split("chair", 3, 23)])


def test_vcd_edits_alone_errors_and_config(tiny):
    m = tiny
    b = m.prepare(images=_images(1), text=["is there a red circle?"])
    before = count_hooks(m.model)
    with pytest.raises(UsageError, match="applied"):
        with m.edits(VCD().edits(m)):
            m.run(b)
    assert count_hooks(m.model) == before
    with pytest.raises(UnsupportedError):
        VCD().edits(vlinterp.load("tiny:vit"))
    with pytest.raises(ConfigError, match="noise_step"):
        VCD(noise_step=1000)
    assert VCD.fit(m, []).config == VCD.Config()
