"""The command line on the tiled / soft-token VLM families: ``explain`` runs end to end on saved tiny
InternVL and Gemma 3 directories (relevancy on the language model, overlay + report), and ``info``
shows a family's layout with the crops of the vision stream."""
import json

import numpy as np
import pytest
from PIL import Image

from vlinterp.cli import main


def _scene(path, h=48, w=80):
    a = np.full((h, w, 3), 30, np.uint8)
    a[10:30, 40:70] = (220, 40, 40)
    Image.fromarray(a).save(path)
    return path


@pytest.mark.parametrize("family", ["internvl", "gemma3"])
def test_explain_on_a_saved_tiny_directory(family, tmp_path):
    from vlinterp.adapters.vlm_tiny import save_tiny

    d = save_tiny(family, str(tmp_path / family))
    img = _scene(tmp_path / "scene.png")
    out = tmp_path / "out"
    assert main(["explain", str(img), "--model", d, "--prompt", "what color is the square?", "--out", str(out),
                 "--max-new-tokens", "3"]) == 0
    assert (out / "overlay.png").is_file() and (out / "report.html").is_file()
    res = json.loads((out / "result.json").read_text())
    assert res["family"] == family and res["method"] == "relevancy"
    assert res["layout"]["image_size"] == [48, 80]
    grids, boxes = res["layout"]["grid"], [t["box"] for t in res["layout"]["tiles"]]
    assert len(res["scores"]) == len(res["targets"]) >= 1
    assert len(res["scores"][0]) == sum(r * c for r, c in grids)  # one score per image cell, every tile
    assert np.isfinite(np.asarray(res["scores"])).all()
    if family == "internvl":  # 80x48 -> 3x2 tiles of 64 px + the thumbnail, 4x4 cells each
        assert len(grids) == 7 and boxes[-1] == [0.0, 0.0, 80.0, 48.0] and boxes[0] == [0.0, 0.0, 80 / 3, 24.0]
    else:  # 16 soft tokens (4x4) for the whole image
        assert grids == [[4, 4]] and boxes == [[0.0, 0.0, 80.0, 48.0]]


def test_info_shows_crops(tmp_path, capsys):
    p = tmp_path / "info.json"
    assert main(["info", "tiny:smolvlm", "--json", str(p)]) == 0
    info = json.loads(p.read_text())
    assert info["family"] == "smolvlm" and info["class"] == "SmolVLMForConditionalGeneration"
    vision = info["layouts"]["vision"]
    assert vision["shape"][0] == len(vision["images"]) > 1
    assert {img["source"] for img in vision["images"]} == {0}
