"""Parity: a shapes split exported as COCO / POPE / JSON lines / HF (``vlinterp data export``) gives
exactly the native numbers through every dataset-level command: the saliency table, pruning
accuracy and retention, trace RR, the audit table, harvested SAE rows, prototype training and
evaluation. Each format is compared with the native spec holding the same items: JSON lines and HF
with the command's own kinds (``shapes:test:N:S``), a POPE file with ``shapes:test:N:S:pope-<type>``,
COCO scenes with ``shapes:test:N:S:scene`` (commands that ask questions derive them from scenes).

Bad records through each command: one line naming the file and the record, exit 2, no model
loaded, nothing written."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cli_util import assert_bad_input, run_cli
from vlinterp.eval.datasets.export import export_shapes

SPLIT, N, SEED = "test", 4, 2
NATIVE = f"shapes:{SPLIT}:{N}:{SEED}"


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    """``{format: read-back spec}``: the split exported once per format."""
    root = tmp_path_factory.mktemp("exported")
    out = {}
    for fmt in ("coco", "pope", "jsonl", "hf"):
        res = export_shapes(str(root / fmt), fmt, SPLIT, N, SEED)
        out[fmt] = res["read"]
    return {"coco": out["coco"][0], "jsonl": out["jsonl"][0], "hf": out["hf"][0],
            **{f"pope-{neg}": s for neg, s in zip(("random", "popular", "adversarial"), out["pope"])}}


def pairs(specs, own_kind: str = "", pope: str = "random", coco: str = "scene", coco_option: str = ""):
    """``[(label, native spec, exported spec)]`` for one command (see the module doc)."""
    native = NATIVE + (f":{own_kind}" if own_kind else "")
    return [("jsonl", native, specs["jsonl"]), ("hf", native, specs["hf"]),
            (f"pope-{pope}", f"{NATIVE}:pope-{pope}", specs[f"pope-{pope}"]),
            ("coco", f"{NATIVE}:{coco}" if coco else native, specs["coco"] + coco_option)]


_RUNS: dict[tuple, dict] = {}  # a native spec shared by two pairs (JSON lines, HF) runs once


def _json(argv, tmp_path, capsys, name):
    if tuple(argv) not in _RUNS:
        js = tmp_path / f"{name}.json"
        code, out, err = run_cli([*argv, "--json", str(js)], capsys)
        assert code == 0, err
        _RUNS[tuple(argv)] = json.loads(js.read_text())
    return _RUNS[tuple(argv)]


def _drop(x, keys=("dataset", "kinds", "id", "seconds", "latency_s", "latency_ratio", "workers", "fit_and_eval_seconds")):
    if isinstance(x, dict):
        return {k: _drop(v, keys) for k, v in x.items() if k not in keys}
    if isinstance(x, list):
        return [_drop(v, keys) for v in x]
    return x


def _same(label, a, b):
    assert a == b, f"{label}: exported numbers differ from native"


# ------------------------------------------------------------------------------------- parity
@pytest.mark.slow
def test_bench_saliency_parity(specs, tmp_path, capsys):
    cmd = ["bench", "saliency", "--model", "tiny:llava", "--methods", "attention,random", "--steps", "2"]
    for label, native, exported in pairs(specs):
        a = _json([*cmd, "--dataset", native], tmp_path, capsys, "a")
        b = _json([*cmd, "--dataset", exported], tmp_path, capsys, "b")
        assert a["items"] > 0 and set(a["rows"]) == {"attention", "random", "centre"}
        _same(label, _drop(a), _drop(b))


@pytest.mark.slow
def test_prune_bench_parity(specs, tmp_path, capsys):
    cmd = ["prune", "bench", "--model", "tiny:llava", "--keep", "0.5", "--methods", "random,fastv[layer=1]", "--repeats", "1",
           "--horizon", "1", "--batch", "8"]
    for label, native, exported in pairs(specs, pope="adversarial", coco_option=":kind=scene"):
        a = _json([*cmd, "--dataset", native], tmp_path, capsys, "a")
        b = _json([*cmd, "--dataset", exported], tmp_path, capsys, "b")
        assert a["n_items"] > 0 and len(a["rows"]) == 2
        _same(label, _drop(a), _drop(b))
    # the native default reads the POPE-adversarial and colour / count questions of every scene
    assert set(a["unpruned"]["accuracy"]) == {"presence", "colour", "count", "all"}


@pytest.mark.slow
def test_trace_parity(specs, tmp_path, capsys):
    cmd = ["trace", "--model", "tiny:llava", "--components", "resid", "--samples", "1"]
    for label, native, exported in pairs(specs):
        a = _json([*cmd, "--dataset", native], tmp_path, capsys, "a")
        b = _json([*cmd, "--dataset", exported], tmp_path, capsys, "b")
        assert a["meta"]["n"] > 0 and any(e["object_mask_source"] == "box" for e in a["items"])
        _same(label, _drop(a), _drop(b))


@pytest.mark.slow
def test_audit_parity(specs, tmp_path, capsys):
    cmd = ["audit", "--model", "tiny:llava", "--no-factors", "--embedder", "none"]
    for label, native, exported in pairs(specs):
        a = _json([*cmd, "--dataset", native], tmp_path, capsys, "a")
        b = _json([*cmd, "--dataset", exported], tmp_path, capsys, "b")
        assert a["n_items"] > 0 and "mixed" in a["accuracy"]
        _same(label, _drop(a), _drop(b))


@pytest.mark.slow
def test_sae_harvest_parity(specs, tmp_path, capsys):
    from vlinterp.sae.store import ActivationStore

    cmd = ["sae", "harvest", "--model", "tiny:llava", "--site", "blocks.1.resid"]
    cases = [("coco", NATIVE, specs["coco"]), ("jsonl", NATIVE, specs["jsonl"]), ("hf", NATIVE, specs["hf"]),
             ("pope-random", f"{NATIVE}:question", specs["pope-random"])]
    for k, (label, native, exported) in enumerate(cases):
        stores = []
        for side, spec in (("a", native), ("b", exported)):
            out = tmp_path / f"{side}{k}"
            code, _, err = run_cli([*cmd, "--dataset", spec, "--out", str(out)], capsys)
            assert code == 0, err
            stores.append(ActivationStore.open(str(out)))
        a, b = stores
        assert len(a) > 0 and a.meta["n_items"] == b.meta["n_items"]
        assert np.array_equal(a.acts.numpy(), b.acts.numpy()), label
        for key in a.rows:
            assert np.array_equal(np.asarray(a.rows[key]), np.asarray(b.rows[key])), (label, key)
    # the store records a spec that reads exactly its items again
    from vlinterp.eval.sae_data import items_from_spec

    assert len(items_from_spec(b.meta["dataset"])) == b.meta["n_items"]


@pytest.mark.slow
def test_protos_train_and_eval_parity(specs, tmp_path, capsys):
    from safetensors.numpy import load_file

    train = ["protos", "train", "--model", "tiny:vit", "--warm-steps", "3", "--last-steps", "2", "--min-weight", "-1", "--push", "nearest"]
    # training pushes every prototype onto an image of its class: 48 scenes (seed 0) hold all 24 pairs
    coco48 = export_shapes(str(tmp_path / "coco48"), "coco", SPLIT, 48, 0)["read"][0]
    dirs = {}
    for side, spec in (("native", f"shapes:{SPLIT}:48:0"), ("coco", coco48)):
        dirs[side] = tmp_path / f"p-{side}"
        code, _, err = run_cli([*train, "--dataset", spec, "--out", str(dirs[side])], capsys)
        assert code == 0, err
    a, b = (load_file(str(dirs[s] / "prototypes.safetensors")) for s in ("native", "coco"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    ca, cb = (json.loads((dirs[s] / "prototypes.json").read_text())["classes"] for s in ("native", "coco"))
    assert ca == cb and len(ca) == 24  # the 24 colour-shape pairs
    ev = ["protos", "eval", "--protos", str(dirs["native"])]
    for label, native, exported in pairs(specs, coco=""):
        x = _json([*ev, "--dataset", native], tmp_path, capsys, "a")
        y = _json([*ev, "--dataset", exported], tmp_path, capsys, "b")
        assert x["n_images"] > 0
        _same(label, _drop(x), _drop(y))


# ------------------------------------------------------------------------------------ bad data
def _bad_files(tmp_path):
    """A JSON-lines file whose line 2 has a bad object box, a COCO file with an unknown category, a
    POPE file with a bad label, next to a good image."""
    from PIL import Image

    Image.new("RGB", (32, 32), (40, 40, 40)).save(tmp_path / "im.png")
    good = {"image": "im.png", "prompt": "is there a red circle?", "answer": "yes", "candidates": ["yes", "no"],
            "objects": [{"name": "red circle", "box": [1, 1, 9, 9]}]}
    bad = dict(good, id="b2", objects=[{"name": "red circle", "box": [9, 9, 1]}])
    (tmp_path / "data.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    coco = {"images": [{"id": 1, "file_name": "im.png", "width": 32, "height": 32}], "categories": [{"id": 1, "name": "dog"}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4]}]}
    (tmp_path / "inst.json").write_text(json.dumps(coco))
    (tmp_path / "pope_random.json").write_text(json.dumps({"question_id": 0, "image": "im.png", "text": "Is there a dog?",
                                                           "label": "yes"}) + "\n" +
                                               json.dumps({"question_id": 1, "image": "im.png", "text": "Is there a cat?",
                                                           "label": "maybe"}) + "\n")


COMMANDS = {
    "bench": ["bench", "saliency", "--model", "tiny:llava", "--json", "o.json"],
    "prune": ["prune", "bench", "--model", "tiny:llava", "--json", "o.json"],
    "prune-info": ["prune", "info", "--model", "tiny:llava", "--json", "o.json"],
    "trace": ["trace", "--model", "tiny:llava", "--json", "o.json"],
    "audit": ["audit", "--model", "tiny:llava", "--json", "o.json", "--out", "rep"],
    "sae": ["sae", "harvest", "--model", "tiny:llava", "--site", "blocks.1.resid", "--out", "store"],
    "protos-train": ["protos", "train", "--model", "tiny:vit", "--out", "protos"],
}
BAD = [("jsonl:data.jsonl", r"data.jsonl:2 \(id b2\): bad object 0: box must be"),
       ("coco:inst.json", r"inst.json: annotation 7 \(image 1\): unknown category"),
       ("pope:pope_random.json", r"pope_random.json:2 \(question 1\): bad label")]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("spec,match", BAD, ids=["jsonl", "coco", "pope"])
def test_bad_records_are_one_line_before_any_model_loads(command, spec, match, tmp_path, capsys, monkeypatch):
    _bad_files(tmp_path)
    assert_bad_input([*COMMANDS[command], "--dataset", spec], tmp_path, capsys, monkeypatch, match=match)


def test_protos_eval_bad_record(tmp_path, capsys, monkeypatch):
    _bad_files(tmp_path)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "prototypes.json").write_text("{}")
    assert_bad_input(["protos", "eval", "--protos", "p", "--dataset", "jsonl:data.jsonl", "--json", "o.json"], tmp_path, capsys,
                     monkeypatch, match=BAD[0][1])


def test_a_question_without_answer_is_named(tmp_path, capsys, monkeypatch):
    """Records that read well but lack what a command needs: named, before the model loads."""
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "im.png")
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "im.png", "prompt": "is there a dog?"}) + "\n")
    assert_bad_input(["prune", "bench", "--model", "tiny:llava", "--dataset", "q.jsonl"], tmp_path, capsys, monkeypatch,
                     match=r"q.jsonl:1: a benchmark question needs a prompt and its answer")
    assert_bad_input(["audit", "--model", "tiny:llava", "--dataset", "q.jsonl"], tmp_path, capsys, monkeypatch,
                     match=r"q.jsonl:1: missing answer")
    (tmp_path / "t.jsonl").write_text(json.dumps({"image": "im.png"}) + "\n")
    assert_bad_input(["sae", "harvest", "--model", "tiny:llava", "--site", "blocks.1.resid", "--dataset", "t.jsonl", "--out", "s"],
                     tmp_path, capsys, monkeypatch, match=r"t.jsonl:1: no text")


def _reader_rows():
    """The readers' bad-data rows of ``tests/test_datasets.py`` (COCO missing key, annotation on a
    missing image, degenerate polygon, unknown category in a POPE prompt, POPE bad label, HF
    without an image column, ...), each paired with a command (cycling through them)."""
    from test_datasets import BAD as READER_BAD

    names = list(COMMANDS)
    return [(row, names[k % len(names)]) for k, row in enumerate(READER_BAD)]


@pytest.mark.parametrize("row,command", _reader_rows(), ids=[f"{r}-{c}" for r, c in _reader_rows()])
def test_reader_bad_data_through_a_command_is_exit_2(row, command, tmp_path, capsys, monkeypatch):
    from test_datasets import BAD as READER_BAD

    spec, patterns = READER_BAD[row](tmp_path)
    msg = assert_bad_input([*COMMANDS[command], "--dataset", spec], tmp_path, capsys, monkeypatch, match=patterns[0])
    for pat in patterns[1:]:
        assert __import__("re").search(pat, msg), f"{msg!r} lacks {pat!r}"
