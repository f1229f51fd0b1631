"""SAE-V fine-tuning payoff (benchmarks/saev_filter_finetune.py): the noisy pool and the subsets."""
import numpy as np
import pytest

from vlinterp.data.questions import caption
from vlinterp.eval.saev_finetune import make_pool, select


def test_pool_mismatches_a_known_share_and_subsets_follow_the_score():
    pool = make_pool(40, seed=3, mismatch=0.25)
    assert len(pool) == 40 and len(pool.bad) == 10
    for i in range(40):
        own = caption(pool.scenes[i])
        assert (pool.caption(i) != own) == (i in pool.bad), i  # a mismatched sample's text is another scene's
    assert pool.px.shape[0] == 40 and pool.image(0).size == (pool.px.shape[3], pool.px.shape[2])
    from vlinterp.zoo.llava_data import pixels

    assert np.array_equal(pool.pixels(pixels), pool.px)  # re-rendered scenes are the pool's own
    scores = np.random.RandomState(0).rand(40)
    sub = select(scores, pool, fractions=(0.25, 0.5), seed=1)
    assert set(sub["top-25"]) == set(np.argsort(-scores)[:10].tolist())
    assert len(sub["random-50"]) == 20 and len(set(sub["random-50"])) == 20
    assert set(sub["matched"]) == set(range(40)) - pool.bad and len(sub["full"]) == 40
    # a score that ranks matched samples first selects no mismatched one
    oracle = np.array([0.0 if i in pool.bad else 1.0 for i in range(40)])
    assert not set(select(oracle, pool)["top-50"]) & pool.bad


@pytest.mark.parametrize("organism,tokens", [("shapes-llava", 100), ("shapes-qwen", 100)])
def test_finetune_then_measure_runs_end_to_end(organism, tokens):
    """The benchmark's per-run path at toy size on both organisms: features, a few fine-tuning steps
    (the LM moves, the tower does not), then every metric of a row (the CHAIR call broke once without a
    test here). shapes-qwen's features are its tower's 100 patch outputs, merged to 25 tokens by the
    (trained) merger."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlinterp.adapters.vlm import VlmAdapter
    from vlinterp.eval.saev_finetune import composite, finetune, is_qwen, measure, pool_features
    from vlinterp.zoo import weights_dir

    torch.manual_seed(0)
    wdir = weights_dir(organism)
    model = AutoModelForImageTextToText.from_pretrained(wdir, local_files_only=True)
    proc = AutoProcessor.from_pretrained(wdir, local_files_only=True)
    pool = make_pool(12, seed=5, mismatch=0.25)
    feats = pool_features(model, pool)
    assert feats.shape[:2] == (12, tokens) and feats.dtype == torch.float16
    assert is_qwen(model) == (organism == "shapes-qwen")
    tower = model.model.visual if is_qwen(model) else model.model.vision_tower
    first_tower = next(p for n, p in tower.named_parameters() if "merger" not in n).detach().clone()
    before = model.lm_head.weight.detach().clone()
    rec = finetune(model, proc, pool, feats, np.arange(8), steps=2, batch=4, lr=1e-3)
    assert rec["samples"] == 8 and rec["steps"] == 2
    assert (model.lm_head.weight - before).abs().max() > 0
    assert torch.equal(next(p for n, p in tower.named_parameters() if "merger" not in n), first_tower)
    row = measure(VlmAdapter(model, proc, name="toy"), n=8, n_captions=4)
    for k in ("presence_random", "presence_adversarial", "colour", "count", "chair_s", "chair_i", "caption_coverage"):
        assert 0.0 <= row[k] <= 1.0, (k, row[k])
    assert len(row["caption_examples"]) == 3 and 0.0 <= composite(row) <= 1.0


def test_summarise_over_seeds():
    from vlinterp.eval.saev_finetune import SUMMARY_METRICS, summarise

    def row(c):
        return {m: c for m in SUMMARY_METRICS}

    per_seed = {0: {"auroc": 0.9, "runs": {"full": row(0.8), "top-25": row(0.9), "random-25": row(0.85), "before": row(0.95)}},
                1: {"auroc": 0.8, "runs": {"full": row(0.9), "top-25": row(0.85), "random-25": row(0.88)}}}
    s = summarise(per_seed)
    assert s["seeds"] == [0, 1] and s["runs"] == ["full", "random-25", "top-25"]  # "before" is on one seed only
    assert np.isclose(s["mean"]["top-25"]["composite"], 0.875) and np.isclose(s["se"]["top-25"]["composite"], 0.025)
    assert np.isclose(s["relative_to_full"]["top-25"]["min"], 0.85 / 0.9) and np.isclose(s["relative_to_full"]["top-25"]["max"], 0.9 / 0.8)
    assert s["beats_full"] == {"top-25": 1} and s["beats_random"] == {"top-25": 1}
    one = summarise({3: per_seed[0]})
    assert one["se"]["full"]["count"] == 0.0 and one["beats_full"] == {"top-25": 1}
