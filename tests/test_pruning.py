"""Visual token pruning: exactness at keep=1, kept positions, real removal vs a model fed only the
kept tokens, FLOPs accounting, errors, on the shapes-llava organism and tiny random LLaVAs."""
import numpy as np
import pytest
import torch

import vlinterp as vi
from vlinterp.core.errors import ConfigError, LayerRangeError, UnknownNameError, UnsupportedError
from vlinterp.pruning import PRUNERS, Pruner, PrunedLM, make_pruner
from vlinterp.pruning.fastv import received_attention
from vlinterp.pruning.flops import lm_flops

METHODS = ("random", "fastv", "visionzip", "info", "hybrid")


def _batch(m, n=4):
    from vlinterp.data.shapes import make_split

    scenes = make_split("test", n, 77)
    prompts = ["describe the image.", "is there a red circle?", "how many circles are there?", "what color is the square?"]
    return m.prepare(images=[s.pil() for s in scenes], text=[prompts[i % 4] for i in range(n)])


class _Fixed(Pruner):
    """Keeps the given grid cells (per row) before layer ``layer``."""

    def __init__(self, cells, layer=0):
        super().__init__(len(cells[0]) / 100)
        self.cells, self.layer = torch.tensor(cells), layer

    def at_layer(self, ctx):
        if ctx.layer != self.layer:
            return None
        keep = ~ctx.image
        for b in range(ctx.image.shape[0]):
            keep[b] |= ctx.image[b] & torch.isin(ctx.grid[b], self.cells[b])
        return keep


def test_batch_has_padding(shapes_llava):
    b = _batch(shapes_llava)
    assert (b.inputs["attention_mask"] == 0).any(), "the test batch must mix prompt lengths (left padding)"


@pytest.mark.parametrize("method", METHODS)
def test_keep_one_is_bit_identical(shapes_llava, method):
    m = shapes_llava
    b = _batch(m)
    ref = m.run(b).logits[:, -1]
    pre = PrunedLM(m).prefill(b, make_pruner(f"{method}:1.0", **({"horizon": 2} if method == "hybrid" else {})))
    assert torch.equal(pre.logits, ref)
    assert pre.image_kept.shape == (4, 100)


def test_unpruned_generation_matches_model_generate(shapes_llava):
    m = shapes_llava
    b = _batch(m)
    ours = PrunedLM(m).generate(b, None, max_new_tokens=5)
    theirs = m.generate(b, max_new_tokens=5)
    assert ours.texts == theirs.texts


@pytest.mark.parametrize("spec", ["random:0.25", "fastv:0.25", "info:0.1", "visionzip:0.25", "hybrid:0.25:horizon=3",
                                  "hybrid:0.5:early=info:horizon=3"])
def test_sequence_really_shrinks(shapes_llava, spec):
    b = _batch(shapes_llava)
    p = make_pruner(spec)
    pre = PrunedLM(shapes_llava).prefill(b, p)
    T = b.inputs["input_ids"].shape[1]
    n_text = T - 100
    expect = p.schedule(100, 4)
    for l, idx in pre.kept.items():
        assert idx.shape == (4, n_text + expect[l]), (l, idx.shape)
        assert bool((idx[:, 1:] > idx[:, :-1]).all()), "kept positions must stay in order"
    assert pre.cache.k[3].shape[2] == n_text + expect[3], "the KV cache holds only the kept tokens"


def test_kept_positions_are_the_chosen_ones(shapes_llava):
    m = shapes_llava
    b = _batch(m)
    cells = [[0, 5, 17, 55, 99], [1, 2, 3, 4, 50], [10, 20, 30, 40, 60], [7, 8, 9, 90, 91]]
    pre = PrunedLM(m).prefill(b, _Fixed(cells, layer=1))
    assert pre.image_kept.tolist() == cells
    image_pos = [(b.inputs["input_ids"][r] == m.config.image_token_index).nonzero().flatten() for r in range(4)]
    for r in range(4):
        kept = set(pre.kept[2][r].tolist())
        assert {int(image_pos[r][c]) for c in cells[r]} <= kept
        assert not ({int(p) for p in image_pos[r]} - {int(image_pos[r][c]) for c in cells[r]}) & kept
    assert pre.kept[0].shape[1] == b.inputs["input_ids"].shape[1]


