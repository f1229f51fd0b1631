import json

import numpy as np
from PIL import Image

from vlinterp.cli import main


def test_steer_eval_and_generate_on_tiny(tmp_path, capsys):
    js = tmp_path / "t.json"
    assert main(["steer", "eval", "--model", "tiny:llava", "--methods", "none,vcd", "--n", "8", "--captions", "4", "--json", str(js)]) == 0
    table = json.loads(js.read_text())
    assert set(table) == {"none", "vcd"}
    for row in table.values():
        assert set(row) == {"random", "popular", "adversarial", "colour", "count", "chair", "fit_seconds"}
        assert 0 <= row["chair"]["chair_s"] <= 1
        assert 0 <= row["adversarial"]["false_yes"] <= 1 and 0 <= row["colour"] <= 1
    assert "adv false-yes" in capsys.readouterr().out
    img = tmp_path / "x.png"
    Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype("uint8")).save(img)
    assert main(["steer", "generate", str(img), "--prompt", "describe the image.", "--model", "tiny:llava", "--method", "vcd",
                 "--max-new-tokens", "3"]) == 0
    assert main(["steer", "eval", "--model", "tiny:llava", "--methods", "none,nosuch", "--n", "4"]) == 2
