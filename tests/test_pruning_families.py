"""Pruning on the new VLM families: a pruned Qwen run equals the model's own forward fed only the
kept tokens with their original 3-D (M-RoPE) positions, prefill and greedy decoding; renumbering
the kept tokens 0..T'-1 instead gives other logits, so the check sees positions."""
import numpy as np
import pytest
import torch

import vlinterp as vi
from vlinterp.pruning import PrunedLM, make_pruner


def _image(h=40, w=56, seed=0):
    return np.random.RandomState(seed).randint(0, 255, (h, w, 3), np.uint8)


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_pruned_qwen_equals_model_fed_only_kept_tokens(family):
    m = vi.load(f"tiny:{family}")
    b = m.prepare(images=[_image(), _image(56, 40, 1)], text=["what is it?", "describe it"])
    runner = PrunedLM(m)
    p = make_pruner("random:0.4:seed=3")
    steps = 3
    g = runner.generate(b, p, max_new_tokens=steps, generator=torch.Generator().manual_seed(5))
    pre = runner.prefill(b, p, generator=torch.Generator().manual_seed(5))
    keep = pre.kept[0]  # [B, T'] original indices, the same before every layer (pruned before layer 0)
    assert keep.shape[1] < b.inputs["input_ids"].shape[1]
    with torch.no_grad():
        emb = runner.lm_inputs(b).h  # [B, T, D] token embeddings with the image features merged in
        pos3 = m.position_ids(b)  # [3, B, T]
        assert pos3.dim() == 3 and pos3.shape[0] == 3
        e = torch.gather(emb, 1, keep[..., None].expand(-1, -1, emb.shape[-1]))
        mask = torch.gather(b.inputs["attention_mask"], 1, keep)
        pos = torch.gather(pos3, 2, keep[None].expand(3, -1, -1))
        renumbered = m.model(inputs_embeds=e, attention_mask=mask).logits[:, -1]
        toks = []
        for step in range(steps):
            out = m.model(inputs_embeds=e, attention_mask=mask, position_ids=pos).logits[:, -1]
            if step == 0:  # equal with the original 3-D ids; renumbering the kept tokens 0..T'-1 is measurably off
                d_ok, d_renum = (out - pre.logits).abs().max().item(), (renumbered - pre.logits).abs().max().item()
                assert d_ok < 1e-5 and d_renum > 10 * max(d_ok, 1e-6), (d_ok, d_renum)
            nxt = out.argmax(-1)
            toks.append(nxt)
            e = torch.cat([e, m.model.get_input_embeddings()(nxt)[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = torch.cat([pos, pos.amax((0, 2), keepdim=True).expand(3, -1, 1) + 1], 2)
    ref = torch.stack(toks, 1)
    assert torch.equal(g.new_tokens[:, :steps], ref)


@pytest.mark.parametrize("family", ["llava-next", "qwen2-vl", "qwen3-vl", "llava-onevision", "gemma3", "paligemma", "internvl",
                                    "smolvlm"])
def test_nothing_dropped_equals_the_model_and_dropping_changes_it(family):
    """Keep-all prefill gives the model's own logits (bit-identical; Qwen3-VL within 1e-6: its
    DeepStack additions are re-added as recorded differences) and a 0.25 FastV keep changes them."""
    m = vi.load(f"tiny:{family}")
    b = m.prepare(images=[_image()], text=["what is it?"])
    runner = PrunedLM(m)
    ref = m.run(b).logits[:, -1]
    same = runner.prefill(b, make_pruner("fastv:1.0:layer=1")).logits
    if family == "qwen3-vl":
        assert (same - ref).abs().max() < 1e-6
    else:
        assert torch.equal(same, ref)
    p = make_pruner("fastv:0.25:layer=1")
    pre = runner.prefill(b, p)
    assert pre.image_kept.shape[1] == p.n_keep(runner.n_image(b)) < runner.n_image(b)
    assert (pre.logits - ref).abs().max() > 1e-6


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_visionzip_on_packed_qwen_towers(family):
    """VisionZip without a CLS token (pruning/visionzip_packed.py): each merged token's score is the
    attention its m x m patches receive in the last tower block (per image it sums to 1, and equals
    the packed probabilities pooled by hand); the dominant tokens are the top-scored ones; every token
    is kept or merged into one context token; keeping everything is the unpruned run."""
    from vlinterp.core.errors import UnsupportedError
    from vlinterp.pruning.visionzip_packed import received_attention, received_per_patch

    m = vi.load(f"tiny:{family}")
    b = m.prepare(images=[_image(56, 56), _image(56, 56, 1)], text=["what is it?", "describe it"])
    runner = PrunedLM(m)
    last = len(m.vision_blocks) - 1
    got = {}
    with torch.no_grad(), m.raw_hooks() as hooks:
        hooks.forward(m.module(f"vision.blocks.{last}.attn"), lambda mod, a, kw, out: got.update(r=received_per_patch(mod, a, kw)),
                      with_kwargs=True)
        probs = m.attention(b, [last], stream="vision")[last]      # [1, H, Np, Np], the packed row, in one piece
    score = received_attention(b, got["r"])
    vis, proj = b.layouts["vision"], b.layouts["projector"]
    n, N = score.shape
    assert (n, N) == (2, int(np.prod(proj.grid(0)))) and torch.allclose(score.sum(1), torch.ones(2), atol=1e-5)
    # by hand: image 1's patch (r, c) belongs to token (r // m, c // m)
    pos = vis.image_positions(1)
    p = probs[0].float().mean(0)[pos][:, pos].mean(0)
    h, w = vis.grid(1)
    mm = h // proj.grid(1)[0]
    rr, cc = np.divmod(np.arange(h * w), w)
    by_hand = torch.zeros(N).index_add_(0, torch.as_tensor((rr // mm) * (w // mm) + cc // mm), p)
    assert torch.allclose(score[1], by_hand, atol=1e-6)

    pz = make_pruner("visionzip:0.5")
    feats, keep, sizes, recorded = pz.vision(runner, b)
    k = pz.n_keep(N)
    k_c = int(round(pz.contextual * k))
    assert keep.sum(1).tolist() == [k, k]
    for i in range(n):
        top = set(score[i].topk(k - k_c).indices.tolist())
        assert top <= set(keep[i].nonzero()[:, 0].tolist())
        assert float(sizes[i][keep[i]].sum()) == N           # every token kept or merged into one group
    pre = runner.prefill(b, pz)
    # the layer inputs it hands back (recorded while the tower ran) equal recording the merged features afresh
    assert torch.allclose(recorded.h, runner.lm_inputs(b, feats).h, atol=1e-6)
    assert torch.allclose(pre.logits, runner.prefill(b, pz, inputs=runner.lm_inputs(b, feats)).logits, atol=1e-5)
    assert pre.image_kept.shape[1] == k and torch.equal(pre.image_kept.sort(1).values, keep.nonzero()[:, 1].view(n, k))
    with torch.no_grad():
        full = runner.prefill(b).logits
        everything = runner.prefill(b, make_pruner("visionzip:1.0")).logits
    assert torch.allclose(everything, full, atol=1e-5) and not torch.allclose(pre.logits, full, atol=1e-4)
    with pytest.raises(UnsupportedError, match="tower_layer needs a CLS token"):
        runner.prefill(b, make_pruner("visionzip:0.5:tower_layer=1"))


def test_visionzip_refuses_qwen3_deepstack():
    from vlinterp.core.errors import UnsupportedError

    m = vi.load("tiny:qwen3-vl")
    b = m.prepare(images=[_image(56, 56)], text=["what is it?"])
    with pytest.raises(UnsupportedError, match="DeepStack"):
        PrunedLM(m).prefill(b, make_pruner("visionzip:0.5"))
