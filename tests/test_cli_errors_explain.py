"""Bad input to `explain`, `bench saliency`, `ask` and `info`: exit 2, one line, nothing written or
deleted, no model loaded (one row per bad input); `--out` keeps the user's files."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from cli_util import assert_bad_input, run_cli


def _files(root):
    """Inputs the rows refer to, made in the test's working directory."""
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "img.png")
    Image.new("RGB", (1, 1)).save(root / "one.png")
    (root / "binary.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (root / "afile").write_text("a user's file")
    (root / "adir.json").mkdir()
    (root / "userdir").mkdir()
    (root / "userdir" / "notes.txt").write_text("my notes")
    (root / "mine.npy").write_bytes(b"not vlinterp's")
    (root / "mine.json").write_text("{}")


EXPLAIN = ["explain", "img.png", "--prompt", "what color is the circle?", "--model", "tiny:llava"]
OUT = ["--out", "new"]
ROWS = {
    # explain
    "explain max-new-tokens 0": (EXPLAIN + OUT + ["--max-new-tokens", "0"], "max-new-tokens.*positive"),
    "explain alpha 2": (EXPLAIN + OUT + ["--alpha", "2"], "alpha.*ratio"),
    "explain unknown colormap": (EXPLAIN + OUT + ["--colormap", "rainbow"], "colormap.*invalid choice"),
    "explain missing image": (["explain", "nope.png", "--prompt", "q", "--model", "tiny:llava"] + OUT, "nope.png.*does not exist"),
    "explain binary image": (["explain", "binary.png", "--prompt", "q", "--model", "tiny:llava"] + OUT, "binary.png.*cannot read"),
    "explain 1x1 image": (["explain", "one.png", "--prompt", "q", "--model", "tiny:llava"] + OUT, "1x1 is too small"),
    "explain layers abc": (EXPLAIN + OUT + ["--layers", "abc"], "layers.*'abc' is not an integer"),
    "explain out is a file": (EXPLAIN + ["--out", "afile"], "afile.*not a directory"),
    "explain out holds user files": (EXPLAIN + ["--out", "userdir"], "userdir.*not empty"),
    "explain out is the cwd": (EXPLAIN + ["--out", "."], "not empty and holds no vlinterp output"),
    "explain no --out": (EXPLAIN, "--out"),
    "explain unknown method": (EXPLAIN + OUT + ["--method", "relevence"], "unknown saliency method 'relevence'; did you mean relevancy"),
    "explain bad method option": (EXPLAIN + OUT + ["--method", "relevancy:score=softmax"], "score must be one of"),
    "explain unknown method option": (EXPLAIN + OUT + ["--method", "rollout:layer=1"], "unknown option.*layer; options:.*layers"),
    "explain bad ig space": (EXPLAIN + OUT + ["--method", "ig:space=latent"], "option 'space' must be auto, pixels or tokens"),
    "explain unknown compare": (EXPLAIN + OUT + ["--compare", "attention,rolout"], "unknown saliency method 'rolout'; did you mean rollout"),
    "explain heatmap over a user file": (EXPLAIN + OUT + ["--save-heatmap", "mine.npy"], "mine.npy.*not written by vlinterp"),
    "explain heatmap not npy": (EXPLAIN + OUT + ["--save-heatmap", "heat.png"], r"should end in \.npy"),
    "explain steps 0": (EXPLAIN + OUT + ["--steps", "0"], "steps.*positive"),
    # bench saliency
    "bench unknown method": (["bench", "saliency", "--model", "tiny:vit", "--methods", "relevence"],
                             "unknown saliency method 'relevence'; did you mean relevancy"),
    "bench n 0": (["bench", "saliency", "--model", "tiny:vit", "--n", "0"], "--n.*positive"),
    "bench n -5": (["bench", "saliency", "--model", "tiny:vit", "--n", "-5"], "--n.*positive"),
    "bench steps -1": (["bench", "saliency", "--model", "tiny:vit", "--steps", "-1"], "steps.*0 or more"),
    "bench steps 5000": (["bench", "saliency", "--model", "tiny:vit", "--steps", "5000"], r"steps must be in 0\.\.1000"),
    "bench json is a directory": (["bench", "saliency", "--model", "tiny:vit", "--json", "adir.json"], "adir.*directory"),
    "bench json over a user file": (["bench", "saliency", "--model", "tiny:vit", "--json", "mine.json"], "not written by vlinterp"),
    "bench workers 0": (["bench", "saliency", "--model", "tiny:vit", "--workers", "0"], "workers.*positive"),
    "bench guidance 0": (["bench", "saliency", "--model", "tiny:diffusion", "--guidance", "0"], "guidance.*greater than 0"),
    "bench no model": (["bench", "saliency"], "--model"),
    # ask
    "ask max-new-tokens 0": (["ask", "img.png", "--prompt", "q", "--model", "tiny:llava", "--max-new-tokens", "0"], "positive"),
    "ask missing image": (["ask", "nope.png", "--prompt", "q", "--model", "tiny:llava"], "nope.png.*does not exist"),
    "ask binary image": (["ask", "binary.png", "--prompt", "q", "--model", "tiny:llava"], "cannot read"),
    "ask 1x1 image": (["ask", "one.png", "--prompt", "q", "--model", "tiny:llava"], "too small"),
    "ask unknown pruner": (["ask", "img.png", "--prompt", "q", "--model", "tiny:llava", "--prune", "hybird:0.25"], "unknown pruning method"),
    "ask bad keep": (["ask", "img.png", "--prompt", "q", "--model", "tiny:llava", "--prune", "hybrid:2"], r"keep ratio must be in \[0, 1\]"),
    "ask bad pruner option": (["ask", "img.png", "--prompt", "q", "--model", "tiny:llava", "--prune", "fastv:0.5:bogus=1"], "bogus"),
    "ask json is a directory": (["ask", "img.png", "--prompt", "q", "--model", "tiny:llava", "--json", "adir.json"], "adir.*directory"),
    "ask json not json": (["ask", "img.png", "--prompt", "q", "--model", "tiny:llava", "--json", "out.txt"], r"should end in \.json"),
    "ask format yaml": (["ask", "img.png", "--prompt", "q", "--model", "tiny:llava", "--format", "yaml"], "invalid choice"),
    # info
    "info json is a directory": (["info", "tiny:llava", "--json", "adir.json"], "adir.*directory"),
    "info json over a user file": (["info", "tiny:llava", "--json", "mine.json"], "not written by vlinterp"),
    "info format yaml": (["info", "tiny:llava", "--format", "yaml"], "invalid choice"),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_bad_input(row, tmp_path, capsys, monkeypatch):
    argv, match = ROWS[row]
    _files(tmp_path)
    assert_bad_input(argv, tmp_path, capsys, monkeypatch, match=match)




def test_out_keeps_user_files_and_reruns_into_its_own_output(tmp_path, capsys, monkeypatch):
    """A directory of the user's is refused (and kept); an earlier explain output takes a new run,
    and a file the user added to it survives the re-run; files the old run wrote and the new one
    did not are removed."""
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["explain", "img.png", "--prompt", "what color is the circle?", "--model", "tiny:llava", "--max-new-tokens", "2",
            "--method", "attention"]
    code, _, err = run_cli(argv + ["--out", "userdir"], capsys)
    assert code == 2 and "not empty" in err and (tmp_path / "userdir" / "notes.txt").read_text() == "my notes"
    assert sorted(os.listdir(tmp_path / "userdir")) == ["notes.txt"]

    code, _, err = run_cli(argv + ["--out", "exp", "--save-heatmap", "exp/heat.npy"], capsys)
    assert code == 0, err
    (tmp_path / "exp" / "notes.txt").write_text("added by the user")
    first = json.loads((tmp_path / "exp" / "result.json").read_text())
    code, _, err = run_cli(argv + ["--out", "exp", "--compare", "rollout"], capsys)
    assert code == 0, err
    second = json.loads((tmp_path / "exp" / "result.json").read_text())
    assert (tmp_path / "exp" / "notes.txt").read_text() == "added by the user"
    assert [v["name"] for v in first["views"]] == ["attention"] and [v["name"] for v in second["views"]] == ["attention", "rollout"]
    assert not (tmp_path / "exp" / "heat.npy").exists()  # written by the first run only: replaced by the second output
    assert (tmp_path / "exp" / "report.html").exists() and len(os.listdir(tmp_path / "exp" / "tokens")) == len(second["targets"])
    # a user's file where the output needs one stops the run before anything is replaced
    (tmp_path / "exp" / "overlay.png").write_bytes(b"the user's own overlay")
    code, _, err = run_cli(argv + ["--out", "exp"], capsys)
    assert code == 2 and "overlay.png" in err and "not written by vlinterp" in err
    assert (tmp_path / "exp" / "overlay.png").read_bytes() == b"the user's own overlay"
    assert json.loads((tmp_path / "exp" / "result.json").read_text()) == second
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_bench_accepts_baselines(tmp_path, capsys):
    """`random` and `centre` (rows of the table) are accepted as --methods; alone they still run."""
    j = tmp_path / "b.json"
    code, out, err = run_cli(["bench", "saliency", "--model", "tiny:vit", "--methods", "random", "--n", "1", "--steps", "2",
                              "--json", str(j)], capsys)
    assert code == 0, err
    res = json.loads(j.read_text())
    assert set(res["rows"]) == {"random", "centre"} and res["rows"]["random"]["n"] == res["items"] > 0
    code, out, err = run_cli(["bench", "saliency", "--model", "tiny:vit", "--methods", "attention,centre", "--n", "1", "--steps", "0"], capsys)
    assert code == 0 and "attention" in out and "centre" in out and "random" in out, err


def test_explain_warns_about_a_cropped_long_image(tmp_path, capsys):
    """A 2000x100 image: the processor centre-crops it; explain says so in one line and still works."""
    a = np.zeros((100, 2000, 3), np.uint8)
    a[:, 950:1050] = (220, 40, 40)
    Image.fromarray(a).save(tmp_path / "wide.png")
    code, out, err = run_cli(["explain", str(tmp_path / "wide.png"), "--prompt", "what color is it?", "--model", "tiny:llava",
                              "--method", "attention", "--max-new-tokens", "1", "--out", str(tmp_path / "w"),
                              "--save-heatmap", str(tmp_path / "w.npy")], capsys)
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "warning:" in ln]
    assert len(lines) == 1 and "wide.png" in lines[0] and "sees only 100x100 pixels" in lines[0], err
    assert np.load(tmp_path / "w.npy").shape == (100, 2000)