def test_fastv_keeps_the_most_attended_tokens(shapes_llava):
    m = shapes_llava
    b = _batch(m)
    att = m.attention(b, layers=[1])[1]  # the adapter's own attention path, [B, H, T, T]
    recv = received_attention(att)
    image = b.inputs["input_ids"] == m.config.image_token_index
    want = [sorted(recv[r][image[r]].topk(25).indices.tolist()) for r in range(4)]
    pre = PrunedLM(m).prefill(b, make_pruner("fastv:0.25:layer=2"))
    assert [sorted(x) for x in pre.image_kept.tolist()] == want


def test_pruned_generation_equals_model_fed_only_kept_tokens(shapes_llava):
    m = shapes_llava
    b = _batch(m)
    runner = PrunedLM(m)
    p = make_pruner("random:0.3:seed=3")
    g = runner.generate(b, p, max_new_tokens=4, generator=torch.Generator().manual_seed(5))
    pre = runner.prefill(b, p, generator=torch.Generator().manual_seed(5))
    keep = pre.kept[0]  # [B, T'] original indices
    with torch.no_grad():
        emb = runner.lm_inputs(b).h
        e = torch.gather(emb, 1, keep[..., None].expand(-1, -1, emb.shape[-1]))
        mask = torch.gather(b.inputs["attention_mask"], 1, keep)
        pos = keep.clone()
        toks = []
        for step in range(4):
            out = m.model(inputs_embeds=e, attention_mask=mask, position_ids=pos).logits[:, -1]
            if step == 0:
                assert torch.allclose(out, pre.logits, atol=1e-4)
            nxt = out.argmax(-1)
            toks.append(nxt)
            e = torch.cat([e, m.model.get_input_embeddings()(nxt)[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = torch.cat([pos, pos[:, -1:] + 1], 1)
    ref = torch.stack(toks, 1)
    eos = m.tokenizer.eos_token_id
    for r in range(4):
        ours = g.new_tokens[r].tolist()
        theirs = ref[r].tolist()
        n = ours.index(eos) + 1 if eos in ours else len(ours)
        assert ours[:n] == theirs[:n]


def test_dropping_equals_hiding_for_kept_positions(shapes_llava):
    """Dropping tokens before layer 2 gives the same last-position output as keeping them in the
    sequence but hiding them as keys from layer 2 on (two code paths, one meaning)."""
    m = shapes_llava
    b = _batch(m)
    runner = PrunedLM(m)
    cells = [[0, 5, 17, 55, 99]] * 4
    pre = runner.prefill(b, _Fixed(cells, layer=2))
    image = b.inputs["input_ids"] == m.config.image_token_index
    grid = image.long().cumsum(1) - 1
    hide = image & ~torch.isin(grid, torch.tensor(cells[0]))
    hidden = runner.prefill(b, removed={2: hide})
    assert torch.allclose(pre.logits, hidden.logits, atol=1e-4)
    assert not torch.allclose(pre.logits, m.run(b).logits[:, -1], atol=1e-4)


def test_flops_accounting():
    class Cfg:
        hidden_size, num_attention_heads, num_key_value_heads, head_dim, intermediate_size, vocab_size = 8, 2, 1, 4, 16, 10

    full = lm_flops(Cfg, 3, [5, 5])
    # per layer: params 8*8 + 2*8*4 + 8*8 + 3*8*16 = 576; n = 8 tokens -> 2*8*576 + 2*8*9*8 = 10368
    assert full["prefill"] == 2 * 10368 + 2 * 8 * 10
    half = lm_flops(Cfg, 3, [5, 1])
    assert half["prefill"] < full["prefill"]
    assert lm_flops(Cfg, 3, [5, 5], decode_steps=2)["decode"] > 0
    assert make_pruner("fastv:0.25").schedule(100, 4) == [100, 100, 25, 25]
    assert make_pruner("hybrid:0.5:horizon=3").schedule(100, 4) == [50, 50, 50, 25]
    assert make_pruner("hybrid:0.5:early=info:horizon=3").schedule(100, 4) == [100, 100, 50, 25]
    assert make_pruner("hybrid:1.0:horizon=1").schedule(100, 4) == [100] * 4


def test_errors(shapes_llava):
    with pytest.raises(UnknownNameError, match="unknown pruning method 'fastb'; did you mean fastv"):
        make_pruner("fastb:0.5")
    with pytest.raises(ConfigError, match="keep ratio"):
        make_pruner("random:1.5")
    with pytest.raises(ConfigError, match=r"'2' in 'fastv:0.5:2' is not key=value"):
        make_pruner("fastv:0.5:2")
    with pytest.raises(ConfigError, match="layer must be >= 1"):
        make_pruner("fastv:0.5:layer=0")
    with pytest.raises(ConfigError, match="unknown option"):
        make_pruner("visionzip:0.5:nosuch=1")
    with pytest.raises(ConfigError, match="proxy"):
        make_pruner("info:0.5:proxy=nosuch")
    b = _batch(shapes_llava)
    with pytest.raises(LayerRangeError, match="outside"):
        PrunedLM(shapes_llava).prefill(b, make_pruner("fastv:0.5:layer=9"))
    assert PRUNERS.names() == list(METHODS)


def test_specs_and_configs():
    """``make_pruner`` specs, the registry's ``create`` and direct construction build the same pruner."""
    from vlinterp.pruning.fastv import FastV

    a, b = make_pruner("fastv:0.5:layer=3"), PRUNERS.create("fastv", keep=0.5, layer=3)
    assert a.config == b.config == FastV(0.5, layer=3).config == FastV.Config(keep=0.5, layer=3)
    assert make_pruner("visionzip[keep=0.3,tower_layer=2]").config == make_pruner("visionzip:0.3:tower_layer=2").config
    assert make_pruner("hybrid").keep == 0.25 and make_pruner("hybrid:0.1:horizon=2", seed=4).seed == 4
    assert make_pruner("visionzip:0.25:proportional=0").proportional is False


def test_hybrid_without_a_measured_horizon_says_so(shapes_llava):
    from vlinterp.pruning.information import known_horizon

    if known_horizon(shapes_llava) is None:
        with pytest.raises(ConfigError, match="horizon"):
            PrunedLM(shapes_llava).prefill(_batch(shapes_llava, 2), make_pruner("hybrid:0.5"))


def test_one_file_and_one_line_add_a_method(shapes_llava):
    """A new method is a class with a Config, registered by one line: specs, options and errors work."""
    from dataclasses import dataclass

    class EveryOther(Pruner):
        name = "every_other"

        @dataclass
        class Config(Pruner.Config):
            offset: int = 0

        def at_layer(self, ctx):
            if ctx.layer:
                return None
            return ctx.keep_top(((ctx.grid + self.offset) % 2 == 0).float(), self.n_keep(ctx.n_image))

    PRUNERS.register("every_other", EveryOther)
    try:
        p = make_pruner("every_other:0.5:offset=1")
        pre = PrunedLM(shapes_llava).prefill(_batch(shapes_llava, 2), p)
        assert pre.image_kept.shape == (2, 50) and bool((pre.image_kept % 2 == 1).all())
        with pytest.raises(ConfigError, match="offset"):
            make_pruner("every_other:0.5:offset=x")
    finally:
        PRUNERS._targets.pop("every_other"), PRUNERS._loaded.pop("every_other")


def test_tiny_llava_and_unsupported_layouts(tmp_path):
    from vlinterp.adapters.llava import LlavaAdapter, save_tiny

    path = save_tiny("llava", str(tmp_path / "tiny"))
    m = vi.load(path)
    b = m.prepare(images=[np.zeros((32, 32, 3), np.uint8)] * 2, text=["what is it?", "describe the image please now"])
    ref = m.run(b).logits[:, -1]
    runner = PrunedLM(m)
    assert torch.equal(runner.prefill(b, make_pruner("fastv:1.0:layer=1")).logits, ref)
    g = runner.generate(b, make_pruner("visionzip:0.5"), max_new_tokens=3)
    assert g.new_tokens.shape[0] == 2
    nx = LlavaAdapter.tiny("llava-next")  # tiles + newline tokens: LM-side pruning runs, VisionZip says why not
    bn = nx.prepare(images=[np.zeros((32, 48, 3), np.uint8)], text=["what is it?"])
    assert torch.equal(PrunedLM(nx).prefill(bn, make_pruner("fastv:1.0:layer=1")).logits, nx.run(bn).logits[:, -1])
    with pytest.raises(UnsupportedError, match="crops"):
        PrunedLM(nx).prefill(bn, make_pruner("visionzip:0.5"))
    with pytest.raises(UnsupportedError, match="vision-language model"):
        PrunedLM(vi.load("tiny:vit"))


@pytest.mark.slow
def test_information_by_removal(shapes_llava):
    from vlinterp.eval.prune import probe_items
    from vlinterp.pruning.information import summarise, token_information

    info = token_information(shapes_llava, probe_items(2), progress=False)
    assert info["exact"].shape == (2, 4, 100)
    assert np.all(info["exact"] >= 0) and np.any(info["exact"] > 0)
    s = summarise(info)
    assert 0 <= s["horizon"] <= 4 and len(s["curve"]) == 4
    assert set(s["spearman"]) == {"attention", "last_attention", "contribution", "combined"}
    # a token hidden from layer 0 is removed entirely: its information there equals the TV
    # distance to a run on the sequence without it
    runner = PrunedLM(shapes_llava)
    b = shapes_llava.prepare(images=[probe_items(1)[0].image], text=[probe_items(1)[0].prompt])
    cell = int(info["exact"][0, 0].argmax())
    out = runner.prefill(b, _Fixed([[c for c in range(100) if c != cell]], layer=0)).logits
    base = runner.prefill(b).logits
    tv = 0.5 * (base.softmax(-1) - out.softmax(-1)).abs().sum().item()
    assert tv == pytest.approx(info["exact"][0, 0, cell], abs=1e-4)


def test_visionzip_merged_tokens_get_proportional_attention(shapes_llava):
    """VisionZip's prefill equals the model's own forward fed only the kept tokens (original
    positions) with a 4-D additive mask carrying log(group size) on each merged token."""
    m = shapes_llava
    b = _batch(m)
    runner = PrunedLM(m)
    p = make_pruner("visionzip:0.25")
    feats, keep_grid, sizes = p.vision(runner, b)
    assert bool((sizes > 1).any()) and int(keep_grid.sum(1)[0]) == 25
    pre = runner.prefill(b, p)
    with torch.no_grad():
        inp = runner.lm_inputs(b, feats)
        emb, image, grid = inp.h, inp.image, inp.grid
        keep = ~image | torch.gather(keep_grid, 1, grid.clamp(min=0))
        idx = keep.nonzero()[:, 1].reshape(4, -1)
        e = torch.gather(emb, 1, idx[..., None].expand(-1, -1, emb.shape[-1]))
        valid = torch.gather(b.inputs["attention_mask"], 1, idx).bool()
        bias = torch.where(image, torch.gather(sizes, 1, grid.clamp(min=0)).log(), torch.zeros(()))
        bias = torch.gather(bias, 1, idx)
        allowed = ((idx[:, None, :] <= idx[:, :, None]) & valid[:, None, :]) | (idx[:, None, :] == idx[:, :, None])
        mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min) + bias[:, None, :].masked_fill(~allowed, 0)
        ref = m.model(inputs_embeds=e, attention_mask=mask[:, None], position_ids=idx).logits[:, -1]
    assert torch.allclose(pre.logits, ref, atol=1e-4)
    plain = runner.prefill(b, make_pruner("visionzip:0.25:proportional=0")).logits
    assert not torch.allclose(plain, pre.logits, atol=1e-3)


def test_visionzip_inside_the_tower(shapes_llava):
    """``tower_layer=m``: tokens chosen after tower layer m; the later tower layers see only CLS and
    the kept tokens. Checked against the HF tower's own hidden state at m, run on through those
    layers by hand; at the feature depth it is the default, exactly; out of range is an error."""
    from vlinterp.pruning.flops import tower_flops

    m = shapes_llava
    b = _batch(m)
    runner = PrunedLM(m)
    vcfg, Lv, depth = runner.tower_shape()
    assert (Lv, depth) == (6, 5)
    f0, k0, s0 = make_pruner("visionzip:0.25").vision(runner, b)
    f1, k1, s1 = make_pruner(f"visionzip:0.25:tower_layer={depth}").vision(runner, b)
    assert torch.equal(f0, f1) and torch.equal(k0, k1) and torch.equal(s0, s1)

    feats, keep, sizes = make_pruner("visionzip:0.25:tower_layer=2:contextual=0").vision(runner, b)
    assert int(keep.sum(1).min()) == int(keep.sum(1).max()) == 25 and bool((sizes == 1).all())
    tower = m.model.model.vision_tower
    layers = (tower.vision_model if hasattr(tower, "vision_model") else tower).encoder.layers
    with torch.no_grad():
        hs = tower(b.inputs["pixel_values"], output_hidden_states=True).hidden_states[2]  # after tower layer 2
        for i in range(feats.shape[0]):
            pos = keep[i].nonzero().flatten()
            x = torch.cat([hs[i:i + 1, :1], hs[i:i + 1, 1:][:, pos]], 1)
            for j in range(2, depth):
                out = layers[j](x, None)
                x = out[0] if isinstance(out, tuple) else out
            ref = m.model.model.multi_modal_projector(x[0, 1:])
            assert torch.allclose(feats[i, pos], ref, atol=1e-5)
    # and the selection is the top CLS attention after layer 2, not the feature layer's
    assert not torch.equal(keep, make_pruner("visionzip:0.25:contextual=0").vision(runner, b)[1])
    with pytest.raises(LayerRangeError, match="tower_layer"):
        make_pruner(f"visionzip:0.25:tower_layer={depth + 1}").vision(runner, b)
    # compute: the whole tower for other methods; the feature depth, then 26 tokens, for this one
    assert make_pruner("fastv:0.25").tower_schedule(100, Lv, depth) == [101] * 6
    assert make_pruner("hybrid:0.25:tower_layer=3").tower_schedule(100, Lv, depth) == [101] * 3 + [26] * 2
    assert tower_flops(vcfg, [101] * 3 + [26] * 2) < 0.7 * tower_flops(vcfg, [101] * 6)


def test_visionzip_batched_selection_equals_the_per_image_loop():
    """The batched dominant/contextual selection and merge equal a plain loop over images."""
    from vlinterp.pruning.visionzip import _select_and_merge

    g = torch.Generator().manual_seed(0)
    hid, attn = torch.randn(3, 30, 8, generator=g), torch.rand(3, 30, generator=g)
    keep, merged, sizes = _select_and_merge(hid, attn, 5, 3)
    for i in range(3):
        k = torch.zeros(30, dtype=torch.bool)
        k[attn[i].topk(5).indices] = True
        rest = (~k).nonzero().flatten()
        targets = rest[torch.linspace(0, len(rest) - 1, 3).round().long()]
        others = rest[~torch.isin(rest, targets)]
        k[targets] = True
        f = torch.nn.functional.normalize(hid[i], dim=-1)
        near = (f[others] @ f[targets].T).argmax(1)
        assert torch.equal(keep[i], k)
        for j, t in enumerate(targets.tolist()):
            group = torch.cat([hid[i, t:t + 1], hid[i, others[near == j]]])
            assert torch.allclose(merged[i, t], group.mean(0), atol=1e-6) and sizes[i, t] == len(group)
        assert torch.equal(merged[i, ~k], hid[i, ~k]) and bool((sizes[i, ~k] == 1).all())


def test_decoding_reads_the_model_dtype_once(shapes_llava, monkeypatch):
    """``adapter.dtype`` walks every module (~2 ms on a 0.8B model). Decoding a cache with merged
    tokens (VisionZip's log-size attention bias: an additive float mask) once read it at every layer
    of every step, 1.3x plain decoding per token at the Qwen2-0.5B geometry; now once per decode."""
    import vlinterp.adapters.dtypes as dtypes

    run = PrunedLM(shapes_llava)
    pre = run.prefill(_batch(shapes_llava, 1), make_pruner("visionzip", keep=0.25))
    assert any(b is not None for b in pre.bias)  # the biased (float-mask) path
    real, calls = dtypes.model_dtype, []
    monkeypatch.setattr(dtypes, "model_dtype", lambda model: calls.append(1) or real(model))
    new, _ = run.decode(pre, 6, stop_at_eos=False)
    assert new.shape[1] == 6 and len(calls) == 1
