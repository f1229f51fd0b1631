"""Issue 9 floors on the shapes organisms, held-out scenes of a fresh seed, with the shipped recipe
(``vlinterp protos train`` defaults: 2000 scenes, discriminative push, unused prototypes pruned).

Floors (issue): head within 2 points of the linear probe; >= 80% of prototypes consistent; mean
stability >= 0.9; pointing game >= 0.85. Measured (``protos eval --n 300``, eval seeds
71 / 81 / 87 / 91 / 93): shapes-vit pointing 0.934 / 0.932 / 0.923 / 0.922 / 0.922, consistent
0.86-0.96, stability >= 0.93, accuracy 0.947-0.954 vs probe 0.935-0.945; shapes-clip pointing
0.882 / 0.861 / 0.868 / 0.868 / 0.870, consistent 0.86-0.90, stability >= 0.948, accuracy 0.95-0.954
vs 0.942-0.948. On 150 scenes of seed 91 clip reads 0.845, so the test evaluates 300. With ProtoPNet's nearest-patch push the pointing
was 0.81 (vit) and 0.755 (clip): some prototypes sat on the co-occurring partner object.
"""
import pytest

import vlinterp as vi
from vlinterp.eval.protos import evaluate_shapes, fit_shapes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shapes-vit", "shapes-clip"])
def test_prototype_head_on_organism(name):
    pm = fit_shapes(vi.load(name), n=2000, progress=False)
    res = evaluate_shapes(pm, 300, 91)
    assert res["head"]["mean_label_accuracy"] >= res["probe"]["mean_label_accuracy"] - 0.02
    assert res["stability"]["mean"] >= 0.9
    assert res["consistency"]["share_consistent"] >= 0.8
    loc = res["localisation"]
    assert loc["pointing_game"] >= 0.85, loc
    assert loc["pointing_game"] >= 5 * loc["random_map_baseline"], loc
