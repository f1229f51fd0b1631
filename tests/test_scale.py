"""Scale-out on a local Ray cluster with 2 workers: results equal the single-process run; a failing
worker's error names the items."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.exclusive  # Ray workers need both cores (tests/conftest.py)

from vlinterp.cli import main  # noqa: E402
from vlinterp.scale import WorkerError, WorkerPool  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the module: the pools and Ray Train find it running and
    neither start nor stop their own (each start and shutdown costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _one_and_two(tmp_path, args):
    """The command's JSON run in this process and on 2 Ray workers."""
    one, two = tmp_path / "1.json", tmp_path / "2.json"
    assert main(args + ["--json", str(one)]) == 0
    assert main(args + ["--workers", "2", "--json", str(two)]) == 0
    return json.loads(one.read_text()), json.loads(two.read_text())


@pytest.mark.slow
def test_audit_with_two_workers_equals_one(tmp_path):
    args = ["audit", "--n", "16", "--seed", "3", "--no-factors", "--embedder", "none", "--plant-noise", "3"]
    a, b = _one_and_two(tmp_path, args)
    assert b["workers"] == 2
    for k in ("per_item", "accuracy", "render_equivalence", "pair_agreement", "ocr", "inside", "planted"):
        assert a[k] == b[k], k


@pytest.mark.slow
def test_prune_bench_with_two_workers_equals_one(tmp_path):
    args = ["prune", "bench", "--n", "16", "--keep", "0.25", "--methods", "random,fastv,hybrid", "--repeats", "1", "--horizon", "3",
            "--batch", "8"]
    a, b = _one_and_two(tmp_path, args)
    assert a["unpruned"]["accuracy"] == b["unpruned"]["accuracy"]
    assert [r["accuracy"] for r in a["rows"]] == [r["accuracy"] for r in b["rows"]]


def _fails_on_seven(adapter, items, start):
    if 7 in items:
        raise ValueError("bad item")
    return [x * 2 for x in items]


@pytest.mark.slow
def test_worker_error_names_the_items():
    import sys

    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ship this test module's function by value
    items = list(range(12))
    with WorkerPool("tiny:vit", workers=2) as pool:
        assert pool.map(_fails_on_seven, [x for x in items if x != 7], shard=3, progress=False) == [2 * x for x in items if x != 7]
        with pytest.raises(WorkerError, match="item-6"):
            pool.map(_fails_on_seven, items, shard=3, ids=[f"item-{i}" for i in items], progress=False)
    with WorkerPool("tiny:vit", workers=1) as pool:  # in-process path, same results
        assert pool.map(_fails_on_seven, [1, 2, 3], shard=2, progress=False) == [2, 4, 6]


def _dying_worker(adapter, ks, start, **kw):
    """Like the harvest worker, but the process dies on shard 2 while writing its temp file."""
    import os

    from vlinterp.eval import sae_parallel

    if 2 in ks:
        with open(os.path.join(kw["out_dir"], ".tmp-shard_00002.safetensors-dead"), "wb") as f:
            f.write(b"half-written")
        os._exit(1)
    return [sae_parallel.harvest_shard(adapter, k=k, **kw) for k in ks]


@pytest.mark.slow
def test_harvest_with_a_killed_worker_resumes_to_the_uninterrupted_rows(tmp_path, monkeypatch):
    import sys

    import ray
    import torch

    import vlinterp as vi
    from vlinterp.eval import sae_parallel as store_parallel
    from vlinterp.eval.sae_data import items_from_spec
    from vlinterp.sae.store import ActivationStore

    spec, site = "shapes:sae-train:24:0:caption", "blocks.1.resid"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting: same kernels, same numbers
    try:
        ref = ActivationStore.harvest(vi.load("shapes-llava"), site, items_from_spec(spec), out_dir=str(tmp_path / "ref"), batch_size=4,
                                      shard_samples=6, tokens="content", dataset=spec, progress=False)
    finally:
        torch.set_num_threads(before)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out = str(tmp_path / "par")
    monkeypatch.setattr(store_parallel, "_worker", _dying_worker)
    with WorkerPool("shapes-llava", workers=2) as pool:
        with pytest.raises(WorkerError, match="shard 2"):
            store_parallel.harvest_parallel(pool, "shapes-llava", site, spec, out, batch_size=4, shard_samples=6, tokens="content", progress=False)
    monkeypatch.undo()
    listed = json.loads((tmp_path / "par" / "manifest.json").read_text())["shards"]
    assert "shard_00002.safetensors" not in {s["file"] for s in listed}
    assert ".tmp-shard_00002.safetensors-dead" in os.listdir(out)
    with WorkerPool("shapes-llava", workers=2) as pool:
        st = store_parallel.harvest_parallel(pool, "shapes-llava", site, spec, out, batch_size=4, shard_samples=6, tokens="content", progress=False)
    assert st.meta["complete"] and [s["samples"] for s in st.meta["shards"]] == [[0, 5], [6, 11], [12, 17], [18, 23]]
    for k in ref.rows:
        assert torch.equal(ref.rows[k], st.rows[k]), k


