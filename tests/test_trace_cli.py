import json
import os

import numpy as np
import pytest
from PIL import Image

from vlinterp.cli import main


def _img(tmp_path, seed=0, size=64):
    p = tmp_path / f"img{seed}.png"
    Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8")).save(p)
    return str(p)


def test_trace_cli_llava_writes_table_and_plot(tmp_path, capsys):
    js, png = tmp_path / "rr.json", tmp_path / "rr.png"
    rc = main(["trace", _img(tmp_path), "--prompt", "is there a red circle?", "--target", "yes", "--model", "tiny:llava",
               "--samples", "1", "--box", "0,0,32,32", "--json", str(js), "--plot", str(png)])
    assert rc == 0
    out = json.loads(js.read_text())
    rr = np.array(out["arrays"]["rr"])
    assert rr.shape == (3, 2, 7) and np.all(np.isfinite(rr))
    assert out["meta"]["components"] == ["attn", "mlp", "resid"]
    assert out["meta"]["object_words"] == "red circle" and len(out["meta"]["group_positions"]["text-object"]) == 2
    assert out["meta"]["object_mask_source"] == "box"
    with Image.open(png) as im:
        assert im.size[0] > 200 and im.size[1] > 100
    assert "best RR" in capsys.readouterr().out


def test_trace_cli_vit_tokens_and_saliency_object(tmp_path):
    js = tmp_path / "vit.json"
    rc = main(["trace", _img(tmp_path, 1), "--model", "tiny:vit", "--components", "resid", "--samples", "1",
               "--corruption", "blur", "--json", str(js)])
    assert rc == 0
    out = json.loads(js.read_text())
    assert out["meta"]["positions"] == ["early-visual", "object-visual", "late-visual", "cls"]
    assert out["meta"]["object_mask_source"] == "saliency:relevancy"
    assert out["meta"]["corruption"]["kind"] == "blur"


def test_trace_cli_errors_write_nothing(tmp_path, capsys):
    js = tmp_path / "bad.json"
    img = _img(tmp_path)
    assert main(["trace", img, "--model", "tiny:llava", "--json", str(js)]) == 2  # no prompt
    assert main(["trace", img, "--prompt", "is there a red circle?", "--model", "tiny:llava", "--box", "0,0,999,10",
                 "--json", str(js)]) == 2  # box outside the image
    assert main(["trace", img, "--prompt", "is there a red circle?", "--model", "tiny:llava", "--target", "notaword_zz",
                 "--json", str(js)]) == 2
    err = capsys.readouterr().err
    assert "outside" in err and "vocabulary" in err
    assert not os.path.exists(js)


@pytest.mark.slow
def test_trace_cli_over_a_jsonl_dataset(tmp_path, capsys):
    """Per-item tables equal tracing each item alone (item i: seed + i); the mean table is the RR of
    the means; a bad item is named."""
    from vlinterp.eval.trace import rr_of_means

    imgs = [_img(tmp_path, k) for k in range(3)]
    rows = [{"id": "a", "image": os.path.basename(imgs[0]), "prompt": "is there a red circle?", "target": "yes", "box": [0, 0, 32, 32]},
            {"id": "b", "image": os.path.basename(imgs[1]), "prompt": "is there a blue square?", "target": "no"},
            {"id": "c", "image": os.path.basename(imgs[2]), "prompt": "is there a green cross?", "box": "8,8,40,40"}]
    ds = tmp_path / "items.jsonl"
    ds.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    js, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    common = ["--model", "tiny:llava", "--components", "resid,mlp", "--samples", "2", "--noise-seed", "5"]
    assert main(["trace", "--dataset", str(ds), "--json", str(js), "--plot", str(png)] + common) == 0
    out = json.loads(js.read_text())
    assert [e["id"] for e in out["items"]] == ["a", "b", "c"] and out["meta"]["n"] == 3
    assert out["items"][0]["object_mask_source"] == "box" and out["items"][1]["object_mask_source"].startswith("saliency")
    assert np.allclose(out["rr_of_means"], rr_of_means(out["items"]))
    assert "RR of the means" in capsys.readouterr().out and png.exists()
    one = tmp_path / "one.json"
    assert main(["trace", imgs[1], "--prompt", rows[1]["prompt"], "--target", "no", "--json", str(one)]
                + common[:-1] + ["6"]) == 0  # item 1 runs with noise seed 5 + 1
    # the single-image file stores float32
    assert np.allclose(json.loads(one.read_text())["arrays"]["p_patch"], out["items"][1]["p_patch"], rtol=1e-6, atol=0)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "zz", "image": os.path.basename(imgs[0]), "prompt": "is there a red circle?",
                               "target": "notaword_zz"}) + "\n")
    assert main(["trace", "--dataset", str(bad), "--json", str(tmp_path / "x.json")] + common) == 2
    assert main(["trace", imgs[0], "--dataset", str(ds), "--json", str(tmp_path / "x.json")] + common) == 2
    assert main(["trace", "--dataset", str(ds), "--positions", "tokens", "--json", str(tmp_path / "x.json")] + common) == 2
    err = capsys.readouterr().err
    assert "item zz" in err and "not both" in err and "position groups" in err
    assert not (tmp_path / "x.json").exists()
