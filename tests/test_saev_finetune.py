"""SAE-V fine-tuning payoff (benchmarks/saev_filter_finetune.py): the noisy pool and the subsets."""
import numpy as np

from vlinterp.data.questions import caption
from vlinterp.eval.saev_finetune import make_pool, select


def test_pool_mismatches_a_known_share_and_subsets_follow_the_score():
    pool = make_pool(40, seed=3, mismatch=0.25)
    assert len(pool) == 40 and len(pool.bad) == 10
    for i in range(40):
        own = caption(pool.scenes[i])
        assert (pool.caption(i) != own) == (i in pool.bad), i  # a mismatched sample's text is another scene's
    assert pool.px.shape[0] == 40 and pool.image(0).size == (pool.px.shape[3], pool.px.shape[2])
    scores = np.random.RandomState(0).rand(40)
    sub = select(scores, pool, fractions=(0.25, 0.5), seed=1)
    assert set(sub["top-25"]) == set(np.argsort(-scores)[:10].tolist())
    assert len(sub["random-50"]) == 20 and len(set(sub["random-50"])) == 20
    assert set(sub["matched"]) == set(range(40)) - pool.bad and len(sub["full"]) == 40
    # a score that ranks matched samples first selects no mismatched one
    oracle = np.array([0.0 if i in pool.bad else 1.0 for i in range(40)])
    assert not set(select(oracle, pool)["top-50"]) & pool.bad
