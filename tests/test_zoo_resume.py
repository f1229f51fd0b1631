"""Mid-stage training checkpoints (vlinterp.zoo.resume): a loop stopped after a checkpoint and resumed
ends with the same weights as one that never stopped; another key starts afresh; only the last
checkpoint's files are kept, and clear() removes them."""
import os

import numpy as np
import pytest
import torch

from vlinterp.zoo.recipe_llava import _train_lm
from vlinterp.zoo.resume import LoopCheckpoint

STEPS, EVERY = 7, 3


class _Batches:
    """What _train_lm draws from: ``rng`` and ``(B) -> ids, mask, labels, image idx, rendered``."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, B):
        ids = torch.as_tensor(self.rng.integers(0, 8, size=(B, 5)))
        return ids, torch.ones_like(ids), ids.roll(1, dims=1), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool)


class _Stop(Exception):
    pass


def _model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Embedding(8, 16), torch.nn.Linear(16, 8))
    m[0].weight.requires_grad_(False)     # a frozen part: not in the checkpoint
    return m


def _loss(stop_at=None):
    calls = [0]

    def fn(model, ids, mask, labels, feats):
        calls[0] += 1
        if stop_at is not None and calls[0] > stop_at:
            raise _Stop
        logits = model(ids)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 8), labels.reshape(-1)), 0.0
    return fn


def _files(d):
    """The checkpoint's files (the folder's vlinterp manifest aside)."""
    return sorted(f for f in os.listdir(d) if not f.startswith(".vlinterp"))


def _run(model, batches, ckpt=None, stop_at=None):
    params = [p for p in model.parameters() if p.requires_grad]
    _train_lm(model, batches, torch.device("cpu"), STEPS, 4, float("inf"), 1e-2, None, params, lambda m: None, "t",
              loss_fn=_loss(stop_at), ckpt=ckpt)


def test_stopped_loop_resumes_to_the_same_weights(tmp_path):
    whole = _model()
    _run(whole, _Batches(1))

    key = {"seed": 1}
    stopped = _model()
    with pytest.raises(_Stop):
        _run(stopped, _Batches(1), LoopCheckpoint(str(tmp_path), "lm", key, every=EVERY), stop_at=5)
    files = _files(tmp_path)
    assert files == ["lm-3.optim.pt", "lm-3.safetensors", "lm.json"], files   # step 6 never came; step 3's kept

    resumed = _model()
    ck = LoopCheckpoint(str(tmp_path), "lm", key, every=EVERY)
    _run(resumed, _Batches(1), ck)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert _files(tmp_path) == ["lm-6.optim.pt", "lm-6.safetensors", "lm.json"]
    # without the checkpoint the stopped model's weights differ from the finished ones (the test can fail)
    assert not torch.allclose(stopped[1].weight, whole[1].weight, atol=1e-4)

    # another key: the loop starts afresh (the same as a fresh run, whatever is on disk)
    other = _model()
    _run(other, _Batches(2), LoopCheckpoint(str(tmp_path), "lm", {"seed": 2}, every=100))
    fresh = _model()
    _run(fresh, _Batches(2))
    assert torch.allclose(other[1].weight, fresh[1].weight, atol=1e-6)

    ck.clear()
    assert _files(tmp_path) == []


def test_checkpoint_of_other_parameters_is_refused(tmp_path):
    m = _model()
    ck = LoopCheckpoint(str(tmp_path), "lm", {"k": 1}, every=1)
    with pytest.raises(_Stop):
        _run(m, _Batches(1), ck, stop_at=1)
    m2 = _model()
    m2[0].weight.requires_grad_(True)      # now the embedding trains too: the checkpoint lacks it
    with pytest.raises(ValueError, match="trainable"):
        _run(m2, _Batches(1), ck)


def test_clear_leaves_a_file_someone_else_changed(tmp_path):
    """clear() removes only what vlinterp wrote: a checkpoint file replaced by hand stays."""
    ck = LoopCheckpoint(str(tmp_path), "lm", {"k": 1}, every=1)
    with pytest.raises(_Stop):
        _run(_model(), _Batches(1), ck, stop_at=1)
    (tmp_path / "lm-1.optim.pt").write_bytes(b"mine")
    ck.clear()
    assert _files(tmp_path) == ["lm-1.optim.pt"] and (tmp_path / "lm-1.optim.pt").read_bytes() == b"mine"
