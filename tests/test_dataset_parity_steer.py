"""Parity for ``steer eval --dataset``: a shapes split exported as POPE files and as COCO gives
exactly the native numbers (the POPE table per negative type, the CHAIR row) for ``--methods
none,vcd``, and the comparison can fail: a flipped POPE label or a dropped COCO annotation changes
them. POPE on the trained organism (its answers follow the image: yes rate strictly between 0 and
1), CHAIR on ``tiny:llava`` (random weights: its captions name shapes that are not there).

Grounding fitted on the split exported as COCO (``steer fit --method ground --dataset coco:...``)
saves exactly the native probe."""
from __future__ import annotations

import json
import shutil

import pytest

from cli_util import run_cli
from vlinterp.eval.datasets.export import export_shapes

SPLIT, N, SEED = "test", 6, 2
NATIVE = f"shapes:{SPLIT}:{N}:{SEED}"
NEG = ("random", "popular", "adversarial")
CMD = ["steer", "eval"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer-export")
    return {fmt: (root / fmt, export_shapes(str(root / fmt), fmt, SPLIT, N, SEED)["read"]) for fmt in ("pope", "coco")}


def _eval(argv, tmp_path, capsys, name, methods="none,vcd") -> dict:
    js = tmp_path / f"{name}.json"
    code, _, err = run_cli([*CMD, "--methods", methods, *argv, "--json", str(js)], capsys)
    assert code == 0, err
    return json.loads(js.read_text())


def _pope(table) -> dict:
    return {m: {g: row[g] for g in NEG} for m, row in table.items()}


def _dataset_args(specs) -> list[str]:
    return [x for s in specs for x in ("--dataset", s)]


@pytest.mark.slow  # 14-28 s on 2 shared cores: three runs of the organism
def test_pope_files_give_the_native_pope_table(exported, tmp_path, capsys):
    root, specs = exported["pope"]
    model = ["--model", "shapes-llava"]
    native = _eval([*model, "--dataset", NATIVE, "--captions", "0"], tmp_path, capsys, "native")
    files = _eval([*model, *_dataset_args(specs)], tmp_path, capsys, "files")
    assert set(files) == {"none", "vcd"} and set(files["none"]) == {*NEG, "fit_seconds", "eval_seconds"}
    assert all(0 < native[m][g]["yes_rate"] < 1 for m in native for g in NEG)  # answers follow the images
    assert _pope(files) == _pope(native)
    # a flipped label in one file changes that file's numbers (and only those)
    flipped = tmp_path / "flipped"
    shutil.copytree(root, flipped)
    path = flipped / f"{SPLIT}_pope_popular.json"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    lines[0]["label"] = "no" if lines[0]["label"] == "yes" else "yes"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    bad = _eval([*model, *_dataset_args(s.replace(str(root), str(flipped)) for s in specs)], tmp_path, capsys, "flipped", "none")
    assert bad["none"]["popular"] != native["none"]["popular"]
    assert bad["none"]["random"] == native["none"]["random"] and bad["none"]["adversarial"] == native["none"]["adversarial"]


@pytest.mark.slow  # 17-28 s on 2 shared cores: four runs
def test_coco_captions_give_the_native_chair_row(exported, tmp_path, capsys):
    root, (spec,) = exported["coco"]
    model = ["--model", "tiny:llava"]
    native = _eval([*model, "--dataset", NATIVE], tmp_path, capsys, "native")
    coco = _eval([*model, "--dataset", spec + ":kind=caption"], tmp_path, capsys, "coco")
    assert set(coco["none"]) == {"chair", "captions", "fit_seconds", "eval_seconds"} and len(coco["none"]["captions"]) == N
    for m in ("none", "vcd"):
        assert coco[m]["chair"] == native[m]["chair"], m
        assert [c["caption"] for c in coco[m]["captions"]] == [c["caption"] for c in native[m]["captions"]]
    assert any(0 < native[m]["chair"]["chair_i"] < 1 for m in native)  # hallucinated and true mentions both counted
    # its scenes captioned (truth from the instances alone): the same row
    scenes = _eval([*model, "--dataset", spec + ":kind=scene"], tmp_path, capsys, "scenes", "none")
    assert scenes["none"]["chair"] == native["none"]["chair"]
    # without the first image's annotations its truth is empty: the row changes
    dropped = tmp_path / "dropped"
    shutil.copytree(root, dropped)
    inst = next(dropped.rglob("instances_*.json"))
    doc = json.loads(inst.read_text())
    first = doc["images"][0]["id"]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != first]
    inst.write_text(json.dumps(doc))
    bad = _eval([*model, "--dataset", spec.replace(str(root), str(dropped)) + ":kind=scene"], tmp_path, capsys, "dropped", "none")
    assert bad["none"]["chair"] != native["none"]["chair"]


