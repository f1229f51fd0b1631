"""`vlinterp steer fit|eval|generate` on bad input: one line, exit 2, no traceback, nothing written or
deleted, and no model loaded first (tests/cli_util.py::assert_bad_input), one row per bad input."""
import json

import numpy as np
import pytest
from PIL import Image

from cli_util import assert_bad_input


def _setup(tmp_path):
    Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype("uint8")).save(tmp_path / "x.png")
    (tmp_path / "userdir").mkdir()
    (tmp_path / "userdir" / "mine.txt").write_text("mine")
    (tmp_path / "notes.json").write_text("{}")  # a JSON file the user wrote
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir.json").mkdir()
    (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x80" * 8)
    (tmp_path / "pope.jsonl").write_text(json.dumps({"image": "x.png", "text": "is there a dog?", "label": "yes"}) + "\n")
    (tmp_path / "badlabel.jsonl").write_text(json.dumps({"image": "x.png", "text": "is there a dog?", "label": "maybe"}) + "\n")
    (tmp_path / "noimage.jsonl").write_text(json.dumps({"image": "gone.png", "text": "is there a dog?", "label": "no"}) + "\n")
    (tmp_path / "caps.jsonl").write_text(json.dumps({"image": "x.png", "objects": ["dog"]}) + "\n")
    (tmp_path / "notafit").mkdir()
    (tmp_path / "notafit" / "steering.json").write_text(json.dumps({"something": "else"}))
    (tmp_path / "notafit" / "steering.safetensors").write_bytes(b"")
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "cat" / "a.png")
    from vlinterp.steering import VCD

    VCD().save(tmp_path / "vcdfit")


GEN = ["steer", "generate", "x.png", "--prompt", "describe the image.", "--model", "tiny:llava"]
EVAL = ["steer", "eval", "--model", "tiny:llava"]
FIT = ["steer", "fit", "--model", "tiny:llava"]

