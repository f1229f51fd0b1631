"""`vlinterp data export`: a shapes split written as COCO / POPE / JSON lines / HF reads back as the
native items (same pixels, masks, questions and answers), and the command's bad arguments."""
import json
import re

import numpy as np
import pytest

from cli_util import assert_bad_input, run_cli
from vlinterp.eval.datasets import open_dataset
from vlinterp.eval.datasets.base import jsonable
from vlinterp.eval.datasets.export import export_shapes

SPLIT, N, SEED = "test", 6, 2


@pytest.fixture(scope="module")
def native():
    return open_dataset(f"shapes:{SPLIT}:{N}:{SEED}")


def same(a, b, meta=True, ids=True):
    """Items ``a`` (native) and ``b`` (read back) hold the same data."""
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)), (a.id, b.id)
    assert (a.prompt, a.answer, a.kind) == (b.prompt, b.answer, b.kind), (a.id, b.id)
    assert [o.name for o in a.objects] == [o.name for o in b.objects]
    for o, p in zip(a.objects, b.objects):
        assert tuple(o.box) == tuple(p.box) and p.mask is not None and np.array_equal(o.mask, p.mask), (a.id, o.name)
        assert {k: v for k, v in jsonable(p.attrs).items() if k in o.attrs} == jsonable(o.attrs)
    if meta:
        assert b.meta == jsonable(a.meta)
    if ids:
        assert a.id == b.id


@pytest.mark.parametrize("fmt", ["jsonl", "hf"])
def test_jsonl_and_hf_round_trip_every_kind(fmt, native, tmp_path):
    res = export_shapes(str(tmp_path / "out"), fmt, SPLIT, N, SEED)
    assert len(res["read"]) == 1
    back = open_dataset(res["read"][0])
    for kind in native.available_kinds():
        a, b = native.items(kind), back.items(kind)
        assert len(a) == len(b) > 0, kind
        for x, y in zip(a, b):
            same(x, y)
        # a seeded sample picks the same items from both
        assert [x.id for x in native.items(kind, n=3, seed=7)] == [y.id for y in back.items(kind, n=3, seed=7)]
    assert len(back.items("all")) == sum(len(native.items(k)) for k in native.available_kinds())


@pytest.mark.parametrize("masks", ["rle", "polygon"])
def test_coco_round_trip_scenes_and_captions(masks, native, tmp_path):
    res = export_shapes(str(tmp_path / "out"), "coco", SPLIT, N, SEED, masks=masks)
    inst = json.loads(open(res["files"][0]).read())
    seg = inst["annotations"][0]["segmentation"]
    assert isinstance(seg, dict) if masks == "rle" else isinstance(seg, list)
    assert {c["name"] for c in inst["categories"]} >= {"red circle", "orange cross"} and len(inst["categories"]) == 24
    back = open_dataset(res["read"][0])
    for kind in ("scene", "caption"):
        a, b = native.items(kind), back.items(kind)
        assert len(a) == len(b) == N
        for x, y in zip(a, b):
            same(x, y, meta=False, ids=False)
    assert back.items("caption")[0].meta["references"] == [native.items("caption")[0].answer]
    assert back.items("scene")[0].objects[0].attrs["supercategory"] == native.items("scene")[0].objects[0].attrs["shape"]


def test_pope_round_trip_three_files(native, tmp_path):
    res = export_shapes(str(tmp_path / "out"), "pope", SPLIT, N, SEED)
    assert [re.search(r"_pope_(\w+)\.json", r).group(1) for r in res["read"]] == ["random", "popular", "adversarial"]
    line = json.loads(open(res["files"][0]).readline())
    assert set(line) == {"question_id", "image", "image_id", "text", "label"}
    for spec in res["read"]:
        neg = re.search(r"_pope_(\w+)\.json", spec).group(1)
        a, b = native.items(f"pope-{neg}"), open_dataset(spec).items(f"pope-{neg}")
        assert len(a) == len(b) == N
        for x, y in zip(a, b):
            same(x, y, meta=False, ids=False)
            assert (y.meta["neg_type"], y.meta["candidates"], y.meta["obj_index"]) == (neg, ("yes", "no"), x.meta["obj_index"])
            assert y.meta["target"] == " ".join(x.meta["target"])


def test_cli_export_prints_the_spec_that_reads_it_back(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["data", "export", "shapes", "--format", "jsonl", "--out", "o", "--n", "3", "--seed", "5"], capsys)
    assert code == 0, err
    spec = re.search(r"--dataset (\S+)", out).group(1)
    a, b = open_dataset("shapes:test:3:5").items("pope-adversarial"), open_dataset(spec).items("pope-adversarial")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        same(x, y)
    # again into the same folder: an earlier vlinterp output is replaced
    assert run_cli(["data", "export", "shapes", "--format", "jsonl", "--out", "o", "--n", "2"], capsys)[0] == 0
    assert len(open_dataset(spec).items("scene")) == 2


@pytest.mark.parametrize("argv, match", [
    (["--format", "xml"], r"invalid choice: 'xml'"),
    ([], r"--format"),
    (["--format", "coco", "--n", "0"], r"--n: .*positive integer"),
    (["--format", "coco", "--seed", "x"], r"--seed: .*not an integer"),
    (["--format", "coco", "--split", "a:b"], r"--split: .*not a split name"),
    (["--format", "jsonl", "--masks", "polygon"], r"--masks polygon applies to --format coco or pope"),
    (["--format", "coco", "--out", "user.txt"], r"exists and is not a directory"),
    (["--format", "coco", "--out", "mine"], r"not empty and holds no vlinterp output"),
])
def test_data_export_bad_arguments(argv, match, tmp_path, capsys, monkeypatch):
    (tmp_path / "user.txt").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    if "--out" not in argv:
        argv = [*argv, "--out", "new"]
    assert_bad_input(["data", "export", "shapes", *argv], tmp_path, capsys, monkeypatch, match=match)


def test_data_export_unknown_source(tmp_path, capsys, monkeypatch):
    assert_bad_input(["data", "export", "coco", "--format", "jsonl", "--out", "o"], tmp_path, capsys, monkeypatch,
                     match=r"invalid choice: 'coco'")
