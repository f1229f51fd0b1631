import json
import os

import numpy as np
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
