"""Bad input to `prune`, `trace`, `sae`, `protos`, `audit` and `zoo`: one row each. Every row exits 2
with one line naming the problem, no traceback, nothing written or deleted, and no model loaded
(tests/cli_util.py). Plus: every option has help text, usage lines show metavars (never internal
names), and output directories keep the user's files."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from cli_util import assert_bad_input, run_cli


def _setup(tmp_path):
    """Files the rows point at: an image, a user's directory and files, a store and SAE stand-in,
    JSON-lines files good and bad."""
    Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype("uint8")).save(tmp_path / "img.png")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("my work")
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "mine.png").write_bytes(b"my picture")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "manifest.json").write_text("{}")
    (tmp_path / "saedir").mkdir()
    (tmp_path / "saedir" / "cfg.json").write_text("{}")
    (tmp_path / "protos").mkdir()
    (tmp_path / "protos" / "prototypes.json").write_text("{}")
    (tmp_path / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "img.png", "prompt": "is there a red circle?"}) + "\n{not json\n")
    (tmp_path / "audit_bad.jsonl").write_text(json.dumps({"id": "a", "context": "c", "question": "q", "answer": "yes"}) + "\n"
                                              + json.dumps({"id": "b", "context": "c", "question": "q"}) + "\n")


IMG = ["img.png", "--prompt", "is there a red circle?", "--json", "rr.json"]

ROWS = [
    # zoo
    (["zoo", "eval", "shapes-vit", "--n", "0"], r"--n: 0 must be a positive integer"),
    (["zoo", "eval", "shapes-vit", "--n", "-5"], r"--n: -5 must be a positive integer"),
    (["zoo", "eval", "shapes-vt"], r"unknown organism 'shapes-vt'; did you mean shapes-vit"),
    (["zoo", "eval", "shapes-vit", "--json", "dir.json"], r"--json:.*is a directory"),
    (["zoo", "train", "shapes-vit", "--out", "afile"], r"--out:.*not a directory"),
    (["zoo", "train", "shapes-vit", "--out", "mine"], r"--out:.*not empty and holds no vlinterp output"),
    (["zoo", "train", "shapes-vit", "--out", "new", "--steps", "0"], r"--steps: 0 must be a positive integer"),
    (["zoo"], r"required: \{list,eval,train\}"),
    # prune
    (["prune", "bench", "--n", "0"], r"--n: 0 must be a positive integer"),
    (["prune", "info", "--n", "-5"], r"--n: -5 must be a positive integer"),
    (["prune", "bench", "--keep", "abc"], r"--keep: 'abc' is not a number"),
    (["prune", "bench", "--keep", "0.25,1.5"], r"--keep: 1.5 is not a ratio in \[0, 1\]"),
    (["prune", "bench", "--methods", "random,fastb"], r"unknown pruning method 'fastb'; did you mean fastv"),
    (["prune", "bench", "--methods", "visionzip[nosuch=1]"], r"unknown option\(s\) nosuch"),
    (["prune", "bench", "--methods", "fastv[layer=0]"], r"layer must be >= 1"),
    (["prune", "bench", "--plot", "mine.png"], r"--plot:.*not written by vlinterp"),
    (["prune", "bench", "--plot", "out.txt"], r"--plot:.*should end in .png"),
    (["prune", "bench", "--json", "dir.json"], r"--json:.*is a directory"),
    (["prune", "bench", "--out", "afile"], r"--out:.*not a directory"),
    (["prune", "info", "--out", "mine"], r"--out:.*not empty"),
    (["prune", "bench", "--out", "o", "--plot", "p.png"], r"--out DIR, or --json/--plot paths, not both"),
    (["prune", "bench", "--batch", "0"], r"--batch: 0 must be a positive integer"),
    (["prune"], r"required: \{bench,info\}"),
    (["prune", "bench", "--dataset", "bad.jsonl"], r"bad.jsonl:2: not JSON"),
    (["prune", "info", "--dataset", "shapes:val:0"], r"--dataset: shapes: N must be a positive integer"),
    (["prune", "bench", "--dataset", "pope:missing.json"], r"--dataset: POPE file 'missing.json' does not exist"),
    # bench saliency
    (["bench", "saliency", "--model", "shapes-llava", "--dataset", "coco:missing.json"], r"COCO annotations 'missing.json' does not exist"),
    (["bench", "saliency", "--model", "shapes-llava", "--dataset", "hf:mine"], r"mine.*(not a Hugging Face dataset|cannot be read)"),
    # protos
    (["protos", "train", "--n", "0", "--out", "p"], r"--n: 0 must be a positive integer"),
    (["protos", "eval", "--protos", "protos", "--n", "-5"], r"--n: -5 must be a positive integer"),
    (["protos", "train", "--out", "mine"], r"--out:.*not empty and holds no vlinterp output"),
    (["protos", "train", "--out", "p", "--push", "nearst"], r"unknown prototype push 'nearst'; did you mean nearest"),
    (["protos", "train", "--out", "p", "--scales", "0,2"], r"scales are grid sizes >= 1"),
    (["protos", "eval", "--protos", "missing"], r"--protos: 'missing' does not exist"),
    (["protos", "eval", "--protos", "mine"], r"--protos: 'mine' holds no prototypes.json"),
    (["protos", "explain", "img.png", "--protos", "missing", "--out", "e"], r"--protos: 'missing' does not exist"),
    (["protos", "eval", "--protos", "protos", "--json", "dir.json"], r"--json:.*is a directory"),
    (["protos", "eval", "--protos", "protos", "--noise", "-1"], r"--noise: -1 must be 0 or more"),
    (["protos", "train", "--out", "p", "--dataset", "mine"], r"mine: no images"),
    (["protos", "eval", "--protos", "protos", "--dataset", "binary.jsonl"], r"'binary.jsonl' is not a text"),
    (["protos", "train", "--out", "p", "--dataset", "folder:missing"], r"image folder 'missing' does not exist"),
    # trace
    (IMG + ["--samples", "0"], r"--samples: 0 must be a positive integer"),
    (IMG + ["--components", "attn,foo"], r"unknown trace component 'foo'"),
    (IMG + ["--noise", "-3"], r"--noise: -3 must be greater than 0"),
    (IMG + ["--window", "0"], r"--window: 0 must be a positive integer"),
    (IMG + ["--corruption", "blurr"], r"unknown corruption 'blurr'; did you mean blur"),
    (IMG + ["--corruption", "blur:sigma=-1"], r"sigma must be > 0"),
    (IMG + ["--corruption", "interchange"], r"needs --interchange IMAGE2"),
    (IMG + ["--box", "1,2,3"], r"--box must be x0,y0,x1,y1"),
    (IMG + ["--saliency", "relevancyy"], r"unknown saliency method 'relevancyy'"),
    (IMG + ["--object-fraction", "0"], r"--object-fraction: 0 is not a ratio in \(0, 1\]"),
    (["trace", "img.png", "--prompt", "q", "--json", "dir.json"], r"--json:.*is a directory"),
    (["trace", "img.png", "--prompt", "q", "--json", "rr.json", "--plot", "mine.png"], r"--plot:.*not written by vlinterp"),
    (["trace", "missing.png", "--prompt", "q", "--json", "rr.json"], r"IMAGE: 'missing.png' does not exist"),
    (["trace", "--dataset", "shapes", "--n", "0", "--json", "rr.json"], r"--n: 0 must be a positive integer"),
    (["trace", "--dataset", "missing.jsonl", "--json", "rr.json"], r"--dataset: dataset 'missing.jsonl': no such file or folder"),
    (["trace", "--dataset", "jsonl:missing.jsonl", "--json", "rr.json"], r"--dataset: JSON-lines file 'missing.jsonl' does not exist"),
    (["trace", "--dataset", "mine", "--json", "rr.json"], r"mine: no images"),
    (["trace", "--dataset", "binary.jsonl", "--json", "rr.json"], r"--dataset: .*'binary.jsonl' is not a text"),
    (["trace", "--dataset", "bad.jsonl", "--json", "rr.json"], r"bad.jsonl:2: not JSON"),
    (["trace", "--dataset", "shapes:test:0", "--json", "rr.json"], r"--dataset: shapes: N must be a positive integer"),
    (["trace", "--dataset", "shapes:test:4:1:presnt", "--json", "rr.json"], r"unknown item kind 'presnt'"),
    (["trace", "--dataset", "coco:afile:mine:bogus=1", "--json", "rr.json"], r"unknown option\(s\) bogus"),
    (["trace", "--dataset", "shapes", "--image-dir", "mine", "--json", "rr.json"], r"--image-dir is for datasets with image paths"),
    (["trace", "img.png", "--dataset", "shapes", "--json", "rr.json"], r"an IMAGE or --dataset, not both"),
    (["trace", "--dataset", "shapes", "--positions", "tokens", "--json", "rr.json"], r"position groups"),
    (["trace", "--json", "rr.json"], r"needs an IMAGE, or --dataset"),
    # audit
    (["audit", "--out", "afile"], r"--out:.*not a directory"),
    (["audit", "--json", "dir.json"], r"--json:.*is a directory"),
    (["audit", "--json", "table.json", "--out", "mine"], r"--out:.*not empty"),
    (["audit", "--n", "0"], r"--n: 0 must be a positive integer"),
    (["audit", "--dataset", "missing.jsonl"], r"--dataset: dataset 'missing.jsonl': no such file or folder"),
    (["audit", "--dataset", "binary.jsonl"], r"is not a text"),
    (["audit", "--dataset", "audit_bad.jsonl", "--json", "t.json"], r"audit_bad.jsonl:2: missing answer"),
    (["audit", "--plant-noise", "-1"], r"--plant-noise: -1 must be 0 or more"),
    # sae
    (["sae", "train", "--store", "missing", "--out", "s"], r"--store: 'missing' does not exist"),
    (["sae", "train", "--store", "mine", "--out", "s"], r"--store: 'mine' is not an activation store"),
    (["sae", "train", "--store", "store", "--out", "s", "--arch", "topkk"], r"--arch: invalid choice: 'topkk'"),
    (["sae", "train", "--store", "store", "--out", "mine"], r"--out:.*not empty and holds no vlinterp output"),
    (["sae", "train", "--store", "store", "--out", "s", "--image-fraction", "1.5"], r"must be in \[0, 1\] \(or -1"),
    (["sae", "train", "--store", "store", "--out", "s", "--checkpoint-dir", "afile"], r"--checkpoint-dir 'afile' exists and is not a directory"),
    (["sae", "harvest", "--site", "blocks.2.resid", "--dataset", "shapes:sae:12:0:mixd", "--out", "st"], r"unknown item kind 'mixd'"),
    (["sae", "harvest", "--site", "blocks.2.resid", "--dataset", "shapes:sae:colr", "--out", "st"],
     r"unknown shapes item kind 'colr'; did you mean colour"),
    (["sae", "harvest", "--site", "blocks.2.resid", "--dataset", "shapes", "--n", "0", "--out", "st"], r"--n: 0 must be a positive integer"),
    (["sae", "harvest", "--site", "blocks.2.resid", "--dataset", "missing.jsonl", "--out", "st"], r"'missing.jsonl': no such file"),
    (["sae", "harvest", "--site", "blocks.2.resid", "--dataset", "shapes", "--out", "st", "--keep", "content"], r"unrecognized arguments: --keep"),
    (["sae", "harvest", "--site", "blocks.2.resid", "--dataset", "shapes", "--out", "st", "--tokens", "ansewr"], r"--tokens: invalid choice"),
    (["sae", "eval", "--sae", "store", "--store", "store"], r"--sae: 'store' is not an SAE directory"),
    (["sae", "score-data", "--sae", "saedir", "--calib-store", "store", "--store", "store", "--json", "dir.json"], r"--json:.*is a directory"),
    (["sae", "score-data", "--sae", "missing", "--calib-store", "store", "--store", "store", "--json", "s.json", "--min-rel", "1.5"],
     r"(does not exist|must be in \[0, 1\))"),
    (["sae"], r"required: \{harvest,train,eval,inspect,score-data\}"),
]


@pytest.mark.parametrize("argv,match", ROWS, ids=[" ".join(r[0])[:60] for r in ROWS])
def test_bad_input(argv, match, tmp_path, capsys, monkeypatch):
    _setup(tmp_path)
    argv = ["trace"] + argv if argv[0] == "img.png" else argv
    line = assert_bad_input(argv, tmp_path, capsys, monkeypatch, match=match)
    for internal in ("prune_cmd", "sae_cmd", "protos_cmd", "zoo_cmd", "what"):
        assert internal not in line, line


COMMANDS = ("prune", "trace", "sae", "protos", "audit", "zoo")


def _parsers():
    import argparse

    from vlinterp.cli import build_parser

    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name in COMMANDS:
        p = sub.choices[name]
        inner = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        yield from ((f"{name} {k}", q) for k, q in inner[0].choices.items()) if inner else [(name, p)]


def test_every_option_has_help_and_a_metavar_or_choices():
    missing = []
    for name, p in _parsers():
        for a in p._actions:
            if a.dest == "help":
                continue
            if not (a.help or "").strip():
                missing.append(f"{name} {'/'.join(a.option_strings) or a.dest}")
    assert not missing, f"options without help: {missing}"
    usage = "\n".join(p.format_usage() for _, p in _parsers())
    for internal in ("prune_cmd", "sae_cmd", "protos_cmd", "zoo_cmd", "JSON_PATH"):
        assert internal not in usage


@pytest.mark.slow
def test_sae_train_out_keeps_the_users_files_and_refuses_a_foreign_dir(tmp_path, capsys):
    """`sae train --out` onto an earlier SAE directory replaces what vlinterp wrote there and keeps the
    user's notes; onto a directory of the user's it refuses before loading anything."""
    from vlinterp.eval.sae_data import shapes_items
    from vlinterp.sae import ActivationStore

    import vlinterp

    st = str(tmp_path / "st")
    ActivationStore.harvest(vlinterp.load("tiny:llava"), "blocks.1.resid", shapes_items("sae-cli", 6, 0, "caption"), out_dir=st,
                            batch_size=6, progress=False, tokens="content")
    out = tmp_path / "sae"
    args = ["sae", "train", "--store", st, "--out", str(out), "--d-sae", "16", "--k", "2", "--steps", "4", "--checkpoint-every", "2"]
    assert run_cli(args, capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    assert run_cli(args + ["--seed", "1"], capsys)[0] == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "cfg.json").exists()
    assert json.load(open(out / "vlinterp.json"))["seed"] == 1


@pytest.mark.slow
def test_prune_writes_plots_only_where_asked(tmp_path, capsys, monkeypatch):
    """`prune info` with no --plot/--out writes nothing in the working directory; with --out DIR the
    JSON and plot land there."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(["prune", "info", "--model", "tiny:llava", "--n", "1"], capsys)[0] == 0
    assert os.listdir(tmp_path) == []
    assert run_cli(["prune", "info", "--model", "tiny:llava", "--n", "1", "--out", "info"], capsys)[0] == 0
    assert sorted(os.listdir(tmp_path / "info")) == [".vlinterp-manifest.json", "info.json", "information.png"]
