"""Discriminative push on a constructed world with a co-occurring partner: the nearest-patch push
follows a prototype that learned the partner; the discriminative push moves it onto the class's
own pattern, which separates the class's images from the others better."""
import pytest
import torch

from vlinterp.prototypes.head import ProtoHead
from vlinterp.prototypes.push import push
from vlinterp.prototypes.push_discriminative import discriminative_push, image_auroc


def test_image_auroc_by_hand():
    y = torch.tensor([True, False, True, False])
    s = torch.tensor([[3.0, 1.0, 2.0, 0.0],    # both positives above both negatives
                      [0.0, 3.0, 1.0, 2.0],    # both below
                      [3.0, 2.0, 0.0, 1.0]])   # pairs (3>2, 3>1, 0<2, 0<1): 2 of 4
    assert image_auroc(s, y).tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert image_auroc(s, torch.ones(4, dtype=torch.bool)).tolist() == [0.5, 0.5, 0.5]


def _world(n=400, seed=0):
    """``feats`` ``[n, 2, 2, 6]``: background cells; class 0's images hold pattern A in a random
    cell and, 80% of the time, the partner pattern B in another; 30% of the other images hold B
    alone. Labels ``[n, 2]``: class 0, and class 1 = "not class 0"."""
    g = torch.Generator().manual_seed(seed)
    A, B, bg = torch.eye(6)[0] * 3, torch.eye(6)[1] * 3, torch.eye(6)[5]
    feats = bg.repeat(n, 2, 2, 1) + 0.05 * torch.randn(n, 2, 2, 6, generator=g)
    y = torch.zeros(n, 2)
    where = {}
    for i in range(n):
        cells = torch.randperm(4, generator=g).tolist()
        pos = i % 2 == 0
        y[i, 0], y[i, 1] = float(pos), float(not pos)
        if pos:
            feats[i, cells[0] // 2, cells[0] % 2] += A
            where[i] = cells[0]
        if (pos and torch.rand(1, generator=g) < 0.8) or (not pos and torch.rand(1, generator=g) < 0.3):
            feats[i, cells[1] // 2, cells[1] % 2] += B
    return feats, y, where, A, B, bg


def test_discriminative_push_leaves_the_partner_for_the_own_pattern():
    feats, y, where, A, B, bg = _world()
    head = ProtoHead(6, 2, per_class=1, scales=(1,), dim=8, seed=3)
    with torch.no_grad():
        learned = head.embed((B + bg)[None, None, None])[0, 0, 0]  # a prototype that learned the partner
        head.prototypes.data[0] = learned
    near = ProtoHead(6, 2, per_class=1, scales=(1,), dim=8, seed=3)
    near.load_state_dict(head.state_dict())
    rn = push(near, feats, y)
    rd = discriminative_push(head, feats, y, n_eval=400, n_cand_images=64, progress=False)
    i_n, (r, c) = int(rn["image"][0]), rn["cell"][0].tolist()
    assert where[i_n] != r * 2 + c, "nearest push should land on the partner, not the own pattern"
    i_d, (r, c) = int(rd["image"][0]), rd["cell"][0].tolist()
    assert y[i_d, 0] == 1 and where[i_d] == r * 2 + c, "discriminative push should land on pattern A"
    assert float(rd["auroc"][0]) > 0.99 and float(rd["auroc"][0]) > float(rd["auroc_nearest"][0]) + 0.1
    with torch.no_grad():  # on the stored training window: the push embeds in chunks, this one image alone, and
        # the BLAS kernel (so the last bit) can differ with the batch; any other window is far off
        one = head.embed(feats[i_d:i_d + 1])[0, r, c]
        assert torch.allclose(head.prototypes[0], one, rtol=0, atol=1e-6)
        others = head.embed(feats[i_d:i_d + 1])[0].reshape(-1, one.shape[0])
        assert sorted(float((o - head.prototypes[0]).abs().max()) for o in others)[1] > 1e-3


def test_both_pushes_refuse_a_class_without_images():
    feats, y, *_ = _world(n=40)
    y[:, 1] = 0  # no image of class 1
    for fn in (push, lambda h, f, lab: discriminative_push(h, f, lab, progress=False)):
        head = ProtoHead(6, 2, per_class=1, scales=(1,), dim=8, seed=3)
        before = head.prototypes.detach().clone()
        with pytest.raises(ValueError, match=r"prototype\(s\) \[1\]"):
            fn(head, feats, y)
        assert torch.equal(head.prototypes, before)  # nothing half-pushed
