"""The command line: info on every family, ask, errors as exit code 2 with our message."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vlinterp.cli import main


def test_info_llava_json(tmp_path, capsys):
    assert main(["info", "tiny:llava", "--json", str(tmp_path / "info.json")]) == 0
    assert "hook sites:" in capsys.readouterr().out
    info = json.loads((tmp_path / "info.json").read_text())
    sites = info["sites"]
    for s in ("blocks.0.attn", "blocks.1.mlp", "blocks.1.resid", "vision.blocks.0.attn", "vision.blocks.1.resid", "projector"):
        assert s in sites
    lm = info["layouts"]["lm"]
    (rows, cols), = lm["grids"][0]
    assert rows * cols == lm["images"][0]["num_positions"] == lm["counts"][0]["image"] == 16


@pytest.mark.parametrize("model", ["tiny:llava-next", "tiny:clip", "tiny:vit", "tiny:diffusion"])
def test_info_every_family(model, capsys):
    assert main(["info", model]) == 0
    out = capsys.readouterr().out
    assert "hook sites:" in out and "layout[" in out


def test_ask_json(tmp_path, capsys):
    p = tmp_path / "scene.png"
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(p)
    assert main(["ask", str(p), "--prompt", "is there a red circle?", "--model", "tiny:llava", "--json", "--max-new-tokens", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["tokens"]) == len(res["probs"]) <= 3
    assert all(0 <= q <= 1 for q in res["probs"])


def test_errors_are_named_not_tracebacks(tmp_path, capsys):
    assert main(["info", "no-such-model"]) == 2
    assert "neither a local path nor a known name" in capsys.readouterr().err
    bad = tmp_path / "x.png"
    bad.write_bytes(b"garbage")
    assert main(["ask", str(bad), "--prompt", "is there a red circle?", "--model", "tiny:llava"]) == 2
    err = capsys.readouterr().err
    assert "cannot read as an image" in err and "x.png" in err and "Traceback" not in err


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "vlinterp", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "info" in r.stdout and "zoo" in r.stdout