ROWS = [
    ("unknown method, nearest named", EVAL + ["--methods", "none,grund"], r"unknown steering method 'grund'; did you mean ground"),
    ("unknown method in fit", FIT + ["--method", "probes", "--out", "f"], r"did you mean probe"),
    ("unknown method in generate", GEN + ["--method", "vdc"], r"did you mean vcd"),
    ("empty method list", EVAL + ["--methods", ","], r"at least one steering method"),
    ("none with options", EVAL + ["--methods", "none:alpha=1"], r"takes no options"),
    ("unknown method option", EVAL + ["--methods", "ground:nosuch=1"], r"unknown option.*nosuch"),
    ("method option of the wrong type", FIT + ["--method", "meandiff:alpha=strong", "--out", "f"], r"alpha.*must be a number"),
    ("method option out of range", FIT + ["--method", "vcd:noise_step=2000", "--out", "f"], r"noise_step must be in 0..999"),
    ("--n 0", EVAL + ["--n", "0"], r"--n.*positive integer"),
    ("--n -5", EVAL + ["--n", "-5"], r"--n.*positive integer"),
    ("--captions -1", EVAL + ["--captions", "-1"], r"--captions.*0 or more"),
    ("--max-new-tokens 0", GEN + ["--method", "vcd", "--max-new-tokens", "0"], r"--max-new-tokens.*positive integer"),
    ("--json a directory", EVAL + ["--json", "adir.json"], r"--json.*is a directory"),
    ("--json a file vlinterp did not write", EVAL + ["--json", "notes.json"], r"--json.*not written by vlinterp"),
    ("--json not .json", EVAL + ["--json", "out.txt"], r"--json.*\.json"),
    ("--pope-jsonl missing", EVAL + ["--pope-jsonl", "nope.jsonl"], r"--pope-jsonl.*does not exist"),
    ("--pope-jsonl a directory", EVAL + ["--pope-jsonl", "adir"], r"--pope-jsonl.*is a directory"),
    ("--pope-jsonl binary", EVAL + ["--pope-jsonl", "binary.jsonl"], r"not a text file"),
    ("--pope-jsonl bad label", EVAL + ["--pope-jsonl", "badlabel.jsonl"], r"badlabel.jsonl:1: label must be yes or no"),
    ("--pope-jsonl missing image", EVAL + ["--pope-jsonl", "noimage.jsonl"], r"noimage.jsonl:1: image 'gone.png' not found"),
    ("--captions-jsonl without --vocab", EVAL + ["--captions-jsonl", "caps.jsonl"], r"--captions-jsonl needs --vocab"),
    ("--vocab without --captions-jsonl", EVAL + ["--vocab", "notes.json"], r"--vocab.*--captions-jsonl"),
    ("--image-dir missing", EVAL + ["--pope-jsonl", "pope.jsonl", "--image-dir", "nodir"], r"--image-dir.*does not exist"),
    ("eval --dataset unknown format", EVAL + ["--dataset", "cocoa:x.json"], r"--dataset.*unknown dataset format 'cocoa'"),
    ("eval --dataset missing file", EVAL + ["--dataset", "pope:gone.jsonl"], r"--dataset.*gone.jsonl.*does not exist"),
    ("eval --dataset bad POPE label", EVAL + ["--dataset", "pope:badlabel.jsonl"], r"badlabel.jsonl:1.*bad label"),
    ("eval --dataset POPE image missing", EVAL + ["--dataset", "pope:noimage.jsonl"], r"noimage.jsonl:1.*image file missing"),
    ("eval --dataset nothing to evaluate", EVAL + ["--dataset", "folder:imgs"], r"nothing to evaluate"),
    ("eval --dataset shapes N twice", EVAL + ["--dataset", "shapes:test:4:2", "--n", "3"], r"drop --n"),
    ("eval --image-dir for a folder", EVAL + ["--dataset", "folder:imgs", "--image-dir", "adir"], r"--image-dir is for"),
    ("--out a non-empty user directory", FIT + ["--method", "vcd", "--out", "userdir"], r"--out.*not empty"),
    ("--out an existing file", FIT + ["--method", "vcd", "--out", "notes.json"], r"--out.*not a directory"),
    ("fit without --out", FIT + ["--method", "vcd"], r"--out"),
    ("fit --dataset n 0", FIT + ["--method", "meandiff", "--dataset", "shapes:steer-probe:0", "--out", "f"], r"n must be a positive"),
    ("fit --dataset n not a number", FIT + ["--method", "meandiff", "--dataset", "shapes:steer-probe:many", "--out", "f"],
     r"must be integers"),
    ("fit --dataset neither", FIT + ["--method", "meandiff", "--dataset", "coco", "--out", "f"], r"neither shapes.*nor an existing"),
    ("fit --dataset binary", FIT + ["--method", "meandiff", "--dataset", "binary.jsonl", "--out", "f"], r"not a text file"),
    ("ground on POPE questions", FIT + ["--method", "ground", "--dataset", "pope.jsonl", "--out", "f"], r"ground needs images with object masks"),
    ("--fit missing", EVAL + ["--fit", "nofit"], r"--fit.*does not exist"),
    ("--fit not a fit", EVAL + ["--fit", "notafit"], r"not a steering fit"),
    ("--fit a user directory", GEN + ["--fit", "userdir"], r"holds no steering fit"),
    ("generate --fit and --method", GEN + ["--fit", "vcdfit", "--method", "vcd"], r"not allowed with"),
    ("generate image missing", ["steer", "generate", "gone.png", "--prompt", "hi", "--method", "vcd"], r"IMAGE.*gone.png"),
    ("generate image not an image", ["steer", "generate", "pope.jsonl", "--prompt", "hi", "--method", "vcd"], r"IMAGE"),
]


@pytest.mark.parametrize("argv,match", [(a, m) for _, a, m in ROWS], ids=[r[0] for r in ROWS])
def test_steer_bad_input(argv, match, tmp_path, capsys, monkeypatch):
    _setup(tmp_path)
    assert_bad_input(argv, tmp_path, capsys, monkeypatch, match=match)