@pytest.mark.slow
def test_bench_saliency_with_two_workers_equals_one(tmp_path):
    args = ["bench", "saliency", "--model", "shapes-vit", "--methods", "relevancy,attention", "--n", "6", "--steps", "4"]
    a, b = _one_and_two(tmp_path, args)
    assert a["items"] == b["items"] > 6
    for name in ("relevancy", "attention", "random", "centre"):
        ra, rb = dict(a["rows"][name]), dict(b["rows"][name])
        ra.pop("seconds"), rb.pop("seconds")  # wall time is not a result
        # gradients summed by 1 thread (worker) or 2 (this process) differ in the last bits
        assert ra == pytest.approx(rb, rel=1e-6, abs=1e-9), name


@pytest.mark.slow
def test_steer_eval_with_two_workers_equals_one(tmp_path):
    args = ["steer", "eval", "--methods", "none,vcd", "--n", "16", "--captions", "4", "--seed", "4"]
    a, b = _one_and_two(tmp_path, args)
    for name in ("none", "vcd"):
        for k in ("fit_seconds", "eval_seconds"):
            a[name].pop(k), b[name].pop(k)
        assert a[name] == b[name], name


@pytest.mark.slow
def test_trace_over_a_dataset_with_two_workers_equals_one(tmp_path):
    args = ["trace", "--dataset", "shapes", "--n", "5", "--components", "resid", "--samples", "2", "--noise-seed", "4"]
    a, b = _one_and_two(tmp_path, args)
    assert b["meta"]["workers"] == 2 and a["meta"]["n"] == b["meta"]["n"] == 5
    # same items and seeds; the driver's torch threads differ from the workers' (1), so floats agree
    # to rounding, not bit for bit
    for x, y in zip(a["items"], b["items"]):
        assert {k: v for k, v in x.items() if k not in ("p_patch", "rr", "p_clean", "p_corrupt")} == \
               {k: v for k, v in y.items() if k not in ("p_patch", "rr", "p_clean", "p_corrupt")}
        assert np.allclose(x["p_patch"], y["p_patch"], rtol=1e-5, atol=1e-7) and x["p_clean"] == pytest.approx(y["p_clean"], rel=1e-6)
    assert np.allclose(a["rr_of_means"], b["rr_of_means"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sae_train_data_parallel_equals_one_process_and_shares_its_checkpoints(tmp_path):
    """Single-process run killed after step 17 (checkpoint 10 on disk); `sae train --workers 2
    --resume` continues it on Ray Train and ends where the uninterrupted single-process run ends.
    Without the gradient all-reduce each replica would learn from half the batch and differ."""
    import torch

    import vlinterp
    from vlinterp.core.errors import NaNError
    from vlinterp.eval.sae_data import shapes_items
    from vlinterp.sae import ActivationStore
    from vlinterp.sae.attach import load_sae
    from vlinterp.sae.train import _checkpoints, train_sae
    from vlinterp.scale.sae_train import train_data_parallel

    m = vlinterp.load("tiny:llava")
    store_dir = str(tmp_path / "store")
    st = ActivationStore.harvest(m, "blocks.1.resid", shapes_items("sae-test", 20, 0, "mixed"), out_dir=store_dir, batch_size=8,
                                 progress=False, tokens="content")
    kw = dict(d_sae=48, k=4, steps=30, batch_size=32, checkpoint_every=10, progress=False)
    full = train_sae(st, checkpoint_dir=str(tmp_path / "full"), **kw)
    ck = str(tmp_path / "ck")
    train_sae(st, checkpoint_dir=ck, stop_after=17, **kw)
    assert [s for s, _ in _checkpoints(ck)] == [10]
    assert main(["sae", "train", "--store", store_dir, "--out", str(tmp_path / "sae"), "--d-sae", "48", "--k", "4", "--steps", "30",
                 "--batch-size", "32", "--checkpoint-every", "10", "--checkpoint-dir", ck, "--resume", "--workers", "2"]) == 0
    assert [s for s, _ in _checkpoints(ck)] == [10, 20, 30]
    dp = load_sae(str(tmp_path / "sae"))
    a, b = full.state_dict(), dp.state_dict()
    assert {"W_enc", "W_dec"} <= set(a) and set(a) == set(b)
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-7), (name, float((a[name] - b[name]).abs().max()))

    bad = ActivationStore({**st.rows, "acts": st.acts.clone().index_fill_(0, torch.tensor([3]), float("nan"))}, dict(st.meta))
    with pytest.raises(NaNError, match="non-finite activations in store row 3"):  # refused before Ray Train starts
        train_data_parallel(bad, workers=2, **kw)
