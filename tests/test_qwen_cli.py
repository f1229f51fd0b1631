"""The command line on Qwen models: ``info`` shows the layout, ``explain`` runs end to end on a saved
tiny Qwen2.5-VL directory (relevancy on the language model, overlay + report)."""
import json

import numpy as np
from PIL import Image

from vlinterp.cli import main


def test_info_qwen_json(tmp_path, capsys):
    p = tmp_path / "info.json"
    assert main(["info", "tiny:qwen2.5-vl", "--json", str(p)]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-vl" in out and "layout[lm]" in out
    info = json.loads(p.read_text())
    assert info["family"] == "qwen2.5-vl" and info["class"] == "Qwen2_5_VLForConditionalGeneration"
    for s in ("vision.embed", "vision.blocks.1.attn", "projector", "embed", "inputs_embeds", "blocks.1.resid", "norm", "logits"):
        assert s in info["sites"]
    lm = info["layouts"]["lm"]
    (rows, cols), = lm["grids"][0]
    assert rows * cols == lm["images"][0]["num_positions"] == lm["counts"][0]["image"] == 16  # 128x128 -> 64x64 px -> 4x4
    assert info["layouts"]["vision"]["shape"] == [1, 64] and info["layouts"]["projector"]["shape"] == [1, 16]


def test_explain_on_a_saved_tiny_qwen(tmp_path, capsys):
    from vlinterp.adapters.qwen_tiny import save_tiny

    d = save_tiny("qwen2.5-vl", str(tmp_path / "qwen"))
    img = tmp_path / "scene.png"
    a = np.full((48, 80, 3), 30, np.uint8)
    a[10:30, 40:70] = (220, 40, 40)
    Image.fromarray(a).save(img)
    out = tmp_path / "out"
    assert main(["explain", str(img), "--model", d, "--prompt", "what color is the square?", "--out", str(out),
                 "--max-new-tokens", "3"]) == 0
    assert (out / "overlay.png").is_file() and (out / "report.html").is_file()
    res = json.loads((out / "result.json").read_text())
    assert res["family"] == "qwen2.5-vl" and res["method"] == "relevancy"
    rows, cols = res["layout"]["grid"][0]
    assert res["layout"]["image_size"] == [48, 80] and rows < cols
    assert len(res["scores"]) == len(res["targets"]) >= 1 and len(res["scores"][0]) == rows * cols
    assert np.isfinite(np.asarray(res["scores"])).all()