@pytest.mark.slow  # ~25 s on 2 shared cores: two fits through the CLI, two in Python
def test_ground_fits_on_coco_scenes_exactly_as_on_native_scenes(tmp_path, capsys, monkeypatch):
    """Grounding's probe labels from any dataset with masks or boxes: ``steer fit --method ground
    --dataset coco:...`` on the exported split (RLE masks, colour / shape attributes) saves exactly the
    native probe; without masks each object's box is filled (other labels, another probe); objects
    without colour / shape attributes give a probe over their names (the same probe here, where the
    names are the pairs'); strengths left to ``auto`` and a caption strength over names are one-line errors."""
    import torch

    import vlinterp as vi
    from cli_util import assert_bad_input
    from vlinterp.core.errors import ConfigError, DataError
    from vlinterp.data.shapes import PAIRS as names_of_pairs_list
    from vlinterp.eval import steer

    def names_of_pairs():
        return names_of_pairs_list
    from vlinterp.steering import load

    root = tmp_path / "coco"
    (spec,) = export_shapes(str(root), "coco", "steer-probe", 16, 0)["read"]
    method = "ground:alpha=3,beta=1,gate=1"
    fits = {}
    for side, data in (("native", "shapes:steer-probe:16:0"), ("coco", spec)):
        code, _, err = run_cli(["steer", "fit", "--method", method, "--dataset", data, "--model", "tiny:llava",
                                "--out", str(tmp_path / f"fit-{side}")], capsys)
        assert code == 0, err
        fits[side] = load(tmp_path / f"fit-{side}")
    a, b = fits["native"], fits["coco"]
    assert a.meta["patches"] == b.meta["patches"] > 0 and torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    inst = next(root.rglob("instances_*.json"))
    doc = json.loads(inst.read_text())
    for ann in doc["annotations"]:
        del ann["segmentation"]
    inst.write_text(json.dumps(doc))
    m = vi.load("tiny:llava")
    boxes = steer.fit("ground", m, spec, alpha=3.0, beta=1.0, gate=1.0)
    assert boxes.W.shape == a.W.shape and not torch.equal(boxes.W, a.W)  # box-filled masks: other patch labels
    for ann in doc["annotations"]:
        ann["attributes"] = {}
    inst.write_text(json.dumps(doc))
    # no colour / shape attributes (COCO categories): the probe reads the object names, in category-id
    # order, here the 24 pairs' names colour-major: the same classes, labels and probe as the pairs fit
    names = steer.fit("ground", m, spec, alpha=3.0)
    assert names.config.objects == tuple(f"{c} {s}" for c, s in names_of_pairs()) and names.config.beta == 0.0
    assert torch.equal(names.W, boxes.W) and torch.equal(names.b, boxes.b)
    with pytest.raises(ConfigError, match="beta must be 0"):
        steer.fit("ground", m, spec, alpha=3.0, beta=1.0)
    doc["annotations"][0]["category_id"] = 99  # an annotation of no category: named in one line
    inst.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="category"):
        steer.fit("ground", m, spec, alpha=3.0)
    doc["annotations"][0]["category_id"] = 1
    inst.write_text(json.dumps(doc))
    code, _, err = run_cli(["steer", "fit", "--method", "ground:alpha=3", "--dataset", spec, "--model", "tiny:llava",
                            "--out", str(tmp_path / "fit-names")], capsys)
    assert code == 0, err
    saved = load(tmp_path / "fit-names")
    assert saved.config.objects == names.config.objects and saved.W.shape == names.W.shape  # (the CLI subsamples: its own order)
    assert saved.meta["patches"] == names.meta["patches"] and saved.config.beta == 0.0
    monkeypatch.chdir(tmp_path)
    assert_bad_input(["steer", "fit", "--method", "ground", "--dataset", spec, "--model", "tiny:llava", "--out", "f"], tmp_path,
                     capsys, monkeypatch, match=r"give its strengths \(alpha=\.\.\., e\.g\. ground:alpha=3\)")
    assert_bad_input(["steer", "fit", "--method", "ground:alpha=3,beta=1", "--dataset", spec, "--model", "tiny:llava", "--out", "f"],
                     tmp_path, capsys, monkeypatch, match=r"beta must be 0")
