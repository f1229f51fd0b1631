"""`vlinterp trace --knockout FROM:TO` and `--method dla|relp|parts`: results on a tiny LLaVA, a dataset
sweep, and bad input (one row each: exit 2, one line, nothing written, no model loaded)."""
import json

import numpy as np
import pytest
from PIL import Image

from cli_util import assert_bad_input, run_cli


def _img(tmp_path, seed=0, size=64):
    p = tmp_path / f"img{seed}.png"
    Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8")).save(p)
    return str(p)


Q = ["--prompt", "is there a red circle?", "--model", "tiny:llava"]


def test_knockout_cli_writes_the_flow_map(tmp_path, capsys):
    js, png = tmp_path / "ko.json", tmp_path / "ko.png"
    code, out, err = run_cli(["trace", _img(tmp_path), *Q, "--target", "yes", "--knockout", "image:last,question:last",
                              "--window", "2", "--box", "0,0,32,32", "--json", js, "--plot", png], capsys)
    assert code == 0, err
    r = json.loads(js.read_text())
    assert r["method"] == "knockout" and r["meta"]["edges"] == ["image:last", "question:last"]
    drop = np.array(r["arrays"]["drop"])
    assert drop.shape == (2, 2) and np.all(np.isfinite(drop))
    assert r["meta"]["windows"] == [[0], [0, 1]]
    assert "largest drop" in out
    with Image.open(png) as im:
        assert im.size[0] > 300


def test_dla_and_relp_cli(tmp_path, capsys):
    img = _img(tmp_path)
    js = tmp_path / "dla.json"
    code, out, err = run_cli(["trace", img, *Q, "--target", "yes", "--method", "dla", "--foil", "no", "--json", js,
                              "--plot", tmp_path / "dla.png"], capsys)
    assert code == 0, err
    a = json.loads(js.read_text())["arrays"]
    parts = np.sum(a["components"]) + a["direct"][0] + a["other"][0] + a["const"][0]
    assert abs(parts - a["total"][0]) <= 1e-4 and "logit difference" in out
    js = tmp_path / "relp.json"
    code, out, err = run_cli(["trace", img, *Q, "--target", "yes", "--method", "relp:rules=attnlrp", "--samples", "1",
                              "--components", "resid", "--json", js, "--plot", tmp_path / "relp.png"], capsys)
    assert code == 0, err
    r = json.loads(js.read_text())
    assert r["meta"]["rules"] == "attnlrp" and np.array(r["arrays"]["ie"]).shape == (1, 2, 7)
    assert (tmp_path / "relp.png").exists()


def test_parts_cli_one_image_and_a_dataset(tmp_path, capsys):
    """The whole part is tracing's attention cell at the last token (the CLI's causal run, same noise);
    over a dataset the mean is the mean of the items."""
    img = _img(tmp_path)
    js, png = tmp_path / "parts.json", tmp_path / "parts.png"
    code, out, err = run_cli(["trace", img, *Q, "--target", "yes", "--method", "parts", "--samples", "2", "--json", js,
                              "--plot", png], capsys)
    assert code == 0, err
    r = json.loads(js.read_text())
    assert r["meta"]["parts"] == ["image", "text", "whole"] and np.array(r["arrays"]["rr"]).shape == (3, 2)
    assert "last token's image keys' part" in out and "largest RR" in out and Image.open(png).size[0] > 300
    ref = tmp_path / "causal.json"
    code, out, err = run_cli(["trace", img, *Q, "--target", "yes", "--components", "attn", "--samples", "2", "--json", ref], capsys)
    assert code == 0, err
    c = json.loads(ref.read_text())
    last = c["meta"]["positions"].index("last")
    assert np.abs(np.array(r["arrays"]["p_patch"])[2] - np.array(c["arrays"]["p_patch"])[0, :, last]).max() <= 1e-5
    ds = tmp_path / "items.jsonl"
    ds.write_text("\n".join(json.dumps({"image": _img(tmp_path, k), "prompt": "is there a red circle?", "target": "yes"})
                            for k in (1, 2)))
    js = tmp_path / "flow.json"
    code, out, err = run_cli(["trace", "--dataset", ds, "--model", "tiny:llava", "--method", "parts", "--samples", "1",
                              "--json", js], capsys)
    assert code == 0, err
    d = json.loads(js.read_text())
    assert d["meta"]["n"] == 2 and d["meta"]["parts"] == ["image", "text", "whole"]
    assert np.allclose(d["mean"]["rr"], np.mean([it["rr"] for it in d["items"]], 0))


def test_knockout_cli_over_a_dataset(tmp_path, capsys):
    """The mean flow map is the mean of the items' maps, each equal to the item run alone."""
    img0, img1 = _img(tmp_path, 0), _img(tmp_path, 1)
    ds = tmp_path / "items.jsonl"
    ds.write_text("\n".join(json.dumps({"image": p, "prompt": "is there a red circle?", "target": "yes", "box": [0, 0, 32, 32]})
                            for p in (img0, img1)))
    js = tmp_path / "flow.json"
    code, out, err = run_cli(["trace", "--dataset", ds, "--model", "tiny:llava", "--knockout", "image:last,object:last",
                              "--json", js, "--plot", tmp_path / "flow.png"], capsys)
    assert code == 0, err
    r = json.loads(js.read_text())
    assert r["meta"]["n"] == 2 and r["meta"]["edges"] == ["image:last", "object:last"]
    assert np.allclose(r["mean"]["drop"], np.mean([it["drop"] for it in r["items"]], 0))
    one = tmp_path / "one.json"
    assert run_cli(["trace", img1, *Q, "--target", "yes", "--knockout", "image:last,object:last", "--box", "0,0,32,32",
                    "--json", one], capsys)[0] == 0
    assert np.allclose(json.loads(one.read_text())["arrays"]["drop"], r["items"][1]["drop"])


ROWS = [
    (["--knockout", "image:lastt"], r"unknown knockout group 'lastt'"),
    (["--knockout", "image-last"], r"not FROM:TO"),
    (["--method", "rome"], r"unknown tracing method 'rome'"),
    (["--method", "relp:rules=zz"], r"relp rules must be one of lrp, attnlrp, none"),
    (["--method", "knockout:window=0"], r"window must be >= 1"),
    (["--method", "dla", "--knockout", "image:last"], r"--knockout is the knockout method"),
    (["--foil", "no"], r"--foil is for --method dla"),
    (["--method", "relp", "--foil", "no"], r"--foil is for --method dla"),
    (["--knockout", "image:last", "--stream", "vision"], r"runs on the language model"),
    (["--method", "dla", "--interchange", "img.png"], r"--interchange IMAGE2 is for a corrupting method"),
    (["--method", "parts:samples=0"], r"samples must be >= 1"),
    (["--method", "parts", "--corruption", "interchange"], r"--corruption interchange needs --interchange IMAGE2"),
]


@pytest.mark.parametrize("argv,match", ROWS, ids=[" ".join(r[0])[:50] for r in ROWS])
def test_bad_input(argv, match, tmp_path, capsys, monkeypatch):
    Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype("uint8")).save(tmp_path / "img.png")
    assert_bad_input(["trace", "img.png", "--prompt", "q", "--json", "out.json", *argv], tmp_path, capsys, monkeypatch,
                     match=match)


def test_bad_dataset_input(tmp_path, capsys, monkeypatch):
    assert_bad_input(["trace", "--dataset", "shapes", "--method", "dla", "--foil", "no", "--json", "o.json"],
                     tmp_path, capsys, monkeypatch, match=r"--foil is for one IMAGE")
